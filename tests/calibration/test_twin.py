"""The wiring twin's solves and fit, against plain solves of the circuit (crossbar_ctl.core.circuit is
itself checked against a dense solve and ngspice)."""

import numpy as np
import pytest

from calibration import TwinParameters
from calibration._twin import (
    TWIN_RESISTANCES,
    fit_twin,
    network_col_current_a,
    row_step_conductance,
    solve_row_step,
    twin_bounds_ohm,
)
from crossbar_ctl.core.circuit import CrossbarCircuit, merge_threshold_ohm

TWIN = TwinParameters(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.7, sense_resistance_ohm=10.0)


def oracle(g, volts, twin=TWIN, **lines):
    return CrossbarCircuit(g, row_wire_resistance_ohm=twin.row_wire_resistance_ohm,
                           col_wire_resistance_ohm=twin.col_wire_resistance_ohm,
                           sense_resistance_ohm=twin.sense_resistance_ohm,
                           driver_resistance_ohm=twin.driver_resistance_ohm, **lines).solve(volts).col_current_a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_matches_the_circuit_solver(seed):
    rng = np.random.default_rng(seed)
    g = rng.uniform(5e-5, 1.5e-4, (12, 9))
    g[rng.random(g.shape) < 0.6] = 0.0
    volts = rng.uniform(0, 1, (3, 12))
    reference = oracle(g, volts)
    np.testing.assert_allclose(network_col_current_a(g, volts, TWIN), reference,
                               rtol=0, atol=1e-12 * np.abs(reference).max())
    rows_on, cols_on = rng.random(12) < 0.7, rng.random(9) < 0.7
    reference = oracle(g, volts, row_connected=rows_on, col_connected=cols_on)
    mine = network_col_current_a(g, volts, TWIN, row_connected=rows_on, col_connected=cols_on)
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-12 * np.abs(reference).max())


@pytest.mark.parametrize("twin", [TWIN, TWIN.model_copy(update={"driver_resistance_ohm": 2.0})])
def test_row_step_closed_form_is_exact(twin):
    rng = np.random.default_rng(3)
    g = np.zeros((16, 10))
    g[5] = rng.uniform(5e-5, 1.5e-4, 10)
    volts = np.zeros(16)
    volts[5] = 0.5
    current = oracle(g, volts, twin)[0]
    np.testing.assert_allclose(row_step_conductance(current, 0.5, 5, twin, 16), g[5], rtol=1e-12)


def test_row_step_with_stuck_cells_elsewhere():
    rng = np.random.default_rng(4)
    steps = rng.uniform(5e-5, 1.5e-4, (3, 10))
    others = np.zeros((16, 10))
    others[9, 3] = others[2, 7] = others[5, 4] = 1e-4
    volts = np.zeros(16)
    volts[5] = 0.5
    truth = steps + others[5]
    current = np.array([oracle(np.where(np.arange(16)[:, None] == 5, t, others), volts)[0] for t in truth])
    naive = row_step_conductance(current, 0.5, 5, TWIN, 16)
    assert np.max(np.abs(naive / truth - 1)) > 1e-4  # the stuck cells matter...
    solved = solve_row_step(current, 5, 0.5, TWIN, others, naive)
    np.testing.assert_allclose(solved, truth, rtol=1e-9)  # ...and are accounted for


def fit_patterns(g, truth, gain=1.0):
    """Residuals of four multi-cell patterns read on ``g`` through ``truth`` (times ``gain``)."""
    patterns = []
    for rows in (slice(0, 4), slice(12, 16)):
        mask = np.zeros((16, 16))
        mask[rows, ::2] = 1
        volts = np.zeros(16)
        volts[rows] = 0.3
        patterns.append((g * mask, volts))
    for row in (0, 15):
        mask = np.zeros((16, 16))
        mask[row, 8:] = 1
        volts = np.zeros(16)
        volts[row] = 0.5
        patterns.append((g * mask, volts))
    measured = [gain * oracle(cells, volts, truth)[0] for cells, volts in patterns]

    def residuals(twin):
        return np.concatenate([(m - network_col_current_a(c, v, twin)[0]) / 1e-9
                               for m, (c, v) in zip(measured, patterns)])

    return residuals


START = TwinParameters(row_wire_resistance_ohm=0.1, col_wire_resistance_ohm=0.1,
                       sense_resistance_ohm=1.0)


@pytest.mark.parametrize("bounded", [False, True])
def test_fit_recovers_the_wiring(bounded):
    rng = np.random.default_rng(5)
    branches = rng.uniform(5e-5, 1.5e-4, (16, 16, 3))
    fitted, covariance = fit_twin(fit_patterns(branches[:, :, 0], TWIN), START,
                                  conductance_s=branches if bounded else None)
    assert fitted.row_wire_resistance_ohm == pytest.approx(0.5, rel=1e-4)
    assert fitted.col_wire_resistance_ohm == pytest.approx(0.7, rel=1e-4)
    assert fitted.sense_resistance_ohm == pytest.approx(10.0, rel=1e-4)
    assert covariance.shape == (4, 4)  # row, col, sense, driver


def test_bounds_come_from_the_apparent_branches():
    g = np.full((2, 3, 4), 1e-4)
    g[1, 2] = [2e-4, 1e-4, np.nan, np.inf]  # unread or unreadable branches are ignored
    zero_below, upper = twin_bounds_ohm(g)
    assert zero_below == merge_threshold_ohm(np.array([4e-4, 3e-4]))
    assert upper == 1.0 / 2e-4
    assert twin_bounds_ohm(None) == twin_bounds_ohm(np.zeros((2, 2, 2))) == (0.0, np.inf)


