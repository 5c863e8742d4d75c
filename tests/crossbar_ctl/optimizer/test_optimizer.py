"""The subset-sum optimizer against a brute-force oracle, its reduction path and its validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar_ctl.optimizer._solver import (
    MAX_BRANCHES,
    MAX_EXACT_BRANCHES,
    SubsetSumStatus,
    solve_subset_sum,
)
from crossbar_ctl.core.errors import OptimizerError
from tests.crossbar_ctl.optimizer.naive import brute_force

POOLS = ["unsigned", "signed", "negative", "duplicates", "zeros"]


def random_pool(rng: np.random.Generator, kind: str, cells: int, m: int) -> np.ndarray:
    if kind == "unsigned":
        return rng.uniform(0.5, 1.5, (cells, m))
    if kind == "signed":
        return rng.uniform(0.5, 1.5, (cells, m)) * rng.choice([-1.0, 1.0], (cells, m))
    if kind == "negative":
        return -rng.lognormal(0.0, 0.3, (cells, m))
    if kind == "duplicates":
        return rng.choice([0.25, 0.5, 1.0, -0.75], (cells, m))
    return np.where(rng.random((cells, m)) < 0.3, 0.0, rng.uniform(-1.0, 1.0, (cells, m)))


def random_targets(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """Targets spread over, and a little beyond, each pool's reachable range."""
    low = np.minimum(values, 0).sum(axis=1)
    high = np.maximum(values, 0).sum(axis=1)
    span = high - low + 1.0
    return rng.uniform(low - 0.2 * span, high + 0.2 * span)


def check_cell(result, c, values, target, *, sigma, usable, cap) -> None:
    mask = result.mask[c]
    assert not np.any(mask & ~usable), "closed an unusable branch"
    if cap is not None:
        assert mask.sum() <= cap
    assert result.achieved_s[c] == pytest.approx(values[mask].sum(), abs=1e-12)
    assert result.sigma_s[c] == pytest.approx(np.sqrt(np.sum(sigma[mask] ** 2)), abs=1e-12)
    low = values[usable & (values < 0)]
    high = values[usable & (values > 0)]
    if cap is not None:
        low, high = np.sort(low)[:cap], np.sort(high)[::-1][:cap]
    outside = target < low.sum() - 1e-9 or target > high.sum() + 1e-9
    inside = low.sum() + 1e-9 < target < high.sum() - 1e-9
    if outside:
        assert result.status[c] == SubsetSumStatus.OUT_OF_RANGE
    elif inside:
        assert result.status[c] == SubsetSumStatus.OPTIMAL


@pytest.mark.parametrize("kind", POOLS)
def test_matches_brute_force_on_random_pools(kind):
    """Same optimal error as enumeration, on 720 instances per pool kind with m <= 18."""
    rng = np.random.default_rng(1234 + POOLS.index(kind))
    checked = 0
    for m in range(1, 19):
        cells = 60 if m <= 14 else 20
        values = random_pool(rng, kind, cells, m)
        targets = random_targets(rng, values)
        sigma = rng.uniform(0.0, 0.05, (cells, m))
        usable = rng.random((cells, m)) > 0.15
        caps = np.where(rng.random(cells) < 0.3, rng.integers(0, m + 1, cells), m + 1)
        result = solve_subset_sum(values, targets, sigma_s=sigma, usable=usable, max_closed=caps)
        for c in range(cells):
            cap = int(caps[c]) if caps[c] <= m else None
            best, _, _ = brute_force(values[c], targets[c], sigma=sigma[c], usable=usable[c], max_closed=cap)
            scale = np.abs(values[c]).sum() + abs(targets[c])
            assert abs(result.error_s[c]) == pytest.approx(best, abs=1e-12 * scale), (m, c)
            check_cell(result, c, values[c], targets[c], sigma=sigma[c], usable=usable[c], cap=cap)
            checked += 1
    assert checked == 60 * 14 + 20 * 4


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_tie_breaks_match_brute_force_exactly(tolerance):
    """Integer pools make every sum exact: error, variance and closed count all match."""
    rng = np.random.default_rng(99 + tolerance)
    for m in range(1, 15):
        cells = 40
        values = rng.integers(-6, 7, (cells, m)).astype(float)
        sigma = rng.integers(0, 3, (cells, m)).astype(float)
        targets = rng.integers(-30, 31, cells).astype(float)
        usable = rng.random((cells, m)) > 0.1
        caps = np.where(rng.random(cells) < 0.3, rng.integers(0, m + 1, cells), m + 1)
        result = solve_subset_sum(values, targets, sigma_s=sigma, usable=usable, max_closed=caps,
                                  tolerance_s=tolerance)
        for c in range(cells):
            cap = int(caps[c]) if caps[c] <= m else None
            expected = brute_force(values[c], targets[c], sigma=sigma[c], usable=usable[c],
                                   max_closed=cap, tolerance=tolerance)
            got = (abs(result.error_s[c]), result.sigma_s[c] ** 2, int(result.mask[c].sum()))
            assert got == pytest.approx(expected, abs=1e-9), (m, c, values[c], targets[c])


