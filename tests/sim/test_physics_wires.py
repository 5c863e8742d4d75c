"""Board physics, wires group: segment scatter, line variation, length, cell contacts, drivers and
sense inputs move the simulator's reading the way the physics says (sign, size, scaling), are off
on ``ideal`` (the configured scalar circuit) and never change the other streams' draws.

Every reading is the board's MVM with one row (or every row) driven, on a quiet board (no noise,
no drift, a 32-bit ADC: a reading is the circuit's current to ~1e-9 relative). A series
resistance is inferred from a reading against the true cell conductance.
"""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.circuit import CrossbarCircuit
from crossbar_ctl.core.config import SimArrayConfig
from sim import SimLab
from sim._physics import PROFILES

QUIET = dict(relative_noise=0.0, noise_floor_fraction=0.0, adc_bits=32, drift_per_hour=0.0)
NO_WIRES = dict(row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0, sense_resistance_ohm=0.0)
ROW_WIRES = dict(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.0, sense_resistance_ohm=0.0)
COL_WIRES = dict(row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.5, sense_resistance_ohm=0.0)


def make_lab(wires: dict | None = None, *, rows: int = 16, cols: int = 16, branches: int = 1,
             masks=None, **fields) -> SimLab:
    """A quiet ``ideal`` board with ``wires`` overrides; every branch closed unless ``masks``."""
    config = SimArrayConfig(rows=rows, cols=cols, branches=branches, seed=5, profile="ideal",
                            physics={"wires": wires or {}}, **{**QUIET, **fields})
    lab = SimLab(config)
    if masks is None:
        masks = np.full((rows, cols), (1 << branches) - 1, dtype=np.uint64)
    lab.array.set_masks(masks)
    return lab


def cell_currents_a(lab: SimLab, voltage_v: float = 1.0) -> np.ndarray:
    """Every cell's current read on the board, one row driven at a time, ``(rows, cols)``."""
    rows = lab.config.rows
    return np.stack([lab.board.read_columns(voltage_v * (np.arange(rows) == row))
                     for row in range(rows)])


def relative_sd(values: np.ndarray) -> float:
    return float(np.std(values / np.mean(values) - 1.0))


# ---- ideal: the configured scalars; the other streams untouched -------------------------------

def test_ideal_builds_the_configured_scalar_circuit() -> None:
    lab = make_lab()
    config, circuit = lab.config, lab.array.circuit()
    assert circuit.row_wire_resistance_ohm == config.row_wire_resistance_ohm
    assert circuit.col_wire_resistance_ohm == config.col_wire_resistance_ohm
    assert circuit.sense_resistance_ohm == config.sense_resistance_ohm
    assert circuit.driver_resistance_ohm == 0.0
    np.testing.assert_array_equal(circuit.conductance_s, lab.array.cell_conductance_s())
    plain = CrossbarCircuit(lab.array.cell_conductance_s(),
                            row_wire_resistance_ohm=config.row_wire_resistance_ohm,
                            col_wire_resistance_ohm=config.col_wire_resistance_ohm,
                            sense_resistance_ohm=config.sense_resistance_ohm)
    v = np.random.default_rng(0).uniform(-1, 1, (3, 16))
    np.testing.assert_array_equal(circuit.solve(v).col_current_a, plain.solve(v).col_current_a)


def test_wires_draw_from_their_own_stream() -> None:
    pcb_wires = PROFILES["pcb"].wires.model_dump()
    ideal = make_lab(drift_per_hour=1e-3)
    wired = make_lab(pcb_wires, drift_per_hour=1e-3)
    for lab in (ideal, wired):
        lab.array.advance_time(3600.0)
    np.testing.assert_array_equal(ideal.array.resistance_ohm(), wired.array.resistance_ohm())
    np.testing.assert_array_equal(ideal.array.switch_on_resistance_ohm,
                                  wired.array.switch_on_resistance_ohm)
    current = np.full(8, 1e-4)
    np.testing.assert_array_equal(ideal.array.read_noise(current, 1e-3, 1.0),
                                  wired.array.read_noise(current, 1e-3, 1.0))
    # The other groups leave the wire draws alone: the pcb board has these very wires.
    config = SimArrayConfig(rows=16, cols=16, branches=1, seed=5, profile="pcb")
    pcb = SimLab(config).array
    pcb.set_masks(wired.array.masks)
    for name in ("row_wire_resistance_ohm", "col_wire_resistance_ohm", "sense_resistance_ohm",
                 "driver_resistance_ohm"):
        np.testing.assert_array_equal(getattr(pcb.circuit(), name),
                                      getattr(wired.array.circuit(), name))