def test_fit_reports_a_wire_below_the_merge_threshold_as_zero():
    """Ideal column wires: least squares stops a few nano-ohm above the bound (1.2e-8 ohm here),
    which no circuit of the array resolves (merge threshold 2.3e-8 ohm): reported as 0."""
    rng = np.random.default_rng(5)
    branches = rng.uniform(5e-5, 1.5e-4, (16, 16, 3))
    truth = TWIN.model_copy(update={"col_wire_resistance_ohm": 0.0})
    residuals = fit_patterns(branches[:, :, 0], truth)
    zero_below, _ = twin_bounds_ohm(branches)
    assert 2e-8 < zero_below < 3e-8
    fitted, _ = fit_twin(residuals, START, conductance_s=branches)
    assert fitted.col_wire_resistance_ohm == 0.0
    assert fitted.row_wire_resistance_ohm == pytest.approx(0.5, rel=1e-6)
    assert fitted.sense_resistance_ohm == pytest.approx(10.0, rel=1e-6)


def test_fit_stays_in_the_physical_range():
    """Readings 10x below any plausible wiring (a gain error, say): unbounded, least squares
    explained them with an 18 kOhm sense resistance, more than the smallest branch's whole path
    (6.7 kOhm); bounded, every resistance stays within [0, that path]."""
    rng = np.random.default_rng(5)
    branches = rng.uniform(5e-5, 1.5e-4, (16, 16, 3))
    residuals = fit_patterns(branches[:, :, 0], TWIN, gain=0.1)
    _, upper = twin_bounds_ohm(branches)
    free, _ = fit_twin(residuals, START)
    assert free.sense_resistance_ohm > 2 * upper
    fitted, _ = fit_twin(residuals, START, conductance_s=branches)
    values = [fitted.row_wire_resistance_ohm, fitted.col_wire_resistance_ohm,
              fitted.sense_resistance_ohm]
    assert all(0.0 <= value <= upper for value in values)
    assert max(values) == pytest.approx(upper, rel=1e-6)  # the bound holds it


def test_a_fitted_wire_of_5e_16_ohm_predicts_like_an_ideal_one():
    """The twin a calibration of a 4x4x3 array fitted (column wire 5e-16 ohm): its network once
    stopped with 'Factor is exactly singular'."""
    g = np.zeros((4, 4))
    g[:, 0] = [9.3127e-5, 1.156e-4, 1.7146e-4, 1.1058e-4]
    twin = TwinParameters(row_wire_resistance_ohm=0.5596, col_wire_resistance_ohm=5.135e-16,
                          sense_resistance_ohm=10.923)
    ideal = twin.model_copy(update={"col_wire_resistance_ohm": 0.0})
    volts = np.eye(4)
    np.testing.assert_array_equal(network_col_current_a(g, volts, twin),
                                  network_col_current_a(g, volts, ideal))


def test_slopes_on_a_cheaper_model_reach_the_exact_fit_with_a_fraction_of_its_calls():
    """The readings carry a stuck cell that the slopes' model leaves out (calibration takes its
    slopes without the stuck cells' network solves): the fit lands where the exact model's own
    finite differences take it, calling the exact model once per step instead of five times."""
    rng = np.random.default_rng(5)
    g = rng.uniform(5e-5, 1.5e-4, (16, 16))
    stuck = np.zeros((16, 16))
    stuck[6, 2] = 1e-4  # closed in every pattern, between the blocks' rows: shares column 2
    patterns = []
    for rows, volts_v in ((slice(0, 4), 0.3), (slice(12, 16), 0.3), (slice(0, 1), 0.5), (slice(15, 16), 0.5)):
        mask = np.zeros((16, 16))
        mask[rows, ::2] = 1
        volts = np.zeros(16)
        volts[rows] = volts_v
        patterns.append((g * mask, volts))
    measured = [oracle(cells + stuck, volts)[0] for cells, volts in patterns]
    calls = [0]

    def model(with_stuck):
        def residuals(twin):
            calls[0] += with_stuck
            return np.concatenate([(m - network_col_current_a(cells + with_stuck * stuck, volts, twin)[0]) / 1e-9
                                   for m, (cells, volts) in zip(measured, patterns)])
        return residuals

    reference, reference_cov = fit_twin(model(True), START)
    default_calls, calls[0] = calls[0], 0
    fitted, covariance = fit_twin(model(True), START, slope_residuals=model(False))
    assert calls[0] <= default_calls / 3
    assert model(False)(fitted).std() > 10 * model(True)(fitted).std()  # the stuck cell matters
    sigma = np.sqrt(np.diag(reference_cov))
    for k, name in enumerate(TWIN_RESISTANCES[:3]):  # the driver is pinned at 0 here
        assert getattr(fitted, name) == pytest.approx(getattr(TWIN, name), rel=1e-3)
        assert abs(getattr(fitted, name) - getattr(reference, name)) < 0.05 * sigma[k]
    np.testing.assert_allclose(np.sqrt(np.diag(covariance)), sigma, rtol=0.15)  # 10 % here, 0.4 % on the demo
    wrong, _ = fit_twin(model(True), START, slope_residuals=lambda twin: -model(False)(twin))
    assert wrong.sense_resistance_ohm != pytest.approx(10.0, rel=1e-2)  # the slopes do steer it
