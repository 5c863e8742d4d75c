"""Numba kernels of the subset-sum optimizer, on plain arrays (private; the front is ``_solver``).

One cell: pick a subset of its usable branches whose sum is closest to the target.

- Exact (``k <= MAX_EXACT`` usable branches): meet in the middle (Horowitz-Sahni). Each half's
  2^(k/2) subset sums are generated already sorted, by merging the list with itself shifted by
  one value at a time; a pointer sweep finds the least error and, among exact ties, the lowest
  propagated variance, then the fewest closed branches. Equal sums within a half are merged
  first, keeping the subset the tie-break prefers, so exact ties (equal or integer values) cost
  one visit per pair of distinct sums, not one per tied subset. With a tolerance, a second sweep visits
  every pair within ``best + tolerance`` and keeps the lowest variance, then the fewest closed
  branches, then the lowest error. With a weight ``w`` (the common-mode-aware joint cost), the
  second sweep instead minimises ``error + w * rank`` (``rank``: the closed branches' ``|value|``,
  a pair's ``G+ + G-``), then the fewest closed, then the lowest error; its window shrinks with the
  best cost found, since ``rank >= |sum| >= |target| - error`` bounds the error of any better
  subset by ``(cost - w |target|) / (1 - w)``. A cap on closed branches splits each half by
  popcount and sweeps only the allowed pairs of classes.
- Reduced (more branches): a random split leaves ``REDUCED_FREE`` branches free; the others are
  fixed greedily so that the residual target sits at the centre of the free pool's range; the
  free part is solved exactly. ``ATTEMPTS`` splits are tried unless one meets the tolerance.
  Optimality is not proven (status ``NOT_PROVEN``), except for targets outside the reachable
  range, whose optimum (the extreme subset) is known.

No fastmath: reordered sums would change tie-breaks and reproducibility.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

OPTIMAL = 0
OUT_OF_RANGE = 1
NOT_PROVEN = 2

MAX_EXACT = 40  # usable branches solved exactly (two halves of 2^20 sums)
REDUCED_FREE = 32  # branches left free, and solved exactly, on the reduction path
ATTEMPTS = 3  # random splits tried on the reduction path


@njit(cache=True)
def _popcount(x):
    count = 0
    while x:
        x &= x - 1
        count += 1
    return count


@njit(cache=True)
def _merge_start(s, size, x, start):
    """Merge path: how many unshifted entries are among the first ``start`` merged ones."""
    lo = max(0, start - size)
    hi = min(start, size)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if s[mid - 1] <= s[start - mid] + x:  # on ties the unshifted entry comes first
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(cache=True)
def _merge_step(s, m, ts, tm, size, x, bit):
    """Merge ``s[:size]`` with ``s[:size] + x`` (masks gaining ``bit``) into ``ts[:2 size]``.

    ``s[size]`` must be +inf (a sentinel for an exhausted list); ``ts[2 size]`` is set to +inf.
    On ties the unshifted entry comes first. The output is cut in four quarters whose starts are
    found by binary search (merge path); the quarters are merged in one loop, so their four
    latency chains overlap, and branch-free, as which list gives the next entry is unpredictable.
    """
    if size == 1:
        low = np.int64(s[0] <= s[0] + x)
        ts[1 - low] = s[0]
        tm[1 - low] = m[0]
        ts[low] = s[0] + x
        tm[low] = m[0] | bit
    else:
        n = size // 2
        i0 = 0
        j0 = 0
        i1 = _merge_start(s, size, x, n)
        j1 = n - i1
        i2 = _merge_start(s, size, x, 2 * n)
        j2 = 2 * n - i2
        i3 = _merge_start(s, size, x, 3 * n)
        j3 = 3 * n - i3
        for o in range(n):  # low = 1: s[i] is next; 0: s[j] + x is (recomputed exactly)
            low = np.int64(s[i0] <= s[j0] + x)
            k = j0 + low * (i0 - j0)
            ts[o] = s[k] + x * np.float64(1 - low)
            tm[o] = m[k] | (bit & -np.int64(1 - low))
            i0 += low
            j0 += 1 - low
            low = np.int64(s[i1] <= s[j1] + x)
            k = j1 + low * (i1 - j1)
            ts[n + o] = s[k] + x * np.float64(1 - low)
            tm[n + o] = m[k] | (bit & -np.int64(1 - low))
            i1 += low
            j1 += 1 - low
            low = np.int64(s[i2] <= s[j2] + x)
            k = j2 + low * (i2 - j2)
            ts[2 * n + o] = s[k] + x * np.float64(1 - low)
            tm[2 * n + o] = m[k] | (bit & -np.int64(1 - low))
            i2 += low
            j2 += 1 - low
            low = np.int64(s[i3] <= s[j3] + x)
            k = j3 + low * (i3 - j3)
            ts[3 * n + o] = s[k] + x * np.float64(1 - low)
            tm[3 * n + o] = m[k] | (bit & -np.int64(1 - low))
            i3 += low
            j3 += 1 - low
    ts[2 * size] = np.inf


@njit(cache=True)
def _sorted_sums(values, start, count, s, m, ts, tm):
    """Subset sums of ``values[start:start + count]`` in ascending order, with their bit masks.

    ``s, m`` and ``ts, tm`` are two buffers of at least 2^count + 1 entries (a sentinel follows
    the sums); the result is in the first pair when ``count`` is even, in the second otherwise.
    Each value merges the list with itself shifted by that value: O(2^count) in all, no sort.
    """
    s[0] = 0.0
    s[1] = np.inf
    m[0] = 0
    for b in range(count):
        if b % 2 == 0:
            _merge_step(s, m, ts, tm, 1 << b, values[start + b], np.int64(1) << b)
        else:
            _merge_step(ts, tm, s, m, 1 << b, values[start + b], np.int64(1) << b)
    if count % 2 == 0:
        return s, m
    return ts, tm


@njit(cache=True)
def _by_count(s, m, size, bits, out_s, out_m, offsets):
    """Stable partition of sorted sums by popcount: class c is ``offsets[c]:offsets[c + 1]``."""
    offsets[: bits + 2] = 0
    for i in range(size):
        offsets[_popcount(m[i]) + 1] += 1
    for c in range(bits + 1):
        offsets[c + 1] += offsets[c]
    pos = offsets[: bits + 1].copy()
    for i in range(size):
        c = _popcount(m[i])
        out_s[pos[c]] = s[i]
        out_m[pos[c]] = m[i]
        pos[c] += 1


@njit(cache=True)
def _variance(mask, sig2, shift):
    """Sum of ``sig2[shift + b]`` over the set bits b of ``mask``, in bit order."""
    var = 0.0
    x = mask
    bit = shift
    while x:
        if x & 1:
            var += sig2[bit]
        x >>= 1
        bit += 1
    return var


@njit(cache=True)
def _distinct(s, m, lo, hi, sig2, shift, out):
    """Keep one entry per run of equal sums of ``s[lo:hi]`` (ascending), written from ``out`` on.

    The kept mask has the least variance over its bits (``sig2`` from ``shift``), then the fewest
    bits, then comes first. Every pair drawn from two runs has the same error, and a pair's
    variance and count grow with each half's, so the kept pair is the one the tie-break would
    choose among all of them (exactly when the variance sums are exact, else up to their
    rounding). Returns the end of the written entries.
    """
    if out == lo:
        ties = 0
        for i in range(lo, hi - 1):  # a branch-free count (vectorised): most pools have no tie
            ties += s[i + 1] == s[i]
        if ties == 0:
            return hi
    i = lo
    w = out
    while i < hi:
        best = i
        j = i + 1
        if j < hi and s[j] == s[i]:
            best_var = _variance(m[i], sig2, shift)
            best_count = _popcount(m[i])
            while j < hi and s[j] == s[i]:
                var = _variance(m[j], sig2, shift)
                count = _popcount(m[j])
                if var < best_var or (var == best_var and count < best_count):
                    best, best_var, best_count = j, var, count
                j += 1
        s[w] = s[i]
        m[w] = m[best]
        w += 1
        i = j
    return w


@njit(cache=True)
def _distinct_classes(s, m, offsets, classes, sig2, shift):
    """:func:`_distinct` within each class ``offsets[c]:offsets[c + 1]``, compacting the classes."""
    w = 0
    lo = offsets[0]
    for c in range(classes):
        hi = offsets[c + 1]
        offsets[c] = w
        w = _distinct(s, m, lo, hi, sig2, shift, w)
        lo = hi
    offsets[classes] = w


@njit(cache=True)
def _joint_bound(key, target):
    """The largest error a subset may have and still beat the joint cost of the chosen one."""
    w = key[4]
    return (key[0] + w * key[1] - w * abs(target)) / (1.0 - w)


@njit(cache=True)
def _offer(mask, err, sig2, running, key, chosen):
    """Keep ``mask`` if it beats the chosen one: by (error, variance, count) while ``running`` is 1,
    by (error + key[4] variance, count, error) while it is 2 (the joint cost), by (variance, count,
    error) inside a fixed window (0). ``key[3]`` counts the offers (work)."""
    var = _variance(mask, sig2, 0)
    count = _popcount(mask)
    key[3] += 1.0
    if running == 1:
        better = err < key[0] or (err == key[0] and (var < key[1] or (var == key[1] and count < key[2])))
    elif running == 2:
        cost = err + key[4] * var
        best = key[0] + key[4] * key[1]
        better = cost < best or (cost == best and (count < key[2] or (count == key[2] and err < key[0])))
    else:
        better = var < key[1] or (var == key[1] and (count < key[2] or (count == key[2] and err < key[0])))
    if better:
        key[0] = err
        key[1] = var
        key[2] = count
        chosen[0] = mask


@njit(cache=True)
def _window(a, a_mask, b_s, b_m, r, step, b0, b1, shift, target, bound, sig2, running, key, chosen):
    """Offer ``a + b_s[r]``, ``a + b_s[r + step]``, ... while within ``bound``; return the bound.

    In a joint-cost sweep a row whose own rank and distance to the target already cost as much as
    the chosen subset is skipped: any ``b`` costs at least ``weight * (rank(a) + |target - a|)``.
    """
    if running == 2 and key[4] * (_variance(a_mask, sig2, 0) + abs(target - a)) >= key[0] + key[4] * key[1]:
        return bound
    while b0 <= r < b1:
        err = abs((a + b_s[r]) - target)
        if err > bound:
            break
        _offer(a_mask | (b_m[r] << shift), err, sig2, running, key, chosen)
        if running == 1:
            bound = key[0]
        elif running == 2:
            bound = _joint_bound(key, target)
        r += step
    return bound


@njit(cache=True)
def _first_above(a, b_s, lo, hi, target, bound):
    """First index in ``lo..hi`` with ``(a + b_s[r]) - target > bound`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if (a + b_s[mid]) - target > bound:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _walk(a_s, a_m, i, end, b_s, b_m, j, b0, b1, shift, target, bound, sig2, running, key, chosen):
    """Rows ``i..end-1`` of a sweep (see ``_scan``), ``j`` at or above the window; returns the bound."""
    while i < end and j >= b0:
        d = (a_s[i] + b_s[j]) - target
        if abs(d) <= bound:  # rare: one predictable test
            bound = _window(a_s[i], a_m[i], b_s, b_m, j, -1, b0, b1, shift, target, bound, sig2,
                            running, key, chosen)
        above = np.int64(d > bound)  # branch-free: the direction is unpredictable
        i += 1 - above
        j -= above
    return bound


@njit(cache=True)
def _scan(a_s, a_m, a0, a1, b_s, b_m, b0, b1, shift, target, bound, sig2, key, chosen):
    """Offer every pair of the two ascending ranges with ``|a + b - target| <= bound``.

    With ``bound < 0`` the bound is the best error so far (``key[0]``), so one sweep finds the
    least error and, among exact ties, the least variance, then count. With ``key[4] > 0`` (a
    joint-cost sweep) the bound shrinks with the best joint cost (``_joint_bound``).

    A walk over rows ``i`` keeps ``j`` at the last ``b`` not above the window: ``j`` drops while
    the pair is above it, else row ``i`` is done (its window, rarely non-empty, is walked down
    from ``j``) and ``i`` advances. Long sweeps run four walks over four row ranges in one loop,
    so their latency chains overlap. Each walk starts from a binary search; a running bound is
    first made finite by probing the start rows (it only shrinks afterwards, so the starts stay
    valid). The loop makes no call per step: a call would cost reference counting.
    """
    if a1 <= a0 or b1 <= b0:
        return
    running = 1 if bound < 0.0 else (2 if key[4] > 0.0 else 0)
    if running == 2:  # the best cost so far may come from an earlier range
        bound = min(bound, _joint_bound(key, target))
    walks = 4 if a1 - a0 >= 128 else 1
    e0 = a0 + (a1 - a0) // walks
    e1 = a0 + 2 * (a1 - a0) // walks
    e2 = a0 + 3 * (a1 - a0) // walks
    if running == 1:
        for w in range(walks):
            r = (a0, e0, e1, e2)[w]
            p = _first_above(a_s[r], b_s, b0, b1, target, 0.0)
            _window(a_s[r], a_m[r], b_s, b_m, p - 1, -1, b0, b1, shift, target, key[0], sig2, True,
                    key, chosen)
            _window(a_s[r], a_m[r], b_s, b_m, p, 1, b0, b1, shift, target, key[0], sig2, True, key,
                    chosen)
        bound = key[0]
    i0 = a0
    j0 = _first_above(a_s[i0], b_s, b0, b1, target, bound) - 1
    if walks == 1:
        _walk(a_s, a_m, i0, a1, b_s, b_m, j0, b0, b1, shift, target, bound, sig2, running, key, chosen)
        return
    i1 = e0
    j1 = _first_above(a_s[i1], b_s, b0, b1, target, bound) - 1
    i2 = e1
    j2 = _first_above(a_s[i2], b_s, b0, b1, target, bound) - 1
    i3 = e2
    j3 = _first_above(a_s[i3], b_s, b0, b1, target, bound) - 1
    while ((i0 < e0) & (j0 >= b0) & (i1 < e1) & (j1 >= b0) & (i2 < e2) & (j2 >= b0)
           & (i3 < a1) & (j3 >= b0)):  # all four walks go on; each finishes alone below
        d = (a_s[i0] + b_s[j0]) - target
        if abs(d) <= bound:
            bound = _window(a_s[i0], a_m[i0], b_s, b_m, j0, -1, b0, b1, shift, target, bound,
                            sig2, running, key, chosen)
        above = np.int64(d > bound)
        i0 += 1 - above
        j0 -= above
        d = (a_s[i1] + b_s[j1]) - target
        if abs(d) <= bound:
            bound = _window(a_s[i1], a_m[i1], b_s, b_m, j1, -1, b0, b1, shift, target, bound,
                            sig2, running, key, chosen)
        above = np.int64(d > bound)
        i1 += 1 - above
        j1 -= above
        d = (a_s[i2] + b_s[j2]) - target
        if abs(d) <= bound:
            bound = _window(a_s[i2], a_m[i2], b_s, b_m, j2, -1, b0, b1, shift, target, bound,
                            sig2, running, key, chosen)
        above = np.int64(d > bound)
        i2 += 1 - above
        j2 -= above
        d = (a_s[i3] + b_s[j3]) - target
        if abs(d) <= bound:
            bound = _window(a_s[i3], a_m[i3], b_s, b_m, j3, -1, b0, b1, shift, target, bound,
                            sig2, running, key, chosen)
        above = np.int64(d > bound)
        i3 += 1 - above
        j3 -= above
    bound = _walk(a_s, a_m, i0, e0, b_s, b_m, j0, b0, b1, shift, target, bound, sig2, running, key, chosen)
    bound = _walk(a_s, a_m, i1, e1, b_s, b_m, j1, b0, b1, shift, target, bound, sig2, running, key, chosen)
    bound = _walk(a_s, a_m, i2, e2, b_s, b_m, j2, b0, b1, shift, target, bound, sig2, running, key, chosen)
    _walk(a_s, a_m, i3, a1, b_s, b_m, j3, b0, b1, shift, target, bound, sig2, running, key, chosen)


@njit(cache=True)
def _exact(values, sig2, k, target, cap, tolerance, weight, bufs_s, bufs_m, off_a, off_b, key, chosen):
    """Exact optimum over ``values[:k]`` with at most ``cap`` closed; the mask lands in ``chosen[0]``."""
    ha = k // 2
    hb = k - ha
    a_s, a_m = _sorted_sums(values, 0, ha, bufs_s[0], bufs_m[0], bufs_s[1], bufs_m[1])
    b_s, b_m = _sorted_sums(values, ha, hb, bufs_s[2], bufs_m[2], bufs_s[3], bufs_m[3])
    capped = cap < k
    if capped:  # sort each half into popcount classes, in the buffer the generation left free
        ia = 1 - ha % 2
        ib = 3 - hb % 2
        _by_count(a_s, a_m, 1 << ha, ha, bufs_s[ia], bufs_m[ia], off_a)
        _by_count(b_s, b_m, 1 << hb, hb, bufs_s[ib], bufs_m[ib], off_b)
        a_s, a_m, b_s, b_m = bufs_s[ia], bufs_m[ia], bufs_s[ib], bufs_m[ib]
        classes_a = ha + 1
        classes_b = hb + 1
    else:
        off_a[0] = 0
        off_a[1] = 1 << ha
        off_b[0] = 0
        off_b[1] = 1 << hb
        classes_a = 1
        classes_b = 1
    _distinct_classes(a_s, a_m, off_a, classes_a, sig2, 0)  # exact ties: one subset per sum
    _distinct_classes(b_s, b_m, off_b, classes_b, sig2, ha)
    key[:3] = np.inf
    key[3] = 0.0
    key[4] = 0.0
    chosen[0] = 0
    bound = -1.0  # first sweep: the least error; with a tolerance or a weight, a second one
    for sweep in range(1 if tolerance == 0.0 and weight == 0.0 else 2):
        for ca in range(classes_a):
            for cb in range(classes_b):
                if capped and ca + cb > cap:
                    break
                _scan(a_s, a_m, off_a[ca], off_a[ca + 1], b_s, b_m, off_b[cb], off_b[cb + 1], ha,
                      target, bound, sig2, key, chosen)
        if sweep == 0 and weight > 0.0:  # the joint cost, from the least error's subset on
            key[4] = weight
            bound = _joint_bound(key, target)
        elif sweep == 0:
            bound = key[0] + tolerance
            key[1:3] = np.inf


@njit(cache=True)
def _reach(values, k, cap):
    """Lowest and highest sums of at most ``cap`` of ``values[:k]``."""
    if cap >= k:
        low = 0.0
        high = 0.0
        for b in range(k):
            if values[b] < 0.0:
                low += values[b]
            else:
                high += values[b]
        return low, high
    ordered = np.sort(values[:k])
    low = 0.0
    high = 0.0
    for b in range(cap):
        if ordered[b] < 0.0:
            low += ordered[b]
        if ordered[k - 1 - b] > 0.0:
            high += ordered[k - 1 - b]
    return low, high


@njit(cache=True)
def _splitmix(state):
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True)
def _extreme(values, sig2, k, cap, upward, local):
    """Close the ``cap`` largest positive (or most negative) values, lowest variance first among equals."""
    sign = 1.0 if upward else -1.0
    order = np.argsort(sig2[:k], kind="mergesort")
    order = order[np.argsort(-sign * values[:k][order], kind="mergesort")]
    local[:k] = False
    for r in range(min(cap, k)):
        b = order[r]
        if sign * values[b] <= 0.0:
            break
        local[b] = True


@njit(cache=True)
def _reduced(values, sig2, k, target, cap, tolerance, weight, seed, bufs_s, bufs_m, off_a, off_b, key,
             chosen, local):
    """Split, fix, solve the free part exactly; best of ``ATTEMPTS`` splits into ``local`` (by the
    joint cost ``error + weight * variance`` when ``weight`` > 0)."""
    state = np.uint64(seed)
    perm = np.arange(k)
    free_v = np.empty(REDUCED_FREE)
    free_s = np.empty(REDUCED_FREE)
    trial = np.zeros(k, dtype=np.bool_)
    best = np.array([np.inf, np.inf, np.inf, np.inf])  # (error beyond tolerance, var, count, error)
    n_fixed = k - REDUCED_FREE
    for _ in range(ATTEMPTS):
        for i in range(k - 1, 0, -1):  # Fisher-Yates
            state, z = _splitmix(state)
            j = np.int64(z % np.uint64(i + 1))
            perm[i], perm[j] = perm[j], perm[i]
        for r in range(REDUCED_FREE):
            free_v[r] = values[perm[r]]
            free_s[r] = sig2[perm[r]]
        cap_fixed = n_fixed if cap >= k else cap * n_fixed // k
        low, high = _reach(free_v, REDUCED_FREE, max(cap - cap_fixed, 0))
        goal = target - 0.5 * (low + high)
        fixed = perm[REDUCED_FREE:]
        fixed = fixed[np.argsort(-np.abs(values[fixed]), kind="mergesort")]
        trial[:] = False
        total = 0.0
        closed = 0
        for b in fixed:  # greedy: largest first, take whatever brings the sum closer
            if closed < cap_fixed and abs(total + values[b] - goal) < abs(total - goal):
                total += values[b]
                trial[b] = True
                closed += 1
        _exact(free_v, free_s, REDUCED_FREE, target - total, min(cap - closed, REDUCED_FREE),
               tolerance, weight, bufs_s, bufs_m, off_a, off_b, key, chosen)
        for r in range(REDUCED_FREE):
            if (chosen[0] >> r) & 1:
                trial[perm[r]] = True
        achieved = 0.0
        var = 0.0
        count = 0
        for b in range(k):
            if trial[b]:
                achieved += values[b]
                var += sig2[b]
                count += 1
        err = abs(achieved - target)
        beyond = err if err > tolerance else 0.0
        if weight > 0.0:  # the joint cost first, then count and error
            beyond = err + weight * var
            var = 0.0
        if beyond < best[0] or (beyond == best[0] and (var < best[1] or (var == best[1] and (
                count < best[2] or (count == best[2] and err < best[3]))))):
            best[0] = beyond
            best[1] = var
            best[2] = count
            best[3] = err
            local[:k] = trial
        if best[0] == 0.0 and (tolerance > 0.0 or best[3] == 0.0):  # never with a weight (cost > 0)
            break


@njit(parallel=True, cache=True)
def solve_cells(values, sig2, usable, target, cap, tolerance, weight, seeds, threads, mask, achieved,
                variance, status):
    """Solve every cell (row) of ``values`` into the output arrays.

    values, sig2 : float64 (cells, m); usable : bool (cells, m); target : float64 (cells,);
    cap : int64 (cells,), negative for no cap; tolerance : the near-tie window; weight : the
    joint cost's weight on ``sig2`` (0: off; then ``sig2`` ranks ties only); seeds : uint64
    (cells,) for the reduction path; threads : the number of numba threads (cells are split into 4 contiguous blocks per thread).
    Outputs: mask bool (cells, m), achieved and variance float64 (cells,), status int8 (cells,).
    """
    cells, m = values.shape
    k_max = 0
    for c in range(cells):  # plain loops: an array expression here would become a parallel region per cell
        k = 0
        for b in range(m):
            k += usable[c, b]
        k_max = max(k_max, k)
    half = (min(k_max, MAX_EXACT) + 1) // 2
    if k_max > MAX_EXACT:
        half = max(half, (REDUCED_FREE + 1) // 2)
    size = (1 << half) + 1
    blocks = min(cells, 4 * threads)
    for block in prange(blocks):
        bufs_s = np.empty((4, size))
        bufs_m = np.empty((4, size), dtype=np.int64)
        off_a = np.empty(half + 2, dtype=np.int64)
        off_b = np.empty(half + 2, dtype=np.int64)
        key = np.empty(5)  # chosen error, variance, count; offers; the joint cost's weight
        chosen = np.zeros(1, dtype=np.int64)
        local_v = np.empty(m)
        local_s = np.empty(m)
        index = np.empty(m, dtype=np.int64)
        local = np.zeros(m, dtype=np.bool_)
        for c in range(block * cells // blocks, (block + 1) * cells // blocks):
            k = 0
            for b in range(m):
                if usable[c, b]:
                    local_v[k] = values[c, b]
                    local_s[k] = sig2[c, b]
                    index[k] = b
                    k += 1
            limit = k if cap[c] < 0 or cap[c] > k else cap[c]
            t = target[c]
            low, high = _reach(local_v, k, limit)
            outside = t < low or t > high
            if k <= MAX_EXACT:
                _exact(local_v, local_s, k, t, limit, tolerance, weight, bufs_s, bufs_m, off_a, off_b,
                       key, chosen)
                for b in range(k):
                    local[b] = ((chosen[0] >> b) & 1) == 1
                status[c] = OUT_OF_RANGE if outside else OPTIMAL
            elif t <= low or t >= high:  # the optimum is the extreme subset
                _extreme(local_v, local_s, k, limit, t >= high, local)
                status[c] = OUT_OF_RANGE if outside else OPTIMAL
            else:
                _reduced(local_v, local_s, k, t, limit, tolerance, weight, seeds[c], bufs_s, bufs_m,
                         off_a, off_b, key, chosen, local)
                status[c] = NOT_PROVEN
            for r in range(k):
                mask[c, index[r]] = local[r]
            total = 0.0
            var = 0.0
            for b in range(m):
                if mask[c, b]:
                    total += values[c, b]
                    var += sig2[c, b]
            achieved[c] = total
            variance[c] = var