# ---- drivers: the row's current falls in proportion ------------------------------------------

def inferred_driver_ohm(lab: SimLab, ideal_a: np.ndarray) -> np.ndarray:
    """Each row's driver resistance from its readings: I = I_ideal / (1 + R_d sum_j G_ij)."""
    ratio = cell_currents_a(lab) / ideal_a
    # Every current of a row falls by the same factor: the drop is the driver's, before the cells.
    assert np.ptp(ratio, axis=1).max() < 1e-8
    return (1.0 / ratio[:, 0] - 1.0) / lab.array.cell_conductance_s().sum(axis=1)


def test_driver_output_resistance_lowers_every_current_of_its_row_in_proportion() -> None:
    shape = dict(rows=64, cols=8, **NO_WIRES)
    ideal_a = cell_currents_a(make_lab(**shape))
    g_row = make_lab(**shape).array.cell_conductance_s().sum(axis=1)
    plain = make_lab({"driver_output_resistance_ohm": 10.0}, **shape)
    loss = 1.0 - cell_currents_a(plain)[:, 0] / ideal_a[:, 0]
    assert np.all(loss > 0)  # sign: a series resistance takes current away
    np.testing.assert_allclose(loss, 10.0 * g_row / (1.0 + 10.0 * g_row), rtol=1e-6)  # size
    np.testing.assert_allclose(inferred_driver_ohm(plain, ideal_a), 10.0, rtol=1e-6)
    # Doubling the resistance doubles the loss (to first order in R_d G, ~8e-3 here).
    doubled = make_lab({"driver_output_resistance_ohm": 20.0}, **shape)
    loss2 = 1.0 - cell_currents_a(doubled)[:, 0] / ideal_a[:, 0]
    np.testing.assert_allclose(loss2 / loss, 2.0 * (1.0 + 10.0 * g_row) / (1.0 + 20.0 * g_row),
                               rtol=1e-6)
    assert np.all((loss2 / loss > 1.97) & (loss2 / loss < 2.0))
    # The spread: each row its own driver, mean as configured, relative sd as configured.
    spread = inferred_driver_ohm(make_lab({"driver_output_resistance_ohm": 10.0,
                                           "driver_spread": 0.1}, **shape), ideal_a)
    assert abs(spread.mean() / 10.0 - 1.0) < 3 * 0.1 / np.sqrt(64)
    assert 0.08 < relative_sd(spread) < 0.12
    half = inferred_driver_ohm(make_lab({"driver_output_resistance_ohm": 10.0,
                                         "driver_spread": 0.05}, **shape), ideal_a)
    assert np.std(spread - 10.0) / np.std(half - 10.0) == pytest.approx(2.0, rel=0.05)


# ---- sense inputs: each column's current falls with its own resistance -------------------------

def inferred_sense_ohm(wires: dict) -> np.ndarray:
    """Each column's sense resistance from one MVM, every row at 0.5 V and ideal wires:
    ``I_j = 0.5 sum_i G_ij / (1 + R_s,j sum_i G_ij)``."""
    lab = make_lab(wires, rows=16, cols=64, row_wire_resistance_ohm=0.0,
                   col_wire_resistance_ohm=0.0, sense_resistance_ohm=10.0)
    g_col = lab.array.cell_conductance_s().sum(axis=0)
    reading = lab.board.read_columns(np.full(16, 0.5))
    return (0.5 * g_col / reading - 1.0) / g_col


def test_sense_spread_gives_each_column_its_own_input_resistance() -> None:
    np.testing.assert_allclose(inferred_sense_ohm({}), 10.0, rtol=1e-5)  # the configured value
    spread = inferred_sense_ohm({"sense_spread": 0.02})
    assert abs(spread.mean() / 10.0 - 1.0) < 3 * 0.02 / np.sqrt(64)
    assert 0.016 < relative_sd(spread) < 0.024
    doubled = inferred_sense_ohm({"sense_spread": 0.04})
    assert np.std(doubled - 10.0) / np.std(spread - 10.0) == pytest.approx(2.0, rel=0.05)


