"""Board physics, devices, noise and environment groups: each effect moves the simulator's reading
the way the physics says (sign, size, scaling), is off on ``ideal`` and never changes the draws of
the resistors, switches, drift or noise."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.circuit import CrossbarCircuit
from crossbar_ctl.core.config import SimArrayConfig
from drivers import open_transport
from drivers._board import SETTLE_TIME_CONSTANTS, SwitchBoard
from sim import SimLab
from sim._array import PhysicalArray, flicker_variance_ratio
from sim._physics import PROFILES

# No noise and a fine ADC: a reading is the circuit's current to ~1e-9 relative.
QUIET = dict(relative_noise=0.0, noise_floor_fraction=0.0, adc_bits=32)
# No wires, sense or switch: a cell's current is exactly V / R.
BARE = dict(row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0, sense_resistance_ohm=0.0,
            switch_on_resistance_ohm=0.0)


def make_lab(*, physics: dict | None = None, rows: int = 16, cols: int = 16, branches: int = 1,
             **fields) -> SimLab:
    config = SimArrayConfig(rows=rows, cols=cols, branches=branches, seed=3, profile="ideal",
                            physics=physics or {}, **{**QUIET, **fields})
    return SimLab(config)


def cell_currents_a(lab: SimLab, voltage_v: float = 1.0) -> np.ndarray:
    """Every cell's current read on the board: one row driven at a time, ``(rows, cols)``."""
    rows = lab.config.rows
    return np.stack([lab.board.read_columns(voltage_v * (np.arange(rows) == row))
                     for row in range(rows)])


def closed_lab(**kwargs) -> SimLab:
    lab = make_lab(**kwargs)
    lab.array.set_masks(np.ones((lab.config.rows, lab.config.cols), dtype=np.uint64))
    return lab


# ---- devices: TCR spread -----------------------------------------------------------------------

def apparent_tcr_per_k(spread_per_k: float) -> np.ndarray:
    """Each resistor's TCR as the board reads it between 25 and 35 degC, 1/K."""
    lab = closed_lab(physics={"devices": {"tcr_spread_per_k": spread_per_k}}, **BARE)
    cold = cell_currents_a(lab)
    lab.array.temperature_c = 35.0
    hot = cell_currents_a(lab)
    return (cold / hot - 1.0) / 10.0


def test_tcr_spread_gives_each_resistor_its_own_temperature_coefficient() -> None:
    tcr = SimArrayConfig().tcr_per_k
    ideal = apparent_tcr_per_k(0.0)
    np.testing.assert_allclose(ideal, tcr, atol=1e-9)  # one TCR shared by all (32-bit ADC)
    spread = apparent_tcr_per_k(1e-5)
    assert abs(spread.mean() - tcr) < 3e-5 / 16  # 3 standard errors of 256 draws
    assert 0.8e-5 < (spread - tcr).std() < 1.2e-5
    # Twice the spread: each resistor's deviation doubles (the same draws).
    np.testing.assert_allclose(apparent_tcr_per_k(2e-5) - tcr, 2 * (spread - tcr), atol=2e-9)


# ---- devices: drift rate per resistor ---------------------------------------------------------

def log_drift(spread: float) -> np.ndarray:
    """log(R(100 h) / R(0)) of every resistor, from the board's readings."""
    lab = closed_lab(physics={"devices": {"drift_rate_spread": spread}}, drift_per_hour=1e-3, **BARE)
    start = cell_currents_a(lab)
    lab.advance_time(100 * 3600.0)
    lab.sync_time()
    return np.log(start / cell_currents_a(lab))


def test_drift_rate_spread_gives_each_resistor_its_own_drift_rate() -> None:
    common = log_drift(0.0)
    assert 0.8e-2 < common.std() < 1.2e-2  # 1e-3 / h over 100 h
    for spread in (0.3, 0.6):
        rate = log_drift(spread) / common  # the same drift draws, scaled per resistor
        assert 0.85 * spread < np.log(rate).std() < 1.15 * spread
        assert abs(rate.mean() - 1.0) < 3 * spread / 16  # mean rate is the configured one
    # Twice the spread: each resistor's log rate (about its mean, -spread^2 / 2) doubles.
    np.testing.assert_allclose(np.log(log_drift(0.6) / common) + 0.18,
                               2 * (np.log(log_drift(0.3) / common) + 0.045), atol=1e-4)


