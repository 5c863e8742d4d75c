"""The common-mode-aware joint cost (issue 12): the subset with the least ``|error| + w (G+ + G-)``;
against brute force on small pools."""

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


@pytest.mark.parametrize("cap", [None, 3])
def test_joint_cost_matches_brute_force(cap):
    values, sigma, target = _pairs(30, 4, seed=3)
    weight = 0.05  # large enough that the joint cost often differs from the least error
    result = solve_subset_sum(values, target, sigma_s=sigma, max_closed=cap, common_mode_weight=weight)
    plain = solve_subset_sum(values, target, sigma_s=sigma, max_closed=cap)
    subsets = np.array(list(itertools.product([False, True], repeat=8)))
    if cap is not None:
        subsets = subsets[subsets.sum(axis=1) <= cap]
    moved = 0
    for cell in range(len(values)):
        cost = np.abs(subsets @ values[cell] - target[cell]) + weight * (subsets @ np.abs(values[cell]))
        chosen = abs(result.error_s[cell]) + weight * np.sum(np.abs(values[cell])[result.mask[cell]])
        assert chosen == pytest.approx(cost.min(), rel=1e-12, abs=1e-18)
        moved += not np.array_equal(result.mask[cell], plain.mask[cell])
    assert moved >= 5  # measured: 18 of 30 cells (none cap) take another subset than the least error


def test_joint_cost_trades_little_error_for_the_common_mode():
    values, sigma, target = _pairs(200, 12, seed=4)
    weight = 3e-5
    off = solve_subset_sum(values, target, sigma_s=sigma)
    on = solve_subset_sum(values, target, sigma_s=sigma, common_mode_weight=weight)
    common = lambda r: np.sum(np.where(r.mask, np.abs(values), 0.0), axis=1)
    # measured (pairs of 2 x 12): median G+ + G- 1.21e-3 -> 5.1e-4 S, rms error 3.2e-11 -> 2.8e-9 S,
    # 0.02 of a half-closed pool's calibration uncertainty (1.4e-7 S)
    assert np.median(common(on)) < 0.5 * np.median(common(off))
    # optimality: the error given up is at most what the common mode saved is worth
    assert np.all(np.abs(on.error_s) <= np.abs(off.error_s) + weight * (common(off) - common(on)) + 1e-18)
    assert np.sqrt(np.mean(on.error_s**2)) < 0.04 * np.median(sigma) * np.sqrt(12)


def test_joint_cost_on_the_reduction_path_lowers_the_common_mode():
    values, sigma, target = _pairs(6, 24, seed=5)  # 48 usable values: beyond MAX_EXACT_BRANCHES
    off = solve_subset_sum(values, target, sigma_s=sigma)
    on = solve_subset_sum(values, target, sigma_s=sigma, common_mode_weight=3e-5)
    common = lambda r: np.sum(np.where(r.mask, np.abs(values), 0.0), axis=1)
    assert np.all(on.status == 2) and np.median(common(on)) < 0.7 * np.median(common(off))


@pytest.mark.parametrize("kwargs, match", [
    ({"common_mode_weight": -1e-5}, ">= 0"),
    ({"common_mode_weight": 1.0}, "< 1"),
])
def test_common_mode_weight_is_validated(kwargs, match):
    with pytest.raises(OptimizerError, match=f"common_mode_weight.*{match}"):
        solve_subset_sum(np.ones(4), 1.0, **kwargs)


def test_joint_cost_weight_is_dimensionless():
    """The same weight chooses the same subsets at any conductance scale (siemens per siemens)."""
    values, sigma, target = _pairs(50, 8, seed=6)
    masks = [solve_subset_sum(k * values, k * target, sigma_s=k * sigma, common_mode_weight=3e-5).mask
             for k in (1.0, 2.0**-10)]  # a power of two: the scaled sums are exact
    plain = solve_subset_sum(values, target, sigma_s=sigma).mask
    assert np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], plain)  # and the weight does choose
