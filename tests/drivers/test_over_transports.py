"""One driver suite against the simulated lab, over every transport (in process, TCP, pty)."""

import numpy as np
import pytest

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import LimitError
from drivers import BoardReadout, BoardRouting, KeysightE5250A, MatrixRouting, SafetyGuard, SwitchBoard
from drivers import SOURCE_METER_MODELS, SuperpositionReadout

GUARD = SafetyGuard(Limits(), min_resistance_ohm=2e3)


def _smu(served):
    model = "keithley2450" if "2450" in served.lab.smu.idn else "keithley2400"
    return SOURCE_METER_MODELS[model](served.open("smu"), guard=GUARD)


def test_source_meter_measures_one_branch(served_smu):
    lab = served_smu.lab
    board = SwitchBoard(served_smu.open("board"), guard=GUARD)
    smu = _smu(served_smu)
    smu.reset()
    smu.set_compliance_current_a(1e-3)
    smu.set_nplc(1)
    board.safe()
    board.set_mask(2, 1, 0b0100)
    BoardRouting(board).connect(source_rows=[2], sense_cols=[1])
    smu.set_source_voltage_v(0.2)
    smu.output_on()
    measured_s = smu.measure_current_a() / 0.2
    truth_s = lab.array.branch_conductance_s()[2, 1, 2]
    assert measured_s == pytest.approx(truth_s, rel=5e-3)   # wires and sense resistor in series
    assert not smu.in_compliance()
    swept = smu.sweep_voltages_v([0.1, -0.1, 0.2])
    np.testing.assert_allclose(swept / np.array([0.1, -0.1, 0.2]), truth_s, rtol=5e-3)
    smu.output_off()
    assert lab.smu.output_on is False and lab.smu.level_v == 0.0


def test_source_meter_compliance(served_smu):
    board = SwitchBoard(served_smu.open("board"), guard=GUARD)
    smu = _smu(served_smu)
    smu.reset()
    board.safe()
    board.load_row(0, [0xF, 0xF, 0xF])
    BoardRouting(board).connect(source_rows=[0], sense_cols=[0, 1, 2])
    smu.set_compliance_current_a(1e-6)
    smu.set_source_voltage_v(0.5)
    smu.output_on()
    current = smu.measure_current_a()
    assert abs(current) <= 1.05e-6
    assert smu.in_compliance()
    smu.output_off()


def test_source_meter_long_sweep_in_one_exchange_per_chunk(served_smu):
    board = SwitchBoard(served_smu.open("board"), guard=GUARD)
    smu = _smu(served_smu)
    smu.reset()
    smu.set_nplc(0.01)
    smu.set_current_range_a(1e-4)   # fixed: autorange at a range edge can overflow on noise
    board.safe()
    board.set_mask(1, 1, 1)
    BoardRouting(board).connect(source_rows=[1], sense_cols=[1])
    voltages = np.linspace(-0.3, 0.3, 3000)
    before = smu.transport.round_trips
    current = smu.sweep_voltages_v(voltages)
    assert current.shape == (3000,)
    assert smu.transport.round_trips - before <= 12   # two chunks, a few checks each
    slope = np.polyfit(voltages, current, 1)[0]
    assert slope == pytest.approx(served_smu.lab.array.branch_conductance_s()[1, 1, 0], rel=5e-3)
    assert not smu.output_is_on


def test_board_masks_routes_and_safe(served):
    lab = served.lab
    board = SwitchBoard(served.open("board"), guard=GUARD)
    assert board.geometry() == (4, 3, 4)
    assert board.capabilities() == {"MVM", "BATCH"}
    board.safe()
    board.set_mask(3, 2, 0b1010)
    assert board.get_mask(3, 2) == 0b1010
    masks = np.arange(12, dtype=np.uint64).reshape(4, 3) % 16
    masks[3, 2] = 0b1010
    assert board.load_masks(masks) == 4   # every row differs from the state after SAFE
    np.testing.assert_array_equal(board.read_masks(), masks)
    np.testing.assert_array_equal(lab.array.masks, masks)
    board.route_row(1, "SRC")
    board.route_col(0, "SENSE")
    assert board.row_route(1) == "SRC" and board.col_route(0) == "SENSE"
    assert 0 < board.temperature_c() < 100
    board.safe()
    assert not lab.array.masks.any()
    assert board.row_route(1) == "GND"
    assert board.errors() == []


def test_board_readout_matches_the_array(served):
    lab = served.lab
    board = SwitchBoard(served.open("board"), guard=GUARD)
    board.safe()
    rng = np.random.default_rng(1)
    board.load_masks(rng.integers(0, 16, size=(4, 3)))
    board.set_adc_nplc(1)
    readout = BoardReadout(board)
    voltage = rng.uniform(-0.2, 0.2, size=(2, 4))
    current = readout.mvm(voltage)
    ideal = voltage @ lab.array.cell_conductance_s()
    np.testing.assert_allclose(current, ideal, rtol=0.02, atol=2e-8)
    assert readout.round_trips == 1   # one MVMB line for both vectors


def test_superposition_readout_equals_the_board_readout(served):
    board = SwitchBoard(served.open("board"), guard=GUARD)
    smu = _smu(served)
    smu.reset()
    smu.set_compliance_current_a(1e-3)
    board.safe()
    rng = np.random.default_rng(2)
    board.load_masks(rng.integers(0, 16, size=(4, 3)))
    voltage = rng.uniform(-0.2, 0.2, size=(3, 4))
    voltage[:, 3] = 0.0       # an undriven row costs nothing
    superposed = SuperpositionReadout(smu, BoardRouting(board)).mvm(voltage)
    direct = BoardReadout(board).mvm(voltage)
    np.testing.assert_allclose(superposed, direct, rtol=0.01, atol=5e-9)
    assert not smu.output_is_on and served.lab.smu.output_on is False


def test_matrix_routing_measures_one_branch(served):
    from sim import SimLab
    from tests.drivers.conftest import SMALL, serve

    for lab_served in serve(served.kind, SimLab(SMALL, routing="matrix")):
        board = SwitchBoard(lab_served.open("board"), guard=GUARD)
        matrix = KeysightE5250A(lab_served.open("matrix"), outputs=7)
        smu = _smu(lab_served)
        smu.reset()
        board.safe()
        board.set_mask(1, 2, 0b0001)
        routing = MatrixRouting(matrix, 4, 3)
        routing.connect(source_rows=[1], sense_cols=[2])
        assert matrix.closed_channels() == {(1, 2), (2, 7)}
        smu.set_source_voltage_v(0.2)
        smu.output_on()
        measured_s = smu.measure_current_a() / 0.2
        smu.output_off()
        assert measured_s == pytest.approx(lab_served.lab.array.branch_conductance_s()[1, 2, 0], rel=5e-3)
        routing.connect(source_rows=[0], sense_cols=[2])
        assert matrix.closed_channels() == {(1, 1), (2, 7)}
        with pytest.raises(LimitError, match="short"):
            matrix.close_channels([(2, 1)])   # LO onto the row HI drives
        matrix.open_all()
        assert matrix.closed_channels() == set()