# ---- cell contacts: G / (1 + G R_c), not additive over branches --------------------------------

def contact_lab(wires: dict) -> SimLab:
    """8 branches a cell, ideal wires: even columns close one branch, odd columns all eight."""
    masks = np.where(np.arange(16) % 2 == 0, 1, 255).astype(np.uint64)
    return make_lab(wires, branches=8, masks=np.tile(masks, (16, 1)), **NO_WIRES)


def inferred_contact_ohm(lab: SimLab) -> np.ndarray:
    """Each cell's contact resistance from its reading: ``1 / I - 1 / G`` at 1 V."""
    return 1.0 / cell_currents_a(lab) - 1.0 / lab.array.cell_conductance_s()


def test_contact_resistance_lowers_a_large_cell_relatively_more() -> None:
    lab = contact_lab({"contact_resistance_ohm": 5.0})
    g = lab.array.cell_conductance_s()
    loss = 1.0 - cell_currents_a(lab) / g
    assert np.all(loss > 0)
    np.testing.assert_allclose(loss, 5.0 * g / (1.0 + 5.0 * g), rtol=1e-5)
    # Eight branches closed: about eight times the relative loss of one.
    assert 6.0 < loss[:, 1::2].mean() / loss[:, ::2].mean() < 10.0
    # Doubling the contact doubles the inferred resistance (the same draws).
    np.testing.assert_allclose(inferred_contact_ohm(contact_lab({"contact_resistance_ohm": 10.0})),
                               10.0, rtol=1e-4)
    np.testing.assert_allclose(inferred_contact_ohm(lab), 5.0, rtol=1e-4)
    # Spread: each cell its own contact.
    spread = inferred_contact_ohm(contact_lab({"contact_resistance_ohm": 5.0,
                                               "contact_spread": 0.3}))
    assert abs(spread.mean() / 5.0 - 1.0) < 3 * 0.3 / 16
    assert 0.25 < relative_sd(spread) < 0.35


def test_contact_resistance_makes_branch_sums_not_additive() -> None:
    """A cell with every branch closed reads less than the sum of its branches read alone: the
    contact carries their sum (the controller adds branch conductances)."""
    wires = {"contact_resistance_ohm": 5.0}
    row = make_lab(wires, rows=1, cols=1, branches=8, masks=np.zeros((1, 1), np.uint64), **NO_WIRES)
    alone = []
    for k in range(8):
        row.array.set_masks(np.full((1, 1), 1 << k, dtype=np.uint64))
        alone.append(row.board.read_columns(np.ones(1))[0])
    row.array.set_masks(np.full((1, 1), 255, dtype=np.uint64))
    together = row.board.read_columns(np.ones(1))[0]
    g = row.array.branch_conductance_s()[0, 0]
    # Each branch alone: g / (1 + g R_c); together: G / (1 + G R_c), G = sum g.
    expected = np.sum(g / (1 + 5.0 * g)) - g.sum() / (1 + 5.0 * g.sum())
    assert sum(alone) - together == pytest.approx(expected, rel=1e-4)
    assert (sum(alone) - together) / together > 5.0 * 0.8 * (g.sum() - g.mean())
    ideal = make_lab(rows=1, cols=1, branches=8, masks=np.full((1, 1), 255, np.uint64), **NO_WIRES)
    assert ideal.board.read_columns(np.ones(1))[0] == pytest.approx(g.sum(), rel=1e-8)


# ---- row and column wires: segment scatter, line variation, length ----------------------------

def series_ohm(wires: dict, *, column: int, rows: int = 64, cols: int = 16, **fields) -> np.ndarray:
    """Each row's series resistance from row i's driver to the one closed cell of the row (in
    ``column``), from its reading: ``V / I - 1 / G`` (the sum of the row segments up to it)."""
    masks = np.zeros((rows, cols), dtype=np.uint64)
    masks[:, column] = 1
    lab = make_lab(wires, rows=rows, cols=cols, masks=masks, **{**ROW_WIRES, **fields})
    g = lab.array.cell_conductance_s()[:, column]
    return 1.0 / cell_currents_a(lab)[:, column] - 1.0 / g


