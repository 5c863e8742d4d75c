"""Limits checked before sending, and routing that sends only what changed."""

import numpy as np
import pytest

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import LimitError
from drivers import BoardRouting, SafetyGuard, SwitchBoard, open_transport, ramp_steps_v
from tests.drivers.conftest import SMALL
from tests.drivers.test_board_replay import connect_matrix
from tests.drivers.scripted import NO_ERROR


def test_guard_checks_and_names_each_limit():
    guard = SafetyGuard(Limits(max_voltage_v=2, max_current_a=1e-3, max_power_w=1e-3, max_total_current_a=1e-3),
                        min_resistance_ohm=1e3)
    assert guard.voltage_v(1.0) == 1.0
    for value, limit, requested in ((-2.5, "max_voltage_v", -2.5), (1.5, "max_power_w", 1.5**2 / 1e3)):
        with pytest.raises(LimitError) as info:
            guard.voltage_v(value)
        assert info.value.limit == limit and info.value.requested == pytest.approx(requested)
    with pytest.raises(LimitError, match="max_current_a"):
        guard.compliance_current_a(2e-3)
    with pytest.raises(LimitError, match="max_total_current_a"):
        guard.total_current_a(np.array([0.6, -0.6]), np.array([1e-3, 1e-3]))
    assert guard.total_current_a(np.array([[0.1, -0.1]]), np.array([1e-3, 1e-3])) == pytest.approx(2e-4)
    with pytest.raises(LimitError):
        guard.voltages_v([0.1, float("inf")])
    with pytest.raises(LimitError):
        guard.voltages_v(["a"])
    with pytest.raises(ValueError):
        SafetyGuard(min_resistance_ohm=0)


def test_ramp_levels():
    assert ramp_steps_v(0.0, 1.0, 0.5) == [0.5, 1.0]
    assert ramp_steps_v(1.0, -0.2, 0.5) == pytest.approx([0.6, 0.2, -0.2])
    assert ramp_steps_v(0.3, 0.3, 0.5) == [0.3]


def board_on_sim():
    from sim import SimLab

    sim = SimLab(SMALL)
    return sim, SwitchBoard(open_transport("sim://board", devices=sim.devices))


def test_board_routing_sends_only_what_changed():
    sim, board = board_on_sim()
    routing = BoardRouting(board)
    link = board.transport
    routing.connect(source_rows=[1], sense_cols=[2])
    first = link.round_trips
    assert first == 3 + 4                     # connect (3) + all GND twice + 2 lines
    routing.connect(source_rows=[1], sense_cols=[2])
    assert link.round_trips == first          # nothing to change
    routing.connect(source_rows=[0], sense_cols=[2])
    assert link.round_trips == first + 2      # row 1 back to GND, row 0 to SRC
    assert list(sim.board.row_routes) == ["SRC", "GND", "GND", "GND"]
    assert list(sim.board.col_routes) == ["GND", "GND", "SENSE"]
    routing.ground_all()
    assert (sim.board.row_routes == "GND").all() and (sim.board.col_routes == "GND").all()


def test_board_routing_resends_after_someone_else_routed():
    sim, board = board_on_sim()
    routing = BoardRouting(board)
    routing.connect(source_rows=[1], sense_cols=[2])
    board.route_row(3, "FLOAT")               # behind the routing's back
    routing.connect(source_rows=[1], sense_cols=[2])
    assert sim.board.row_routes[3] == "GND"
    board.safe()
    routing.connect(source_rows=[1], sense_cols=[2])
    assert sim.board.row_routes[1] == "SRC" and sim.board.col_routes[2] == "SENSE"


def test_routing_refuses_lines_outside_the_array_and_sends_nothing():
    sim, board = board_on_sim()
    routing = BoardRouting(board)
    before = board.transport.round_trips
    for rows, cols in (([4], [0]), ([0], [3]), ([-1], [0]), (["0"], [0])):
        with pytest.raises(LimitError):
            routing.connect(source_rows=rows, sense_cols=cols)
    assert board.transport.round_trips == before


def test_matrix_routing_refuses_a_too_small_matrix():
    from drivers import MatrixRouting

    matrix, _ = connect_matrix(outputs=6)
    with pytest.raises(LimitError, match="outputs"):
        MatrixRouting(matrix, 4, 3)


def test_matrix_routing_closes_and_opens_only_the_difference():
    from drivers import MatrixRouting

    matrix, t = connect_matrix([
        (":ROUT:OPEN:CARD 0", None), (":ROUT:AGND 0,ON", None), NO_ERROR,
        (":ROUT:CLOS (@00101,00206)", None), NO_ERROR,
        (":ROUT:OPEN (@00101)", None), NO_ERROR, (":ROUT:CLOS (@00102)", None), NO_ERROR,
    ], outputs=7)
    routing = MatrixRouting(matrix, 4, 3)
    routing.connect(source_rows=[0], sense_cols=[1])
    routing.connect(source_rows=[1], sense_cols=[1])
    t.assert_done()


def test_routing_takes_numpy_integers():
    sim, board = board_on_sim()
    BoardRouting(board).connect(source_rows=np.array([2]), sense_cols=[np.int64(1)])
    assert sim.board.row_routes[2] == "SRC" and sim.board.col_routes[1] == "SENSE"
