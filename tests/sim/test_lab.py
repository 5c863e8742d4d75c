"""The simulated lab's physics: what the SMU reads through the board or the matrix routing."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.config import Fault, SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim._lab import SimLab

QUIET = dict(relative_noise=0.0, noise_floor_fraction=0.0, drift_per_hour=0.0)


def lab_for(*, routing: str = "board", smu_model: str = "keithley2450", **overrides) -> SimLab:
    config = dict(rows=8, cols=8, branches=4, seed=11, profile="ideal")  # the simulator's own model
    config.update(overrides)
    return SimLab(SimArrayConfig(**config), routing=routing, smu_model=smu_model)


def select_on_board(lab: SimLab, row: int, col: int, branch: int, *, others: str = "GND") -> None:
    board = lab.devices["board"]
    commands = [f"SET {row} {col} {1 << branch:x}", f"ROUTE ROW * {others}",
                f"ROUTE COL * {others}", f"ROUTE ROW {row} SRC", f"ROUTE COL {col} SENSE"]
    for command in commands:
        assert board.feed(command.encode() + b"\n") == b"OK\n", command


def read_2450(lab: SimLab, volts: float = 0.2, *, nplc: float = 1.0) -> float:
    smu = lab.devices["smu"]
    smu.feed(f":SOUR:VOLT {volts};:SOUR:VOLT:ILIM 1e-2;:SENS:CURR:NPLC {nplc};:OUTP ON\n".encode())
    return float(smu.feed(b":READ?\n"))


def series_path_ohm(config: SimArrayConfig, row: int, col: int) -> float:
    """Wire and sense resistance in series with cell (row, col) (driven at column 0, sensed at the
    last row)."""
    return ((col + 1) * config.row_wire_resistance_ohm
            + (config.rows - row) * config.col_wire_resistance_ohm + config.sense_resistance_ohm)


@pytest.mark.parametrize(("row", "col", "branch"), [(0, 0, 0), (5, 2, 3), (7, 7, 1)])
def test_one_closed_branch_reads_its_conductance_through_the_wires(row, col, branch) -> None:
    lab = lab_for(**QUIET)
    select_on_board(lab, row, col, branch)
    g = lab.array.branch_conductance_s()[row, col, branch]
    expected = 1 / (1 / g + series_path_ohm(lab.config, row, col))
    measured = read_2450(lab) / 0.2
    assert measured == pytest.approx(expected, rel=1e-6)
    assert measured == pytest.approx(g, rel=0.01)  # the wires and the sense input cost < 1 %


def test_noise_is_what_the_config_says() -> None:
    lab = lab_for(relative_noise=1e-3, noise_floor_fraction=0.0, drift_per_hour=0.0)
    select_on_board(lab, 2, 3, 0)
    readings = np.array([read_2450(lab, nplc=1.0) for _ in range(400)]) / 0.2
    quiet = lab_for(**QUIET)
    select_on_board(quiet, 2, 3, 0)
    truth = read_2450(quiet) / 0.2
    assert readings.mean() == pytest.approx(truth, rel=3e-4)
    assert readings.std() / truth == pytest.approx(1e-3, rel=0.15)


def test_matrix_routing_reads_the_same_as_the_board() -> None:
    board_lab = lab_for(**QUIET)
    select_on_board(board_lab, 3, 4, 2)
    matrix_lab = lab_for(routing="matrix", **QUIET)
    matrix_lab.devices["board"].feed(b"SET 3 4 4\n")
    rows = matrix_lab.config.rows
    matrix = matrix_lab.devices["matrix"]
    matrix.feed(f":CONN:RULE 0,SROU;:AGND 0,ON;:CLOS (@001{3 + 1:02d},002{rows + 4 + 1:02d})\n".encode())
    assert matrix.errors == []
    assert read_2450(matrix_lab) == pytest.approx(read_2450(board_lab), rel=1e-12)


def test_floating_lines_let_sneak_paths_in() -> None:
    readings = {}
    for others in ("GND", "FLOAT"):
        lab = lab_for(rows=4, cols=4, **QUIET)
        lab.array.set_masks(np.ones((4, 4), dtype=np.uint64))  # branch 0 closed everywhere
        select_on_board(lab, 0, 0, 0, others=others)
        readings[others] = read_2450(lab) / 0.2
    g = lab.array.branch_conductance_s()[0, 0, 0]
    grounded_error = abs(readings["GND"] - g) / g
    floating_error = abs(readings["FLOAT"] - g) / g
    assert grounded_error < 0.01
    assert floating_error > 0.1  # the sneak path through the other cells adds conductance
    assert readings["FLOAT"] > readings["GND"]


def test_shorting_hi_to_lo_puts_the_smu_in_compliance() -> None:
    lab = lab_for(routing="matrix", **QUIET)
    lab.devices["matrix"].feed(b":CLOS (@00101,00201)\n")  # FREE rule: both terminals on row 0
    smu = lab.devices["smu"]
    smu.feed(b":SOUR:VOLT 0.1;:SOUR:VOLT:ILIM 1e-3;:OUTP ON\n")
    assert smu.feed(b":READ?;:SOUR:VOLT:ILIM:TRIP?\n") == b"1.000000000E-03;1\n"


def test_nothing_routed_or_output_off_reads_only_noise() -> None:
    lab = lab_for()
    assert abs(read_2450(lab)) < 1e-9  # every line grounded: nothing reaches LO
    select_on_board(lab, 1, 1, 0)
    lab.devices["smu"].feed(b":OUTP OFF\n")
    reading = float(lab.devices["smu"].feed(b":READ?\n"))
    assert 0 < abs(reading) < 1e-9


def test_a_list_sweep_is_linear_and_advances_time() -> None:
    lab = lab_for(**QUIET)
    select_on_board(lab, 4, 4, 0)
    g = lab.conductance_s()
    smu = lab.devices["smu"]
    volts = np.linspace(-0.3, 0.3, 50)
    smu.feed(b":SOUR:LIST:VOLT " + ",".join(f"{v:.4f}" for v in volts).encode() + b"\n")
    smu.feed(b":SOUR:VOLT:ILIM 1e-2;:SENS:CURR:NPLC 0.1;:SOUR:SWE:VOLT:LIST 1,0;:TRAC:CLE;:INIT\n")
    data = smu.feed(b':TRAC:DATA? 1,50,"defbuffer1",READ\n')
    currents = np.array([float(x) for x in data.split(b",")])
    np.testing.assert_allclose(currents, g * np.round(volts, 4), rtol=1e-8, atol=1e-18)
    assert lab.time_s == pytest.approx(50 * 0.1 / 60)


def test_time_reaches_the_array_in_steps() -> None:
    lab = lab_for(relative_noise=0.0, noise_floor_fraction=0.0, drift_per_hour=0.01)
    select_on_board(lab, 0, 0, 0)
    for _ in range(59):
        read_2450(lab, nplc=1.0)
    assert lab.array.time_s == 0.0 and lab.time_s == pytest.approx(59 / 60)
    read_2450(lab, nplc=1.0)
    assert lab.array.time_s == pytest.approx(1.0)
    lab.advance_time(0.25)
    lab.sync_time()
    assert lab.array.time_s == pytest.approx(1.25) and lab.time_s == pytest.approx(1.25)


def test_faults_and_temperature_change_the_reading() -> None:
    config = dict(rows=4, cols=4, faults=(Fault(kind="open_resistor", row=1, col=1, branch=0),),
                  **QUIET)
    lab = lab_for(**config)
    select_on_board(lab, 1, 1, 0)
    assert read_2450(lab) / 0.2 < 1e-9  # only the switch leakage conducts
    select_on_board(lab, 2, 2, 0)
    cold = read_2450(lab)
    lab.array.temperature_c = lab.config.temperature_c + 50
    assert read_2450(lab) < cold  # a positive TCR raises the resistance


def test_2400_lab_measures_the_same_branch() -> None:
    lab = lab_for(smu_model="keithley2400", **QUIET)
    select_on_board(lab, 2, 6, 1)
    smu = lab.devices["smu"]
    smu.feed(b":SOUR:VOLT 0.2;:SENS:CURR:PROT 1e-2;:FORM:ELEM CURR;:OUTP ON\n")
    expected = 0.2 * lab.conductance_s()
    assert float(smu.feed(b":READ?\n")) == pytest.approx(expected, rel=1e-6)


def test_bad_lab_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="smu_model"):
        lab_for(smu_model="keithley2602")
    with pytest.raises(ConfigError, match="routing"):
        lab_for(routing="telepathy")
    lab = SimLab(SimArrayConfig(rows=2, cols=2, branches=1), language="TSP")
    assert lab.devices["smu"].feed(b"*LANG?\n") == b"TSP\n"
