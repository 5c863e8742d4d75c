"""Weighing designs: S-matrices, estimability and the theoretical gain."""

import numpy as np
import pytest

from calibration import design_covariance, design_matrix, s_matrix, theoretical_gain


@pytest.mark.parametrize("order", [3, 7, 11, 15, 19, 23, 31])
def test_s_matrix_structure(order):
    s = s_matrix(order).astype(float)
    assert s.shape == (order, order)
    assert np.all(s.sum(axis=1) == (order + 1) / 2)
    expected = (order + 1) / 4 * (np.eye(order) + np.ones((order, order)))
    np.testing.assert_array_equal(s.T @ s, expected)


def test_no_s_matrix_of_other_orders():
    with pytest.raises(ValueError, match="no S-matrix of order 9"):
        s_matrix(9)


@pytest.mark.parametrize("branches", [1, 2, 3, 4, 8, 13, 16, 20])
def test_every_design_estimates_every_branch(branches):
    for kind in ("single", "s-matrix"):
        d = design_matrix(kind, branches)
        assert d.shape[1] == branches and d.shape[0] >= branches
        assert np.linalg.matrix_rank(d) == branches


def test_additive_noise_gain_is_the_textbook_value():
    # S-matrix of order n under additive noise: variance 4n/(n+1)^2 per reading vs 1.
    for n in (7, 15):
        gain = theoretical_gain(s_matrix(n), np.full(n, 1e-4), noise_rel=0.0, noise_floor_s=1e-9)
        assert gain == pytest.approx((n + 1) ** 2 / (4 * n))


def test_proportional_noise_makes_the_design_lose():
    d = design_matrix("s-matrix", 8)
    assert theoretical_gain(d, np.full(8, 1e-4), noise_rel=1e-4, noise_floor_s=0.0) < 0.5


def test_design_covariance_of_identity_is_the_reading_variance():
    np.testing.assert_allclose(design_covariance(np.eye(4), np.array([1.0, 2.0, 3.0, 4.0])),
                               np.diag([1.0, 2.0, 3.0, 4.0]))


def test_design_kind_is_checked():
    with pytest.raises(ValueError, match="design must be"):
        design_matrix("hadamard", 8)
