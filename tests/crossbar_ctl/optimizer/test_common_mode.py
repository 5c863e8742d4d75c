"""The common-mode-aware choice (issue 12 item 2): within a window of calibration uncertainties of
the best subset, the one with the smallest ``G+ + G-``; against brute force on small pools."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crossbar_ctl.core.errors import OptimizerError
from crossbar_ctl.optimizer import solve_subset_sum


def _pairs(cells: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    g = 1e-4 * np.exp(0.2 * rng.standard_normal((cells, 2 * n)))
    values = np.concatenate([g[:, :n], -g[:, n:]], axis=1)
    return values, 4e-4 * g, rng.uniform(-1, 1, cells) * 2e-4


def test_common_mode_halves_the_pairs_conductance_within_the_calibrations_uncertainty():
    values, sigma, target = _pairs(400, 8, seed=1)
    off = solve_subset_sum(values, target, sigma_s=sigma)
    on = solve_subset_sum(values, target, sigma_s=sigma, common_mode_sigmas=1.0)
    common = lambda r: np.sum(np.where(r.mask, np.abs(values), 0.0), axis=1)
    # measured: the median ratio (G+ + G-) / |target| falls from 7.9 to 4.0 (pairs of 2 x 8, 20 % spread)
    assert np.median(common(on)) < 0.6 * np.median(common(off))
    window = np.median(np.sqrt(0.5 * np.sum(sigma**2, axis=1)))
    assert np.all(np.abs(on.error_s) <= np.abs(off.error_s) + window * (1 + 1e-9))
    # the uncertainty reported is the closed branches' own, whatever ranked them
    assert np.allclose(on.sigma_s, np.sqrt(np.sum(np.where(on.mask, sigma**2, 0.0), axis=1)))


def test_common_mode_choice_matches_brute_force():
    values, sigma, target = _pairs(20, 4, seed=2)
    result = solve_subset_sum(values, target, sigma_s=sigma, common_mode_sigmas=2.0)
    window = 2.0 * np.median(np.sqrt(0.5 * np.sum(sigma**2, axis=1)))
    subsets = np.array(list(itertools.product([False, True], repeat=8)))
    for cell in range(len(values)):
        sums = subsets @ values[cell]
        errors = np.abs(sums - target[cell])
        inside = errors <= errors.min() + window
        best = np.min((subsets @ np.abs(values[cell]))[inside])
        assert np.sum(np.abs(values[cell])[result.mask[cell]]) == pytest.approx(best, rel=1e-12)


def test_common_mode_sigmas_is_validated():
    with pytest.raises(OptimizerError, match="common_mode_sigmas"):
        solve_subset_sum(np.ones(4), 1.0, common_mode_sigmas=-1)
