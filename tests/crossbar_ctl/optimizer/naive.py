"""Slow, obviously correct oracles for the optimizer tests (brute force over every subset)."""

from __future__ import annotations

import numpy as np


def all_subsets(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and popcounts of all 2^m subsets; subset s closes branch b when bit b of s is set.

    Sums accumulate in branch order, as the solver reports ``achieved_s``.
    """
    sums = np.zeros(1)
    counts = np.zeros(1, dtype=np.int64)
    for v in values:
        sums = np.concatenate([sums, sums + v])
        counts = np.concatenate([counts, counts + 1])
    return sums, counts


def brute_force(values, target, *, sigma=None, usable=None, max_closed=None, tolerance=0.0):
    """The solver's specification for one cell, by enumeration.

    Returns ``(error, variance, closed)`` of the chosen subset: the least ``|sum - target|``;
    among subsets within ``tolerance`` of it, the least variance, then the fewest closed, then
    the least error.
    """
    values = np.asarray(values, dtype=float)
    m = values.size
    sigma = np.zeros(m) if sigma is None else np.asarray(sigma, dtype=float)
    usable = np.ones(m, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    sums, counts = all_subsets(values)
    variances, _ = all_subsets(sigma**2)
    index = np.arange(sums.size)
    allowed = np.ones(sums.size, dtype=bool)
    for b in np.flatnonzero(~usable):
        allowed &= (index >> b) & 1 == 0
    if max_closed is not None:
        allowed &= counts <= max_closed
    errors = np.abs(sums - target)
    best = errors[allowed].min()
    near = np.flatnonzero(allowed & (errors <= best + tolerance))
    pick = near[np.lexsort((errors[near], counts[near], variances[near]))[0]]
    return errors[pick], variances[pick], int(counts[pick])
