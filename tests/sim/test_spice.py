"""Golden test: the circuit solver against ngspice on the same netlist."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.config import SimArrayConfig
from sim import CrossbarCircuit, PhysicalArray, find_ngspice, solve_with_ngspice, spice_netlist

needs_ngspice = pytest.mark.skipif(
    find_ngspice() is None, reason="ngspice not installed (apt-get install ngspice)"
)


def array_circuit(rows, cols, *, seed, wire_ohm, sense_ohm, floating):
    """A PhysicalArray's circuit: random masks, switch on-resistance, wires, floating lines."""
    config = SimArrayConfig(rows=rows, cols=cols, branches=8, seed=seed,
                            row_wire_resistance_ohm=wire_ohm, col_wire_resistance_ohm=wire_ohm,
                            sense_resistance_ohm=sense_ohm, switch_on_resistance_ohm=50.0)
    array = PhysicalArray(config)
    rng = np.random.default_rng(seed)
    array.set_masks(rng.integers(0, 256, size=(rows, cols)))
    row_connected = rng.random(rows) >= floating
    col_connected = rng.random(cols) >= floating
    row_connected[0] = col_connected[0] = True
    return array.circuit(row_connected, col_connected), rng


@needs_ngspice
@pytest.mark.parametrize(
    ("rows", "cols", "wire_ohm", "sense_ohm", "floating"),
    [
        (1, 1, 0.5, 10.0, 0.0),
        (3, 5, 0.5, 10.0, 0.0),
        (8, 8, 1.0, 0.0, 0.3),
        (16, 9, 0.0, 10.0, 0.3),
        (32, 32, 0.5, 10.0, 0.25),
        (32, 32, 2.0, 20.0, 0.0),
    ],
)
def test_agrees_with_ngspice(rows, cols, wire_ohm, sense_ohm, floating):
    circuit, rng = array_circuit(rows, cols, seed=rows * 100 + cols, wire_ohm=wire_ohm,
                                 sense_ohm=sense_ohm, floating=floating)
    row_voltage_v = rng.uniform(-1, 1, rows)
    col_voltage_v = rng.uniform(-0.1, 0.1, cols)
    spice_rows, spice_cols = solve_with_ngspice(circuit, row_voltage_v, col_voltage_v)
    solution = circuit.solve(row_voltage_v, col_voltage_v)
    scale = max(np.abs(spice_rows).max(), np.abs(spice_cols).max())
    np.testing.assert_allclose(solution.row_current_a[0], spice_rows, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(solution.col_current_a[0], spice_cols, rtol=1e-9, atol=1e-12 * scale)


def test_netlist_uses_zero_volt_sources_for_ideal_wires_and_skips_open_cells():
    g = np.array([[1e-3, 0.0], [2e-3, 4e-3]])
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.5,
                              sense_resistance_ohm=10.0, col_connected=[True, False])
    netlist = spice_netlist(circuit, [1.0, -0.5])
    lines = netlist.splitlines()
    cells = [line for line in lines if line.split()[1:3] in (["r_0_1", "c_0_1"],)]
    assert cells == []
    assert any(line.startswith("vz") and line.endswith("dc 0") for line in lines)
    assert "vr1 rt_1 0 dc -0.5" in lines
    assert not any(line.startswith("vc1") for line in lines)
    assert "print i(vc0)" in lines and "print i(vc1)" not in lines


def scattered(circuit, rng, *, zeros=0.0):
    """The same cells with every wire segment, driver and sense input its own value."""
    rows, cols = circuit.rows, circuit.cols
    wires = [rng.uniform(0.2, 2.0, (rows, cols)), rng.uniform(0.2, 2.0, (rows, cols)),
             rng.uniform(5.0, 15.0, cols), rng.uniform(5.0, 15.0, rows)]
    for ohm in wires:
        ohm[rng.random(ohm.shape) < zeros] = 0.0
    rr, rc, rs, rd = wires
    return CrossbarCircuit(circuit.conductance_s, row_wire_resistance_ohm=rr,
                           col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
                           driver_resistance_ohm=rd, row_connected=circuit.row_connected,
                           col_connected=circuit.col_connected)


@needs_ngspice
@pytest.mark.parametrize(
    ("rows", "cols", "floating", "zeros"),
    [(1, 1, 0.0, 0.0), (4, 6, 0.3, 0.0), (16, 9, 0.25, 0.2), (32, 32, 0.0, 0.0)],
)
def test_scattered_wires_agree_with_ngspice(rows, cols, floating, zeros):
    circuit, rng = array_circuit(rows, cols, seed=rows * 100 + cols + 1, wire_ohm=0.5,
                                 sense_ohm=10.0, floating=floating)
    circuit = scattered(circuit, rng, zeros=zeros)
    row_voltage_v = rng.uniform(-1, 1, rows)
    col_voltage_v = rng.uniform(-0.1, 0.1, cols)
    spice_rows, spice_cols = solve_with_ngspice(circuit, row_voltage_v, col_voltage_v)
    solution = circuit.solve(row_voltage_v, col_voltage_v)
    scale = max(np.abs(spice_rows).max(), np.abs(spice_cols).max())
    np.testing.assert_allclose(solution.row_current_a[0], spice_rows, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(solution.col_current_a[0], spice_cols, rtol=1e-9, atol=1e-12 * scale)


def test_netlist_writes_each_segment_driver_and_sense_resistance():
    g = np.full((2, 2), 1e-3)
    rr = np.array([[1.5, 2.5], [3.5, 4.5]])
    rc = np.array([[5.5, 6.5], [7.5, 8.5]])
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc,
                              sense_resistance_ohm=[11.0, 0.0], driver_resistance_ohm=[21.0, 22.0])
    ohms = {tuple(line.split()[1:3]): line.split()[3]
            for line in spice_netlist(circuit, [1.0, 0.5]).splitlines() if line[:1] in "rv"}
    assert ohms[("rt_1", "rd_1")] == "22" and ohms[("rd_1", "r_1_0")] == "3.5"
    assert ohms[("r_1_0", "r_1_1")] == "4.5" and ohms[("r_0_0", "r_0_1")] == "2.5"
    assert ohms[("c_0_1", "c_1_1")] == "6.5"
    assert ohms[("c_1_0", "cs_0")] == "7.5" and ohms[("cs_0", "ct_0")] == "11"
    assert ohms[("c_1_1", "cs_1")] == "8.5" and ohms[("cs_1", "ct_1")] == "dc"  # 0 ohm: 0 V source


@needs_ngspice
@pytest.mark.parametrize("profile", ["pcb", "harsh"])
def test_profile_boards_agree_with_ngspice(profile):
    """The simulator's own circuit on a profile board: scattered segments and lines, drivers,
    sense inputs, cell contacts folded into the conductances."""
    config = SimArrayConfig(rows=12, cols=10, branches=8, seed=9, profile=profile)
    array = PhysicalArray(config)
    rng = np.random.default_rng(9)
    array.set_masks(rng.integers(0, 256, size=(12, 10)))
    circuit = array.circuit()
    assert np.ndim(circuit.row_wire_resistance_ohm) == 2
    row_voltage_v = rng.uniform(-1, 1, 12)
    spice_rows, spice_cols = solve_with_ngspice(circuit, row_voltage_v)
    solution = circuit.solve(row_voltage_v)
    scale = max(np.abs(spice_rows).max(), np.abs(spice_cols).max())
    np.testing.assert_allclose(solution.row_current_a[0], spice_rows, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(solution.col_current_a[0], spice_cols, rtol=1e-9, atol=1e-12 * scale)
