"""Pre-distortion's pair-search kernels against the vectorised numpy search they replaced, bit for bit."""

import numpy as np
import pytest

from crossbar_ctl.engine._predistort import refine_pairs, subset_sums


def numpy_subset_sums(values, usable):
    """The matrix-product version the kernel replaced."""
    n = values.shape[1]
    bits = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    sums = np.where(usable, values, 0.0) @ bits.T
    bad = (~usable).astype(np.float64) @ bits.T > 0
    return np.where(bad, np.nan, sums)


def numpy_refine_pairs(target_s, plus, minus, *, locality, room=None):
    """The vectorised search the kernel replaced (one flat searchsorted over every cell)."""
    cells, size = plus["sums"].shape

    def side(s):
        out = s["t0"][:, None] + s["slope"][:, None] * (s["sums"] - s["g0"][:, None])
        return out, locality * np.abs(s["sums"] - s["g0"][:, None])

    x, move_x = side(plus)
    y, move_y = side(minus)
    count = np.zeros(size, dtype=np.int64)
    if room is not None:
        count = ((np.arange(size)[:, None] >> np.arange(size.bit_length() - 1)) & 1).sum(axis=1)
    span = float(np.nanmax(np.abs(np.concatenate([x, y], axis=1)))) + float(np.max(np.abs(target_s)))
    step = 4.0 * span + 1.0
    classes = int(count.max()) + 1
    offset = step * classes * np.arange(cells)[:, None]
    key = np.where(np.isnan(y), 2.0 * span, y) + step * count
    order = np.argsort(key, axis=1)
    flat = (np.take_along_axis(key, order, axis=1) + offset).ravel()
    want = x - target_s[:, None]
    query = np.where(np.isnan(want), 0.0, want)
    plus_order = np.argsort(query + step * count, axis=1)
    query, want, move_x = (np.take_along_axis(a, plus_order, axis=1) for a in (query, want, move_x))
    query += offset
    count_x = count[plus_order]
    best_score = np.full(cells, np.inf)
    best_a = np.zeros(cells, dtype=np.int64)
    best_b = np.zeros(cells, dtype=np.int64)
    rows = np.arange(cells)[:, None]
    idx = np.arange(cells)
    for c in range(classes):
        most = size if room is None else int(np.sum(count <= room.max() - c))
        if most == 0:
            break
        pos = np.searchsorted(flat, (query[:, :most] + step * c).ravel()).reshape(cells, most) - rows * size
        for shift in (-1, 0):
            b = order[rows, np.clip(pos + shift, 0, size - 1)]
            score = np.abs(want[:, :most] - y[rows, b]) + move_x[:, :most] + move_y[rows, b]
            bad = np.isnan(score) | (count[b] != c)
            if room is not None:
                bad |= count_x[:, :most] > room[:, None] - c
            score = np.where(bad, np.inf, score)
            a = np.argmin(score, axis=1)
            s = score[idx, a]
            better = s < best_score
            best_score = np.where(better, s, best_score)
            best_a = np.where(better, plus_order[idx, a], best_a)
            best_b = np.where(better, b[idx, a], best_b)
    predicted = np.where(np.isfinite(best_score), x[idx, best_a] - y[idx, best_b], np.nan)
    return best_a, best_b, predicted


@pytest.mark.parametrize("n", [1, 3, 8, 12])
def test_subset_sums_equal_the_matrix_product(n):
    rng = np.random.default_rng(n)
    values = rng.lognormal(-9, 0.3, (300, n))
    usable = rng.random((300, n)) > 0.15
    np.testing.assert_array_equal(subset_sums(values, usable), numpy_subset_sums(values, usable))


def _sides(rng, cells, n, scale):
    """Two sides as pre-distortion builds them: siemens-sized sums, some subsets not allowed."""
    return [{"sums": subset_sums(rng.lognormal(np.log(scale), 0.3, (cells, n)), rng.random((cells, n)) > 0.1),
             "g0": rng.uniform(2, 4, cells) * scale, "t0": rng.uniform(1, 3, cells) * scale,
             "slope": rng.uniform(0.8, 1, cells)} for _ in range(2)]


@pytest.mark.parametrize("capped", [False, True])
@pytest.mark.parametrize("locality", [0.0, 0.001, 0.05])
def test_pair_search_equals_the_vectorised_search(capped, locality):
    """Thousands of cells (the flat search's offsets reach ~cells x step, where rounding shows)."""
    rng = np.random.default_rng(7)
    cells, n, scale = 2048, 6, 1e-4
    plus, minus = _sides(rng, cells, n, scale)
    plus["sums"][5] = np.nan  # a cell with no allowed plus subset
    target = rng.uniform(-2, 2, cells) * scale
    room = rng.integers(0, 2 * n + 1, cells) if capped else None
    got = refine_pairs(target, plus, minus, locality=locality, room=room)
    want = numpy_refine_pairs(target, plus, minus, locality=locality, room=room)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert np.isnan(got[2][5])


def test_pair_search_sorts_tables_it_cannot_merge():
    """Sums that are no subset table, and a falling slope, take the sorting path: same result."""
    rng = np.random.default_rng(8)
    cells, n, scale = 500, 5, 1e-4
    plus, minus = _sides(rng, cells, n, scale)
    plus["sums"] = rng.permuted(plus["sums"], axis=1)
    minus["slope"] = -minus["slope"]
    target = rng.uniform(-2, 2, cells) * scale
    for room in (None, rng.integers(0, 2 * n + 1, cells)):
        got = refine_pairs(target, plus, minus, locality=0.001, room=room)
        want = numpy_refine_pairs(target, plus, minus, locality=0.001, room=room)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