# ---- devices: on-resistance flatness ----------------------------------------------------------

def exact_flat_currents_a(lab: SimLab, voltage_v: np.ndarray, k_per_v: float) -> np.ndarray:
    """Column currents with R_on(v) = R_on0 (1 + k |v|), solved to self-consistency (the oracle)."""
    array, cfg = lab.array, lab.config
    resistance = array.resistance_ohm()
    row_v = np.broadcast_to(voltage_v[:, None], (cfg.rows, cfg.cols))
    for _ in range(8):
        on_ohm = array.switch_on_resistance_ohm * (1 + k_per_v * np.abs(row_v))[..., None]
        g = np.where(array.closed(), 1 / (resistance + on_ohm), cfg.switch_off_conductance_s).sum(2)
        circuit = CrossbarCircuit(g, row_wire_resistance_ohm=cfg.row_wire_resistance_ohm,
                                  col_wire_resistance_ohm=cfg.col_wire_resistance_ohm,
                                  sense_resistance_ohm=cfg.sense_resistance_ohm)
        solution = circuit.solve(voltage_v)
        row_v = solution.row_node_voltage_v[0]
    return solution.col_current_a[0]


@pytest.mark.parametrize("k_per_v", [0.05, 0.1])
def test_on_resistance_flatness_makes_the_board_mvm_nonlinear(k_per_v: float) -> None:
    config = dict(rows=8, cols=6, branches=3, switch_on_resistance_ohm=500.0)
    flat = make_lab(physics={"devices": {"on_resistance_flatness_per_v": k_per_v}}, **config)
    linear = make_lab(**config)
    masks = np.random.default_rng(1).integers(1, 8, size=(8, 6))
    for lab in (flat, linear):
        lab.array.set_masks(masks)
    voltage_v = np.linspace(-1.0, 1.0, 8)
    effect = flat.board.read_columns(voltage_v) - linear.board.read_columns(voltage_v)
    exact = exact_flat_currents_a(flat, voltage_v, k_per_v) - linear.board.read_columns(voltage_v)
    # Size: the first-order solve agrees with the exact self-consistent one to 1 % of the effect.
    np.testing.assert_allclose(effect, exact, rtol=1e-2)
    # Sign and scaling: every row pushes less current than the linear array, as V |V|.
    rows = [flat.board.read_columns(v * (np.arange(8) == 7)) - linear.board.read_columns(
        v * (np.arange(8) == 7)) for v in (0.5, 1.0, -1.0)]
    assert np.all(rows[1] < 0) and np.all(rows[2] > 0)
    np.testing.assert_allclose(rows[1], 4 * rows[0], rtol=1e-3)
    np.testing.assert_allclose(rows[2], -rows[1], rtol=1e-6)


def test_on_resistance_flatness_reaches_the_smu_path() -> None:
    currents = {}
    for k_per_v in (0.0, 0.1, 0.2):
        lab = make_lab(physics={"devices": {"on_resistance_flatness_per_v": k_per_v}}, rows=4,
                       cols=3, switch_on_resistance_ohm=500.0, switch_on_spread=0.0)
        lab.array.set_mask(2, 1, 1)
        lab.board.row_routes[2], lab.board.col_routes[1] = "SRC", "SENSE"
        lab.board.version += 1
        lab.smu.output_on, lab.smu.limit_a = True, 1e-3
        currents[k_per_v] = lab.smu.measure(np.array([0.5, 1.0])).current_a
    voltage_v = np.array([0.5, 1.0])
    path_ohm = voltage_v / currents[0.0] - 500.0  # resistor, wires and sense in series
    for k_per_v in (0.1, 0.2):
        loss = currents[0.0] - currents[k_per_v]
        # V / (R + R_on (1 + k |V|)): within 1 % (the first order's k V R_on g ~ 0.5 %).
        exact = currents[0.0] - voltage_v / (path_ohm + 500.0 * (1 + k_per_v * voltage_v))
        np.testing.assert_allclose(loss, exact, rtol=1e-2)
        assert loss[1] / loss[0] == pytest.approx(4, rel=1e-2)  # as V |V|