def test_prefers_low_uncertainty_then_fewer_switches():
    values = np.array([1.0, 1.0, 0.5, 0.5, 2.0])
    sigma = np.array([0.3, 0.1, 0.01, 0.01, 0.2])
    result = solve_subset_sum(values, 1.0, sigma_s=sigma)
    assert result.mask.tolist() == [False, False, True, True, False]  # variance 2e-4 beats 1e-2
    result = solve_subset_sum(values, 1.0)
    assert result.mask.sum() == 1  # equal variance (zero): one switch rather than two
    result = solve_subset_sum(values, 1.05, sigma_s=sigma, tolerance_s=0.1)
    assert result.mask.tolist() == [False, False, True, True, False]
    assert float(result.error_s) == pytest.approx(-0.05)


def test_single_pool_shapes_and_read_only():
    result = solve_subset_sum([1.0, 2.0, 4.0, 8.0], 5.2)
    assert result.mask.shape == (4,)
    assert result.achieved_s.shape == result.status.shape == ()
    assert float(result.achieved_s) == 5.0
    assert float(result.error_s) == pytest.approx(-0.2)
    assert result.status_names() == "OPTIMAL"
    with pytest.raises(ValueError):
        result.mask[0] = False
    with pytest.raises(AttributeError):
        result.mask = None  # type: ignore[misc]


def test_read_only_and_broadcast_inputs_use_the_one_compiled_signature():
    from crossbar_ctl.optimizer import _kernels

    values = np.broadcast_to(np.array([1.0, 2.0, 4.0]), (3, 3))  # read-only view
    usable = np.ones((3, 3), dtype=bool)
    usable.flags.writeable = False
    solve_subset_sum(np.ones((1, 3)), [1.0])
    before = len(_kernels.solve_cells.signatures)
    result = solve_subset_sum(values, np.broadcast_to(3.0, (3,)), usable=usable,
                              max_closed=np.broadcast_to(np.int64(2), (3,)))
    assert result.achieved_s.tolist() == [3.0, 3.0, 3.0]
    assert len(_kernels.solve_cells.signatures) == before


def test_unusable_everywhere_and_zero_cells():
    result = solve_subset_sum(np.ones((2, 3)), [0.0, 1.0], usable=np.zeros((2, 3), dtype=bool))
    assert not result.mask.any()
    assert result.status_names().tolist() == ["OPTIMAL", "OUT_OF_RANGE"]
    empty = solve_subset_sum(np.ones((0, 3)), np.ones(0))
    assert empty.mask.shape == (0, 3) and empty.status.shape == (0,)