def test_segment_scatter_moves_a_near_cell_more_than_a_far_cells_sum() -> None:
    far0 = series_ohm({}, column=15)
    np.testing.assert_allclose(far0, 16 * 0.5, rtol=1e-5)  # 16 segments of 0.5 ohm
    near = series_ohm({"segment_scatter": 0.1}, column=0)
    far = series_ohm({"segment_scatter": 0.1}, column=15)
    assert abs(near.mean() / 0.5 - 1.0) < 3 * 0.1 / 8 and abs(far.mean() / 8.0 - 1.0) < 0.01
    # One segment scatters by the spread; a sum of 16 independent ones by spread / 4.
    assert 0.08 < relative_sd(near) < 0.12
    assert 0.1 / 4 * 0.8 < relative_sd(far) < 0.1 / 4 * 1.2
    # Twice the scatter: twice the deviations of the same segments.
    near2 = series_ohm({"segment_scatter": 0.2}, column=0)
    assert np.std(near2 - 0.5) / np.std(near - 0.5) == pytest.approx(2.0, rel=0.05)
    # Ideal wires stay ideal: scatter of nothing is nothing.
    masks = np.zeros((64, 16), dtype=np.uint64)
    masks[:, 15] = 1
    plain = make_lab(rows=64, masks=masks, **NO_WIRES)
    scattered = make_lab({"segment_scatter": 0.1, "line_variation": 0.1}, rows=64, masks=masks,
                         **NO_WIRES)
    np.testing.assert_array_equal(cell_currents_a(plain), cell_currents_a(scattered))


def test_line_variation_scales_whole_lines() -> None:
    wires = {"line_variation": 0.1}
    near, far = series_ohm(wires, column=0), series_ohm(wires, column=15)
    # Every segment of a row shares its line's factor: the far cell sees 16 near segments.
    np.testing.assert_allclose(far, 16 * near, rtol=1e-4)
    assert 0.08 < relative_sd(far) < 0.12
    doubled = series_ohm({"line_variation": 0.2}, column=15)
    assert np.std(doubled - 8.0) / np.std(far - 8.0) == pytest.approx(2.0, rel=0.05)
    # Columns too: row 0's cells, sensed through every column segment below them.
    masks = np.zeros((16, 64), dtype=np.uint64)
    masks[0] = 1
    lab = make_lab(wires, rows=16, cols=64, masks=masks, **COL_WIRES)
    below = 1.0 / lab.board.read_columns(np.eye(16)[0]) - 1.0 / lab.array.cell_conductance_s()[0]
    assert abs(below.mean() / 8.0 - 1.0) < 3 * 0.1 / 8
    assert 0.08 < relative_sd(below) < 0.12


def test_length_factor_multiplies_every_wire() -> None:
    pcb = {"segment_scatter": 0.05, "line_variation": 0.03}
    base = series_ohm(pcb, column=15, rows=16)
    np.testing.assert_allclose(series_ohm({**pcb, "length_factor": 4.0}, column=15, rows=16),
                               4.0 * base, rtol=1e-5)


# ---- profiles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["pcb", "harsh"])
def test_profiles_carry_their_wires(profile: str) -> None:
    wires = PROFILES[profile].wires
    config = SimArrayConfig(rows=32, cols=32, branches=4, seed=7, profile=profile, **QUIET)
    lab = SimLab(config)
    lab.array.set_masks(np.full((32, 32), 15, dtype=np.uint64))
    circuit = lab.array.circuit()
    row = np.asarray(circuit.row_wire_resistance_ohm)
    assert row.shape == (32, 32)
    assert row.mean() == pytest.approx(0.5 * wires.length_factor, rel=0.05)
    assert np.asarray(circuit.driver_resistance_ohm).mean() == pytest.approx(
        wires.driver_output_resistance_ohm, rel=3 * wires.driver_spread / np.sqrt(32))
    assert relative_sd(np.asarray(circuit.sense_resistance_ohm)) == pytest.approx(
        wires.sense_spread, rel=0.3)
    contact = 1.0 / circuit.conductance_s - 1.0 / lab.array.cell_conductance_s()
    assert contact.mean() == pytest.approx(wires.contact_resistance_ohm, rel=0.1)
    # A reading's solve (switch flatness injected into this circuit) runs on these wires.
    v = np.random.default_rng(1).uniform(-0.5, 0.5, 32)
    linear = circuit.solve(v).col_current_a
    reading = lab.array.solve(circuit, v).col_current_a
    assert 0 < np.abs(reading - linear).max() < 1e-2 * np.abs(linear).max()
