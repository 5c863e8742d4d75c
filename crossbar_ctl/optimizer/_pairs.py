"""Numba kernels of pre-distortion's pair search (private; the front is
:func:`crossbar_ctl.engine._predistort.refine_pairs`).

Per differential pair: every plus-side subset against the minus-side subsets nearest to it, under
the response linearised on each side, ``t0 + slope (sums - g0)``. The search is meet in the
middle: the minus outputs sorted by (closed count, value), each plus subset's ``x - target``
searched in them, the two neighbours of where it lands scored (``|x - target - y|`` plus the
conductance moved on both sides times ``locality``). Cells are independent (``prange``).

The kernels reproduce, bit for bit, the vectorised numpy search they replaced (kept as the oracle
in the tests, 3-4x the CPU time): the same keys (a closed count class is ``step = 4 span + 1``
wide, cell ``r`` sits at ``r * classes * step``, so a search lands exactly where the flat search
over all cells did), the same candidates, and the same order of offers (count class, then the
neighbour below, then the one above, then the plus subsets in key order), the first strict
improvement kept. Each side's order comes from merging its subset-sum table (the output grows
with the sum), checked, else from a stable sort; numpy's sort was not stable, which matters only
where two subsets of one side have exactly equal keys. No fastmath: reordered sums would change
tie-breaks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def subset_sums(values, usable, out):
    """Every subset sum of each row of ``values`` ``(cells, n)`` into ``out`` ``(cells, 2**n)``; NaN
    where the subset uses a value that is not ``usable``. Subset ``a`` holds value ``k`` when bit
    ``k`` of ``a`` is set; its sum is added up in ascending ``k``."""
    cells, n = values.shape
    for r in prange(cells):
        out[r, 0] = 0.0
        for k in range(n):
            h = 1 << k
            v = values[r, k] if usable[r, k] else np.nan
            for a in range(h):
                out[r, h + a] = out[r, a] + v


@njit(cache=True)
def _outputs(side, r, locality, out, move):
    """Cell ``r``'s linearised outputs ``t0 + slope (sums - g0)`` and penalties ``locality |sums - g0|``."""
    sums, g0, t0, slope = side
    for a in range(sums.shape[1]):
        d = sums[r, a] - g0[r]
        out[a] = t0[r] + slope[r] * d
        move[a] = locality * abs(d)


@njit(parallel=True, cache=True)
def _largest(plus, minus, locality, out):
    """Per cell the largest ``|output|`` of either side, -1 where every output is NaN."""
    size = plus[0].shape[1]
    for r in prange(out.size):
        values = np.empty(size)
        move = np.empty(size)
        largest = -1.0
        for side in (plus, minus):
            _outputs(side, r, locality, values, move)
            for v in values:
                if not np.isnan(v) and abs(v) > largest:
                    largest = abs(v)
        out[r] = largest


@njit(cache=True)
def _before(a, b):
    """``a < b`` with NaN above everything."""
    return a < b or (np.isnan(b) and not np.isnan(a))


@njit(cache=True)
def _merge_sort(keys, order, spare, width):
    """Bottom-up merges of ``order``'s sorted runs of ``width`` by ``keys`` (stable, NaN last)."""
    n = order.size
    src, dst = order, spare
    passes = 0
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j = lo, mid
            for k in range(lo, hi):
                if j < hi and (i >= mid or _before(keys[src[j]], keys[src[i]])):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
        src, dst = dst, src
        width *= 2
        passes += 1
    if passes % 2:  # the last pass wrote ``spare``
        order[:] = spare


@njit(cache=True)
def _subset_order(keys, sums, count, classes, order, spare):
    """``order``: the subsets by (closed count, key), NaN keys last in their class, else stable.

    ``sums`` is a subset-sum table (``sums[a + 2**k] = sums[a] + value k`` for ``a < 2**k``), so the
    subsets come in order of their sums by merging, those of the first k values with themselves
    plus value k (2 x 2**n steps, a sort's 2**n n); ``keys`` is checked to be non-decreasing
    along it (it is when a key grows with the sum), else sorted. Then a stable partition by count.
    """
    size = keys.size
    order[0] = 0
    h = 1
    while h < size:
        spare[:h] = order[:h]
        i, j = 0, 0
        for k in range(2 * h):
            if j < h and (i >= h or _before(sums[spare[j] + h], sums[spare[i]])):
                order[k] = spare[j] + h
                j += 1
            else:
                order[k] = spare[i]
                i += 1
        h *= 2
    for k in range(size - 1):
        if _before(keys[order[k + 1]], keys[order[k]]):
            for a in range(size):
                order[a] = a
            _merge_sort(keys, order, spare, 1)
            break
    if classes > 1:
        start = np.zeros(classes + 1, dtype=np.int64)
        for a in range(size):
            start[count[a] + 1] += 1
        for c in range(classes):
            start[c + 1] += start[c]
        spare[:] = order
        for k in range(size):
            a = spare[k]
            order[start[count[a]]] = a
            start[count[a]] += 1