def planted(rng: np.random.Generator, cells: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Large random integers (exact in float64) and targets that some subset hits exactly.

    Such instances have essentially one solution: only an exact search finds error 0.
    """
    values = rng.integers(1, 2**40, (cells, m)).astype(float)
    chosen = rng.random((cells, m)) < 0.5
    return values, np.where(chosen, values, 0.0).sum(axis=1)


@pytest.mark.parametrize("m", [33, MAX_EXACT_BRANCHES])
def test_exact_up_to_the_limit(m):
    values, targets = planted(np.random.default_rng(m), 3, m)
    result = solve_subset_sum(values, targets)
    assert np.all(result.error_s == 0.0)
    assert np.all(result.status == SubsetSumStatus.OPTIMAL)


def test_exact_with_cap_at_the_limit():
    rng = np.random.default_rng(5)
    values = rng.integers(1, 2**40, (2, MAX_EXACT_BRANCHES)).astype(float)
    chosen = np.zeros_like(values, dtype=bool)
    for c in range(2):
        chosen[c, rng.choice(MAX_EXACT_BRANCHES, 7, replace=False)] = True
    targets = np.where(chosen, values, 0.0).sum(axis=1)
    result = solve_subset_sum(values, targets, max_closed=7)
    assert np.all(result.error_s == 0.0)
    assert np.all(result.mask.sum(axis=1) <= 7)


def test_reduction_path_is_close_and_honest():
    rng = np.random.default_rng(7)
    cells, m = 6, 64
    values = rng.uniform(0.5, 1.5, (cells, m)) * np.repeat([1.0, -1.0], m // 2)
    targets = rng.uniform(-10, 10, cells)
    usable = rng.random((cells, m)) > 0.05
    result = solve_subset_sum(values, targets, usable=usable, rng=3)
    assert np.all(result.status == SubsetSumStatus.NOT_PROVEN)
    assert not np.any(result.mask & ~usable)
    assert np.all(np.abs(result.error_s) < 64 * 2.0**-25)  # 32 free branches: about 2^-30 of 64
    again = solve_subset_sum(values, targets, usable=usable, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(result.mask, again.mask)
    capped = solve_subset_sum(values, targets, usable=usable, max_closed=20, rng=3)
    assert np.all(capped.mask.sum(axis=1) <= 20)
    assert np.all(np.abs(capped.error_s) < 1e-3)


def test_reduction_path_out_of_range_is_the_extreme_subset():
    rng = np.random.default_rng(8)
    values = rng.uniform(-1.0, 1.0, (2, 50))
    values[:, 0] = 0.0
    high = np.maximum(values, 0).sum(axis=1)
    low = np.minimum(values, 0).sum(axis=1)
    result = solve_subset_sum(values, [high[0] + 1.0, low[1] - 1.0])
    assert result.status_names().tolist() == ["OUT_OF_RANGE", "OUT_OF_RANGE"]
    np.testing.assert_array_equal(result.mask[0], values[0] > 0)
    np.testing.assert_array_equal(result.mask[1], values[1] < 0)
    capped = solve_subset_sum(values[0], high[0], max_closed=3)
    np.testing.assert_array_equal(np.sort(values[0][capped.mask]), np.sort(values[0])[-3:])


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(values_s=[[1.0, np.nan]], target_s=[0.0]), "values_s"),
        (dict(values_s=[[1.0, np.inf]], target_s=[0.0]), "values_s"),
        (dict(values_s=[["a", "b"]], target_s=[0.0]), "values_s"),
        (dict(values_s=[[True, False]], target_s=[0.0]), "values_s"),
        (dict(values_s=[[1 + 1j, 2]], target_s=[0.0]), "values_s"),
        (dict(values_s=np.ones((1, 0)), target_s=[0.0]), "values_s"),
        (dict(values_s=np.ones((1, MAX_BRANCHES + 1)), target_s=[0.0]), "values_s"),
        (dict(values_s=np.ones((2, 2, 2)), target_s=[0.0]), "values_s"),
        (dict(values_s=[[1e308, 1e308]], target_s=[0.0]), "values_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0, 1.0]), "target_s"),
        (dict(values_s=[1.0, 2.0], target_s=[0.0]), "target_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[np.nan]), "target_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], sigma_s=[[0.1]]), "sigma_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], sigma_s=[[0.1, -0.1]]), "sigma_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], usable=[[1, 0]]), "usable"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], usable=[[True]]), "usable"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], max_closed=-1), "max_closed"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], max_closed=1.5), "max_closed"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], max_closed=[1, 2]), "max_closed"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], tolerance_s=-1.0), "tolerance_s"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], tolerance_s="x"), "tolerance_s"),
        (dict(values_s=np.ones((1, 50)), target_s=[3.0], rng="seed"), "rng"),
        (dict(values_s=np.ones((1, 5)), target_s=[3.0], rng=-1), "rng"),
        (dict(values_s=[[1.0, 2.0]], target_s=[0.0], sigma_s=[[1e200, 1e200]]), "sigma_s"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(OptimizerError, match=f"^{name}:"):
        solve_subset_sum(**kwargs)


finite = st.floats(-1e3, 1e3, allow_nan=False)
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.none(),
                     st.text(max_size=2), st.booleans())


@settings(max_examples=150, deadline=None)
@given(
    cells=st.integers(0, 3),
    m=st.integers(1, 6),
    bad_value=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.sampled_from(["values_s", "target_s", "sigma_s"]),
)
def test_non_finite_input_is_rejected(cells, m, bad_value, where):
    values = np.ones((max(cells, 1), m))
    target = np.zeros(max(cells, 1))
    sigma = np.zeros_like(values)
    {"values_s": values, "target_s": target, "sigma_s": sigma}[where].flat[0] = bad_value
    with pytest.raises(OptimizerError, match=f"^{where}:"):
        solve_subset_sum(values, target, sigma_s=sigma)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    target_len=st.integers(0, 4),
    max_closed=anything,
    tolerance=anything,
)
def test_any_input_either_solves_or_raises_optimizer_error(shape, target_len, max_closed, tolerance):
    """Whatever the shapes and options: a result or an OptimizerError, never another exception."""
    values = np.random.default_rng(0).uniform(-1, 1, shape)
    try:
        result = solve_subset_sum(values, np.zeros(target_len), max_closed=max_closed,
                                  tolerance_s=tolerance)
    except OptimizerError:
        return
    assert result.mask.shape == values.shape


# --- exact ties -------------------------------------------------------------------------------

def exact_offers(values: np.ndarray, target: float, *, sigma=None, cap=None,
                 tolerance=0.0) -> tuple[int, float]:
    """Run the exact kernel on one pool; return (subsets offered to the tie-break, error)."""
    from crossbar_ctl.optimizer import _kernels

    k = values.size
    half = (k + 1) // 2
    sig2 = np.zeros(k) if sigma is None else np.asarray(sigma, dtype=float) ** 2
    bufs_s, bufs_m = np.empty((4, (1 << half) + 1)), np.empty((4, (1 << half) + 1), dtype=np.int64)
    off_a, off_b = np.empty(half + 2, dtype=np.int64), np.empty(half + 2, dtype=np.int64)
    key, chosen = np.full(5, np.nan), np.zeros(1, dtype=np.int64)
    _kernels._exact(values, sig2, k, float(target), k if cap is None else cap, float(tolerance), 0.0,
                    bufs_s, bufs_m, off_a, off_b, key, chosen)
    closed = (chosen[0] >> np.arange(k)) & 1 == 1
    return int(key[3]), float(abs(values[closed].sum() - target))


@pytest.mark.parametrize("pool", ["ones", "integers"])
def test_exact_ties_are_not_enumerated(pool):
    """n = 32: C(32, 9) = 2.8e7 subsets of ones hit the target (all visited before the fix); one
    offer per pair of distinct half sums leaves a few hundred."""
    rng = np.random.default_rng(10)
    values = np.ones(32) if pool == "ones" else rng.integers(1, 17, 32).astype(float)
    target = float(np.sort(values)[-9:].sum())  # hit exactly by 9 values, and many ways by more
    for cap, tolerance in [(None, 0.0), (None, 2.0), (10, 0.0), (10, 2.0)]:
        offers, error = exact_offers(values, target, cap=cap, tolerance=tolerance)
        assert error <= tolerance  # the optimum is 0; a window trades error for fewer switches
        assert offers <= 1_000, (cap, tolerance)  # 11 to 802 here; 2.8e7 before


@pytest.mark.parametrize("tolerance", [0, 2])
def test_ties_on_equal_and_quantised_pools_match_brute_force(tolerance):
    """Pools with many equal values (and equal or quantised sigmas): error, variance and closed
    count as enumeration gives them, with and without a cap."""
    rng = np.random.default_rng(31 + tolerance)
    for m in (8, 12, 16):
        cells = 30
        values = np.where(rng.random((cells, m)) < 0.5, 1.0, rng.integers(1, 4, (cells, m))).astype(float)
        values[: cells // 3] = 1.0  # all equal
        sigma = rng.integers(0, 3, (cells, m)) * 0.25
        sigma[cells // 2:] = 0.5  # equal sigmas: only the count breaks ties
        targets = rng.integers(0, 2 * m, cells).astype(float) + np.where(rng.random(cells) < 0.3, 0.5, 0.0)
        caps = np.where(rng.random(cells) < 0.4, rng.integers(0, m + 1, cells), m + 1)
        result = solve_subset_sum(values, targets, sigma_s=sigma, max_closed=caps, tolerance_s=tolerance)
        for c in range(cells):
            cap = int(caps[c]) if caps[c] <= m else None
            expected = brute_force(values[c], targets[c], sigma=sigma[c], max_closed=cap,
                                   tolerance=tolerance)
            got = (abs(result.error_s[c]), result.sigma_s[c] ** 2, int(result.mask[c].sum()))
            assert got == pytest.approx(expected, abs=1e-9), (m, c, values[c], targets[c])


def test_small_calls_run_on_one_thread(monkeypatch):
    """A parallel region waits for numba's other threads, which on a busy machine can take a
    scheduler time slice (6-16 ms against 0.2 ms measured for one cell at m = 24): small calls
    run on the calling thread alone, large ones on all, and the setting is restored."""
    import numba

    from crossbar_ctl.optimizer import _kernels

    seen = []
    kernel = _kernels.solve_cells
    monkeypatch.setattr(_kernels, "solve_cells",
                        lambda *a: seen.append(numba.get_num_threads()) or kernel(*a))
    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("one numba thread: nothing to choose")
    rng = np.random.default_rng(4)
    solve_subset_sum(rng.uniform(0.5, 1.5, 24), 12.0)
    solve_subset_sum(rng.uniform(0.5, 1.5, (200, 8)), np.full(200, 4.0))
    solve_subset_sum(rng.uniform(0.5, 1.5, (64, 24)), np.full(64, 12.0))
    assert seen == [1, 1, threads]
    assert numba.get_num_threads() == threads