# ---- devices: settling after a switch write ----------------------------------------------------

TAU_S = 2e-3


def settling_lab(**kwargs) -> SimLab:
    return make_lab(physics={"devices": {"settling_time_s": TAU_S}}, rows=2, cols=2, **BARE,
                    drift_per_hour=0.0, **kwargs)


def settled_fraction(lab: SimLab, wait_s: float, nplc: float, mask: int = 1) -> float:
    """One MVM of cell (0, 0), ``wait_s`` after writing ``mask``, over its settled reading."""
    board = lab.board
    assert board.feed(f"ADCNPLC {nplc}\n".encode()) == b"OK\n"
    assert board.feed(f"SET 0 0 {mask}\n".encode()) == b"OK\n"
    if wait_s:
        assert board.feed(f"WAIT {wait_s:.9g}\n".encode()) == b"OK\n"
    early = board.read_columns(np.array([1.0, 0.0]))[0]
    board.feed(b"WAIT 1\n")
    return early / board.read_columns(np.array([1.0, 0.0]))[0]


def test_a_reading_right_after_a_switch_write_is_off_and_decays_with_the_time_constant() -> None:
    lab = settling_lab()
    assert lab.board.feed(b"CAP?\n") == b"OK MVM BATCH SETTLE\n"
    assert lab.board.feed(b"SETTLE?\n") == b"OK 0.002\n"
    nplc = 0.01
    window = -np.expm1(-nplc / 60 / TAU_S) / (nplc / 60 / TAU_S)  # the integration's average
    errors = []
    for wait_taus in (0.0, 1.0, 2.0, 4.0):
        lab.board.feed(b"SET 0 0 0\n")
        lab.board.feed(b"WAIT 1\n")
        fraction = settled_fraction(lab, wait_taus * TAU_S, nplc)
        # A newly closed switch conducts 1 - exp(-t / tau) of its current: the reading is low.
        np.testing.assert_allclose(1 - fraction, np.exp(-wait_taus) * window, rtol=1e-6)
        errors.append(1 - fraction)
    np.testing.assert_allclose(errors[2] / errors[1], np.exp(-1), rtol=1e-6)
    # A longer integration averages the transient: at 1 NPLC the first reading is low by tau / T.
    lab.board.feed(b"SET 0 0 0\n")
    lab.board.feed(b"WAIT 1\n")
    np.testing.assert_allclose(1 - settled_fraction(lab, 0.0, 1.0),
                               TAU_S * 60 * -np.expm1(-1 / 60 / TAU_S), rtol=1e-6)


def test_a_newly_opened_switch_still_conducts_and_ideal_boards_do_not_settle() -> None:
    lab = settling_lab()
    settled_fraction(lab, 0.0, 0.01)  # closed and settled
    board = lab.board
    board.feed(b"SET 0 0 0\n")
    leak = lab.config.switch_off_conductance_s
    early = board.read_columns(np.array([1.0, 0.0]))[0]
    g = lab.array.branch_conductance_s()[0, 0, 0]
    window = -np.expm1(-0.01 / 60 / TAU_S) / (0.01 / 60 / TAU_S)
    np.testing.assert_allclose(early, leak + (g - leak) * window, rtol=1e-6)
    # Closed again and opened one tau later: it starts back from 1 - exp(-1), not from 1.
    board.feed(b"WAIT 1\n")
    board.feed(b"SET 0 0 1\n")
    board.feed(f"WAIT {TAU_S}\n".encode())
    board.feed(b"SET 0 0 0\n")
    early = board.read_columns(np.array([1.0, 0.0]))[0]
    np.testing.assert_allclose(early, leak + (g - leak) * -np.expm1(-1) * window, rtol=1e-6)
    ideal = make_lab(rows=2, cols=2, drift_per_hour=0.0, **BARE)
    assert ideal.board.feed(b"CAP?\n") == b"OK MVM BATCH\n"
    assert settled_fraction(ideal, 0.0, 0.01) == 1.0