@njit(cache=True)
def _first_at_least(flat, v):
    """``searchsorted(flat, v, side="left")``: the first index whose value is ``>= v``."""
    lo = 0
    hi = flat.size
    while lo < hi:
        mid = (lo + hi) // 2
        if flat[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True)
def _search(plus, minus, locality, target, count, room, has_room, most, span, best_a, best_b, predicted):
    """Every cell's best pair into ``best_a``, ``best_b``, ``predicted`` (cells in parallel)."""
    for r in prange(target.size):
        _search_cell(r, plus, minus, locality, target, count, room, has_room, most, span, best_a, best_b, predicted)


@njit(cache=True)
def _search_cell(r, plus, minus, locality, target, count, room, has_room, most, span, best_a, best_b, predicted):
    """Cell ``r``'s best pair (a function of its own: numba optimises a ``prange`` body less)."""
    size = plus[0].shape[1]
    step = 4.0 * span + 1.0
    classes = most.size
    offset = step * classes * r
    x, move_x, y, move_y = np.empty(size), np.empty(size), np.empty(size), np.empty(size)
    _outputs(plus, r, locality, x, move_x)
    _outputs(minus, r, locality, y, move_y)
    want = np.empty(size)
    for a in range(size):
        want[a] = x[a] - target[r]
    order = np.empty(size, dtype=np.int64)
    plus_order = np.empty(size, dtype=np.int64)
    spare = np.empty(size, dtype=np.int64)
    _subset_order(y, minus[0][r], count, classes, order, spare)
    _subset_order(want, plus[0][r], count, classes, plus_order, spare)
    flat = np.empty(size)
    query = np.empty(size)
    for k in range(size):
        b = order[k]
        flat[k] = ((2.0 * span if np.isnan(y[b]) else y[b]) + step * count[b]) + offset
        a = plus_order[k]
        query[k] = (0.0 if np.isnan(want[a]) else want[a]) + offset
    score_best = np.inf
    a_best = 0
    b_best = 0
    pos = np.empty(size, dtype=np.int64)
    for c in range(classes):
        if most[c] == 0:
            break
        shift_c = step * c
        p = 0
        last = -np.inf
        for k in range(most[c]):  # where each query lands: walk on along an ascending run
            v = query[k] + shift_c
            if v >= last:
                while p < size and flat[p] < v:
                    p += 1
            else:
                p = _first_at_least(flat, v)
            pos[k] = p
            last = v
        for shift in (-1, 0):
            for k in range(most[c]):
                a = plus_order[k]
                b = order[min(max(pos[k] + shift, 0), size - 1)]
                score = abs(want[a] - y[b]) + move_x[a] + move_y[b]
                if np.isnan(score) or count[b] != c or (has_room and count[a] > room[r] - c):
                    continue
                if score < score_best:
                    score_best = score
                    a_best = a
                    b_best = b
    best_a[r] = a_best
    best_b[r] = b_best
    predicted[r] = x[a_best] - y[b_best] if np.isfinite(score_best) else np.nan


def nearest_pairs(target_s: np.ndarray, plus: tuple[np.ndarray, ...], minus: tuple[np.ndarray, ...],
                  locality: float, room: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (plus subset, minus subset) per pair; see the module docstring.

    Parameters
    ----------
    target_s : ndarray (cells,)
    plus, minus : tuple of ndarray
        Per side ``(sums (cells, 2**n), g0 (cells,), t0 (cells,), slope (cells,))``, float64.
    locality : float
    room : ndarray (cells,) of int, optional
        Most branches the two subsets may close together.

    Returns
    -------
    plus_index, minus_index : ndarray (cells,) of int64
    predicted_s : ndarray (cells,)
        NaN for a cell with no allowed pair of subsets.
    """
    plus, minus = (tuple(np.ascontiguousarray(a, dtype=np.float64) for a in side) for side in (plus, minus))
    target_s = np.ascontiguousarray(target_s, dtype=np.float64)
    cells, size = plus[0].shape
    largest = np.empty(cells)
    _largest(plus, minus, float(locality), largest)
    span = (largest.max() if largest.max() >= 0 else np.nan) + float(np.max(np.abs(target_s)))
    count = np.zeros(size, dtype=np.int64)  # closed branches of each subset, where a cap needs them
    if room is not None:
        count = ((np.arange(size)[:, None] >> np.arange(size.bit_length() - 1)) & 1).sum(axis=1)
        most = np.array([np.sum(count <= room.max() - c) for c in range(int(count.max()) + 1)], dtype=np.int64)
    else:
        most = np.array([size], dtype=np.int64)
    best_a, best_b = np.zeros(cells, dtype=np.int64), np.zeros(cells, dtype=np.int64)
    predicted = np.empty(cells)
    _search(plus, minus, float(locality), target_s, count,
            np.zeros(cells, dtype=np.int64) if room is None else np.ascontiguousarray(room, dtype=np.int64),
            room is not None, most, span, best_a, best_b, predicted)
    return best_a, best_b, predicted
