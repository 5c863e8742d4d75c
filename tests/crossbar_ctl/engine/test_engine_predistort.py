"""Pre-distortion: the twin's slope against finite differences, the pair search against brute force."""

import numpy as np

from calibration import TwinParameters
from crossbar_ctl.engine._predistort import refine_pairs, subset_sums, twin_response
from crossbar_ctl.engine._twin import twin_transfer

WIRES = TwinParameters(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.7, sense_resistance_ohm=10.0)


def test_slope_is_the_derivative_of_the_transfer():
    g = np.random.default_rng(0).uniform(2e-4, 6e-4, size=(5, 4))
    transfer, slope = twin_response(WIRES, g)
    np.testing.assert_allclose(transfer, twin_transfer(WIRES, g), rtol=1e-10)
    step = 1e-9
    for i, j in [(0, 0), (4, 3), (2, 1)]:
        bumped = g.copy()
        bumped[i, j] += step
        numeric = (twin_transfer(WIRES, bumped)[i, j] - transfer[i, j]) / step
        assert abs(numeric - slope[i, j]) < 1e-5 * abs(slope[i, j])
    assert np.all((slope > 0.9) & (slope < 1.0))


def test_subset_sums_mark_unusable_subsets():
    values = np.array([[1.0, 2.0, 4.0]])
    usable = np.array([[True, False, True]])
    sums = subset_sums(values, usable)
    np.testing.assert_array_equal(sums[0, [0, 1, 4, 5]], [0, 1, 4, 5])
    assert np.isnan(sums[0, [2, 3, 6, 7]]).all()


def test_pair_search_matches_brute_force():
    rng = np.random.default_rng(1)
    cells, n = 30, 5
    plus = {"sums": subset_sums(rng.uniform(1, 2, (cells, n)), rng.random((cells, n)) > 0.2),
            "g0": rng.uniform(2, 4, cells), "t0": rng.uniform(1, 3, cells), "slope": rng.uniform(0.8, 1, cells)}
    minus = {"sums": subset_sums(rng.uniform(1, 2, (cells, n)), np.ones((cells, n), bool)),
             "g0": rng.uniform(2, 4, cells), "t0": rng.uniform(1, 3, cells), "slope": rng.uniform(0.8, 1, cells)}
    target = rng.uniform(-2, 2, cells)
    for locality in (0.0, 0.05):
        a, b, predicted = refine_pairs(target, plus, minus, locality=locality)
        for c in range(cells):
            x = plus["t0"][c] + plus["slope"][c] * (plus["sums"][c] - plus["g0"][c])
            y = minus["t0"][c] + minus["slope"][c] * (minus["sums"][c] - minus["g0"][c])
            score = (np.abs(x[:, None] - y[None, :] - target[c])
                     + locality * (np.abs(plus["sums"][c] - plus["g0"][c])[:, None]
                                   + np.abs(minus["sums"][c] - minus["g0"][c])[None, :]))
            got = score[a[c], b[c]]
            assert np.isfinite(got)
            if locality == 0.0:  # nearest neighbours are exact for the pure error
                assert got <= np.nanmin(score) + 1e-12
            else:  # with a locality penalty only the two nearest minus subsets per plus subset are scored
                assert got <= np.nanmin(np.abs(x[:, None] - y[None, :] - target[c])) + locality * 10
            assert predicted[c] == x[a[c]] - y[b[c]]
