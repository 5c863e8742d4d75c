"""The simulated E5250A / B2200-style switch matrix: channel lists, rules, grounding."""

from __future__ import annotations

import numpy as np
import pytest

from sim._matrix import SimSwitchMatrix
from tests.sim.test_scpi import replay


@pytest.fixture
def matrix() -> SimSwitchMatrix:
    return SimSwitchMatrix(12)


def test_close_open_and_query(matrix: SimSwitchMatrix) -> None:
    replay(matrix, [
        (b"*IDN?\n", b"Agilent Technologies,E5250A,0,B.01.06\n"),
        (b":CLOS:CARD? 0\n", b"(@)\n"),
        (b":ROUT:CLOS (@00101,00210:00212)\n", b""),
        (b":ROUT:CLOS:CARD? 0\n", b"(@00101,00210,00211,00212)\n"),
        (b"clos? (@00101,00102,00211)\n", b"1,0,1\n"),
        (b":OPEN? (@00101,00102)\n", b"0,1\n"),
        (b":OPEN (@00211)\n", b""),
        (b":CLOS:CARD? ALL\n", b"(@00101,00210,00212)\n"),
        (b":OPEN:CARD 0;:CLOS:CARD? 0\n", b"(@)\n"),
        (b"SYST:ERR?\n", b'0,"No error"\n'),
    ])


def test_ranges_are_blocks(matrix: SimSwitchMatrix) -> None:
    replay(matrix, [
        (b":CLOS (@00101:00202)\n", b""),
        (b":CLOS:CARD? 0\n", b"(@00101,00102,00201,00202)\n"),
    ])


def test_single_route_replaces_connections(matrix: SimSwitchMatrix) -> None:
    replay(matrix, [
        (b":CONN:RULE 0,SROU;:CONN:SEQ 0,MBBR;:CONN:RULE? 0;:CONN:SEQ? 0\n", b"SROU;MBBR\n"),
        (b":CLOS (@00101)\n", b""),
        (b":CLOS (@00103)\n", b""),  # input 1 moves to output 3
        (b":CLOS (@00203)\n", b""),  # output 3 moves to input 2
        (b":CLOS:CARD? 0\n", b"(@00203)\n"),
        (b":CONN:RULE 0,FREE;:CLOS (@00103)\n", b""),  # FREE: HI and LO on one output, allowed
        (b":CLOS:CARD? 0\n", b"(@00103,00203)\n"),
    ])


@pytest.mark.parametrize(("command", "code"), [
    (b":CLOS (@00113)", -222),  # output 13 of 12
    (b":CLOS (@01101)", -222),  # input 11 of 10
    (b":CLOS (@10101)", -224),  # card 1: the simulator runs in auto configuration (card 0)
    (b":CLOS (@001011)", -224),  # six digits on a matrix of 12 outputs
    (b":CLOS (@0010x)", -102),
    (b":CLOS (@00105:00103)", -222),
    (b":CLOS 00101", -104),
    (b":CONN:RULE 0,BOTH", -224),
    (b":OPEN:CARD 3", -224),
    (b":CLOSE:LIST (@00101", -102),
])
def test_bad_channels_are_refused_and_change_nothing(matrix: SimSwitchMatrix, command: bytes,
                                                     code: int) -> None:
    matrix.feed(b":CLOS (@00102)\n")
    replay(matrix, [(command + b"\n", b""), (b":CLOS:CARD? 0\n", b"(@00102)\n")])
    assert matrix.errors == [code]


def test_terminals_and_ground_mode() -> None:
    matrix = SimSwitchMatrix(6)
    matrix.feed(b":CLOS (@00101,00205,00304)\n")
    hi, lo = matrix.terminals()
    np.testing.assert_array_equal(hi, [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(lo, [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(matrix.connected_outputs(), [1, 0, 0, 1, 1, 0])
    replay(matrix, [(b":AGND? 0;:AGND 0,ON;:AGND? 0\n", b"0;1\n"), (b"*RST;:AGND? 0\n", b"0\n")])


def test_three_digit_outputs_on_a_big_matrix() -> None:
    matrix = SimSwitchMatrix(128)
    replay(matrix, [
        (b":CLOS (@001001,002128)\n", b""),
        (b":CLOS:CARD? 0\n", b"(@001001,002128)\n"),
        (b":CLOS (@00101)\n", b""),
        (b"SYST:ERR?\n", b'-224,"Illegal parameter value"\n'),
    ])