def test_settling_reaches_the_smu_path_point_by_point() -> None:
    lab = settling_lab()
    lab.board.row_routes[0], lab.board.col_routes[0] = "SRC", "SENSE"
    lab.board.version += 1
    smu = lab.smu
    smu.output_on, smu.limit_a, smu.nplc = True, 1e-3, 0.01
    lab.array.set_mask(0, 0, 1)
    current = smu.measure(np.full(40, 1.0)).current_a
    settled = lab.array.cell_conductance_s()[0, 0]
    step_s = 0.01 / 60
    ends_s = step_s * np.arange(1, 41)
    window = -np.expm1(-step_s / TAU_S) / (step_s / TAU_S)
    np.testing.assert_allclose(1 - current / settled, np.exp(-(ends_s - step_s) / TAU_S) * window,
                               rtol=1e-6, atol=1e-12)


def test_the_board_driver_waits_for_the_switches_to_settle() -> None:
    lab = settling_lab()
    board = SwitchBoard(open_transport("sim://board", devices=lab.devices))
    assert board.settle_s == pytest.approx(SETTLE_TIME_CONSTANTS * TAU_S)
    board.set_adc_nplc(0.01)
    start_s = lab.time_s
    board.set_mask(0, 0, 1)
    assert lab.time_s - start_s == pytest.approx(board.settle_s)
    first = board.mvm([1.0, 0.0])[0]
    board.load_masks(np.array([[0, 1], [1, 1]]))
    board.load_masks(np.array([[1, 1], [1, 1]]))  # two rows loaded, one wait each time
    assert lab.time_s - start_s == pytest.approx(3 * board.settle_s + 0.01 / 60)
    lab.board.feed(b"WAIT 1\n")
    np.testing.assert_allclose(first, board.mvm([1.0, 0.0])[0], rtol=1e-6)
    # An ideal board advertises no settling: the driver sends no WAIT.
    ideal = make_lab(rows=2, cols=2)
    driver = SwitchBoard(open_transport("sim://board", devices=ideal.devices))
    driver.set_mask(0, 0, 1)
    assert driver.settle_s == 0 and ideal.time_s == 0


# ---- noise: white plus 1/f -------------------------------------------------------------------------

def reading_sd_a(corner_hz: float, nplc: float, n: int = 40_000) -> float:
    array = PhysicalArray(SimArrayConfig(rows=1, cols=1, branches=1, seed=5,
                                         physics={"noise": {"flicker_corner_hz": corner_hz}}))
    return float(array.read_noise(np.zeros(n), 1e-3, nplc).std())


def test_flicker_noise_stops_long_integrations_from_gaining_sqrt_time() -> None:
    nplcs = np.array([0.01, 0.02, 1.0, 5.0, 10.0])
    white = np.array([reading_sd_a(0.0, nplc) for nplc in nplcs])
    np.testing.assert_allclose(white, 1e-9 / np.sqrt(nplcs), rtol=0.02)  # floor 1e-6 of 1 mA
    flicker = np.array([reading_sd_a(10.0, nplc) for nplc in nplcs])
    predicted = white * np.sqrt(1 + flicker_variance_ratio(nplcs / 60, 10.0))
    np.testing.assert_allclose(flicker, predicted, rtol=0.02)
    assert 0.69 < flicker[1] / flicker[0] < 0.73  # short: ~1/sqrt(2) per doubling
    assert flicker[4] / flicker[3] > 0.85  # long: twice the time gains < 8 % (white: 29 %)
    # Twice the corner, twice the 1/f variance.
    excess = [reading_sd_a(corner, 10.0) ** 2 - white[4] ** 2 for corner in (10.0, 20.0)]
    assert 1.9 < excess[1] / excess[0] < 2.1


