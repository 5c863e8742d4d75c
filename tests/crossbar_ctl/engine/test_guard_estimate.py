"""The drift guard's estimate of a layer's median error, its read noise taken out."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.engine._guard import HALF_NORMAL_MEDIAN, median_scale


@pytest.mark.parametrize("noise_ratio", [0.0, 0.5, 1.0])
def test_median_scale_takes_the_read_noise_out(noise_ratio):
    rng = np.random.default_rng(3)
    true = rng.normal(0.0, 1.0, size=20_000)
    read = true + rng.normal(0.0, noise_ratio, size=true.size)
    assert median_scale(read, noise_ratio**2) == pytest.approx(np.median(np.abs(true)), rel=0.03)
    if noise_ratio:  # left in, the noise reads as lost precision
        assert median_scale(read) > 1.05 * np.median(np.abs(true))


def test_median_scale_of_noise_alone_is_zero_and_of_nothing_is_zero():
    rng = np.random.default_rng(4)
    assert median_scale(rng.normal(0.0, 1.0, size=1000), 1.2) == 0.0
    assert median_scale(np.array([])) == 0.0
    assert HALF_NORMAL_MEDIAN == pytest.approx(np.median(np.abs(rng.normal(size=200_000))), rel=0.01)