def test_flicker_variance_ratio_is_the_boxcar_integral() -> None:
    from scipy.integrate import quad

    duration_s, corner_hz, low_hz = 0.05, 7.0, 1e-3
    start = np.pi * low_hz * duration_s
    tail = (quad(lambda x: np.sin(x) ** 2 / x**3, start, 1.0, limit=200)[0]
            + quad(lambda x: np.sin(x) ** 2 / x**3, 1.0, np.inf, limit=2000)[0])
    np.testing.assert_allclose(flicker_variance_ratio(duration_s, corner_hz, low_hz),
                               2 * corner_hz * duration_s * tail, rtol=1e-6)


# ---- environment: temperature wander -------------------------------------------------------------

def temperatures_c(wander: float, steps: int = 400, step_s: float = 36.0) -> np.ndarray:
    lab = make_lab(physics={"environment": {"temperature_wander_k_per_sqrt_h": wander}}, rows=2,
                   cols=2)
    found = [lab.array.temperature_c]
    for _ in range(steps):
        lab.advance_time(step_s)
        lab.sync_time()
        found.append(float(lab.board.feed(b"TEMP?\n").split()[1]) if wander == 0 else
                     lab.array.temperature_c)
    return np.array(found)


def test_the_board_temperature_wanders_as_a_random_walk() -> None:
    assert np.all(temperatures_c(0.0) == 25.0)
    walk = temperatures_c(1.0)
    steps = np.diff(walk)
    assert 0.09 < steps.std() < 0.11  # 1 K / sqrt(h) over 36 s: 0.1 K a step
    np.testing.assert_allclose(np.diff(temperatures_c(2.0)), 2 * steps, rtol=1e-9)


def test_temperature_wander_moves_the_readings_through_the_tcrs() -> None:
    lab = closed_lab(physics={"environment": {"temperature_wander_k_per_sqrt_h": 2.0}}, rows=2,
                     cols=2, drift_per_hour=0.0, tcr_per_k=1e-3, **BARE)
    before = cell_currents_a(lab)
    lab.advance_time(3600.0)
    lab.sync_time()
    delta_k = lab.array.temperature_c - 25.0
    assert abs(delta_k) > 0.1
    np.testing.assert_allclose(before / cell_currents_a(lab), 1 + 1e-3 * delta_k, rtol=1e-7)


# ---- every effect: its own stream; ideal keeps today's draws ---------------------------------------

def test_every_effect_draws_from_its_own_stream() -> None:
    base = SimArrayConfig(rows=4, cols=4, branches=3, seed=11, profile="ideal")
    ideal, pcb = PhysicalArray(base), PhysicalArray(base.model_copy(update={"profile": "pcb"}))
    np.testing.assert_array_equal(ideal.resistance_ohm(), pcb.resistance_ohm())
    np.testing.assert_array_equal(ideal.switch_on_resistance_ohm, pcb.switch_on_resistance_ohm)
    # pcb's noise adds flicker on top of the same white draws.
    white = ideal.read_noise(np.zeros(1000), 1e-3, 1.0)
    total = pcb.read_noise(np.zeros(1000), 1e-3, 1.0)
    assert np.corrcoef(white, total)[0, 1] > 0.3 and not np.array_equal(white, total)
    assert PROFILES["ideal"].devices.settling_time_s == 0


def test_wait_and_settle_follow_the_protocol() -> None:
    lab = make_lab(rows=2, cols=2)
    board = lab.board
    assert board.feed(b"SETTLE?\n") == b"OK 0\n"
    for line, reply in ((b"WAIT\n", b"ERR 2 bad argument\n"), (b"WAIT abc\n", b"ERR 2 bad argument\n"),
                        (b"WAIT -1\n", b"ERR 3 out of range\n"), (b"WAIT 11\n", b"ERR 3 out of range\n"),
                        (b"SETTLE? 1\n", b"ERR 2 bad argument\n")):
        assert board.feed(line) == reply
    assert lab.time_s == 0
    assert board.feed(b"wait 2.5e-1\n") == b"OK\n"
    assert lab.time_s == 0.25
