"""The simulated switch board against docs/switchboard-protocol.md, byte for byte."""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar_ctl.core.config import SimArrayConfig
from sim._array import PhysicalArray
from sim._board import SimSwitchBoard, crc16
from tests.sim.test_scpi import replay


def make_board(**overrides) -> SimSwitchBoard:
    config = dict(rows=64, cols=64, branches=8, seed=3, profile="ideal")  # the board's own model
    config.update(overrides)
    return SimSwitchBoard(PhysicalArray(SimArrayConfig(**config)))


@pytest.fixture
def board() -> SimSwitchBoard:
    return make_board()


def test_the_documented_example_session(board: SimSwitchBoard) -> None:
    replay(board, [
        (b"*IDN?\n", b"OK CROSSBAR-CTL,SB-1,0001,1.0\n"),
        (b"GEOM?\n", b"OK 64 64 8\n"),
        (b"SET 3 5 a1\n", b"OK\n"),
        (b"GET? 3 5\n", b"OK a1\n"),
        (b"ROUTE ROW 3 SRC\n", b"OK\n"),
        (b"ROUTE COL 9 SENSE\n", b"OK\n"),
        (b"SET 99 0 1\n", b"ERR 3 out of range\n"),
        (b"SAFE\n", b"OK\n"),
    ])
    assert board.array.masks[3, 5] == 0
    assert set(board.row_routes) == {"GND"} and set(board.col_routes) == {"GND"}


def test_crc_is_ccitt_false() -> None:
    assert crc16("123456789") == 0x29B1  # the catalogue check value of CRC-16/CCITT-FALSE
    assert crc16("a1,0") == binascii.crc_hqx(b"a1,0", 0xFFFF)


def test_load_and_read_back_a_row() -> None:
    board = make_board(rows=4, cols=4, branches=8)
    text = "ff,0,a1,3"
    crc = f"{crc16(text):04x}"
    replay(board, [
        (f"LOAD 2 {text} {crc}\n".encode(), b"OK\n"),
        (b"ROW? 2\n", f"OK {text} {crc}\n".encode()),
        (f"load 1 {text.upper()} {crc16(text.upper()):04X}\n".encode(), b"OK\n"),
        (b"GET? 1 2\n", b"OK a1\n"),
        (f"LOAD 2 0,0,0,0 {crc}\n".encode(), b"ERR 5 checksum mismatch\n"),
        (f"LOAD 2 0,0,0 {crc16('0,0,0'):04x}\n".encode(), b"ERR 2 bad argument\n"),
        (f"LOAD 2 0,0,0,100 {crc16('0,0,0,100'):04x}\n".encode(), b"ERR 3 out of range\n"),
        (f"LOAD 9 {text} {crc}\n".encode(), b"ERR 3 out of range\n"),
        (f"LOAD 2 {text} {crc}0\n".encode(), b"ERR 2 bad argument\n"),
        (b"ROW? 2\n", f"OK {text} {crc}\n".encode()),  # every failed LOAD changed nothing
    ])
    np.testing.assert_array_equal(board.array.masks[2], [0xFF, 0, 0xA1, 3])


def test_routing_and_safe_state(board: SimSwitchBoard) -> None:
    replay(board, [
        (b"ROUTE? ROW 0;\n", b"ERR 2 bad argument\n"),
        (b"ROUTE ROW * FLOAT\n", b"OK\n"),
        (b"ROUTE ROW 7 SRC\n", b"OK\n"),
        (b"route col 63 sense\n", b"OK\n"),
        (b"ROUTE? ROW 7\n", b"OK SRC\n"),
        (b"ROUTE? ROW 8\n", b"OK FLOAT\n"),
        (b"ROUTE? COL 63\n", b"OK SENSE\n"),
        (b"ROUTE? COL 62\n", b"OK GND\n"),
        (b"ROUTE ROW 1 SENSE\n", b"ERR 3 out of range\n"),
        (b"ROUTE COL 64 GND\n", b"ERR 3 out of range\n"),
        (b"ROUTE DIAG 1 GND\n", b"ERR 2 bad argument\n"),
        (b"*RST\n", b"OK\n"),
        (b"ROUTE? ROW 7\n", b"OK GND\n"),
        (b"ERR?\n", b"OK 0 No error\n"),  # *RST cleared the queue
    ])


@pytest.mark.parametrize(("line", "reply"), [
    (b"FROB", b"ERR 1 unknown command"),
    (b"SET 1 2", b"ERR 2 bad argument"),
    (b"SET 1 2 3 4", b"ERR 2 bad argument"),
    (b"SET -1 2 3", b"ERR 2 bad argument"),
    (b"SET 1 2 0x3", b"ERR 2 bad argument"),
    (b"SET 1 2 1ff", b"ERR 3 out of range"),
    (b"SET 1 64 1", b"ERR 3 out of range"),
    (b"SET  1 2 3", b"ERR 2 bad argument"),
    (b"SET 1 2 3 ", b"ERR 2 bad argument"),
    (b"SET\t1 2 3", b"ERR 2 bad argument"),
    (b"SET 1 2 \xff", b"ERR 2 bad argument"),
    (b"GEOM? 1", b"ERR 2 bad argument"),
    (b"GET? 99999999999999 0", b"ERR 3 out of range"),
])
def test_bad_commands_answer_their_error_and_change_nothing(board: SimSwitchBoard, line: bytes,
                                                            reply: bytes) -> None:
    board.feed(b"SET 1 2 5\n")
    code = reply.split()[1]
    replay(board, [
        (line + b"\n", reply + b"\n"),
        (b"GET? 1 2\n", b"OK 5\n"),
        (b"ERR?\n", b"OK " + reply[4:] + b"\n"),
        (b"ERR?\n", b"OK 0 No error\n"),
    ])
    assert code.isdigit()


def test_framing_empty_crlf_partial_and_over_long_lines(board: SimSwitchBoard) -> None:
    replay(board, [
        (b"\n\r\n", b""),
        (b"GEOM?\r\n", b"OK 64 64 8\n"),
        (b"GE", b""),
        (b"OM?\nCAP?\n", b"OK 64 64 8\nOK MVM BATCH\n"),
        (b"SET 0 0 " + b"1" * 70000, b""),
        (b"\nGET? 0 0\n", b"ERR 4 line too long\nOK 0\n"),
        (b"*CLS\nERR?\n", b"OK\nOK 0 No error\n"),
    ])


def test_error_queue_holds_sixteen(board: SimSwitchBoard) -> None:
    board.feed(b"FROB\n" * 20)
    assert list(board.errors) == [1] * 16
    board.feed(b"*CLS\n")
    assert not board.errors


def test_faults(board: SimSwitchBoard) -> None:
    board.inject_fault("error")
    replay(board, [(b"SET 0 0 1\n", b"ERR 8 hardware fault\n"), (b"GET? 0 0\n", b"OK 0\n")])
    board.inject_fault("hang")
    assert board.feed(b"*IDN?\n") == b""
    board.inject_fault("garbage")
    reply = board.feed(b"*IDN?\n")
    assert reply.endswith(b"\n") and not reply.startswith(b"OK")
    board.inject_fault("drop")
    with pytest.raises(ConnectionAbortedError):
        board.feed(b"*IDN?\n")
    board.clear_fault()
    replay(board, [(b"ERR?\n", b"OK 8 hardware fault\n")])


def test_temperature_follows_the_array(board: SimSwitchBoard) -> None:
    board.array.temperature_c = 31.257
    replay(board, [(b"TEMP?\n", b"OK 31.26\n")])


def test_readout_mvm_is_the_circuit_quantized() -> None:
    board = make_board(rows=6, cols=5, branches=4, relative_noise=0.0, noise_floor_fraction=0.0,
                       adc_bits=12, adc_range_a=1e-3, dac_max_voltage_v=1.0)
    rng = np.random.default_rng(7)
    masks = rng.integers(0, 16, size=(6, 5))
    board.array.set_masks(masks)
    voltage_v = rng.uniform(-0.5, 0.5, 6)
    replay(board, [
        (b"DACMAX?\n", b"OK 1\n"),
        (b"ADCRANGE?;\n", b"ERR 1 unknown command\n"),
        (b"ADCRANGE?\n", b"OK 0.001\n"),
        (b"ADCNPLC 0.5\n", b"OK\n"),
        (b"ADCNPLC?\n", b"OK 0.5\n"),
    ])
    reply = board.feed(("MVM " + ",".join(f"{v:.6f}" for v in voltage_v) + "\n").encode())
    assert reply.startswith(b"OK ") and reply.endswith(b"\n")
    reading = np.array([float(x) for x in reply[3:].split(b",")])
    truth = board.array.circuit().solve(np.round(voltage_v, 6)).col_current_a[0]
    lsb = 2e-3 / 2**12
    assert np.all(np.abs(reading - truth) <= lsb / 2 + 1e-18)
    assert np.allclose(reading / lsb, np.round(reading / lsb))
    assert board.array.time_s == pytest.approx(0.5 / 60)


def test_readout_overflow_unsafe_and_bad_vectors() -> None:
    board = make_board(rows=2, cols=2, branches=2, adc_range_a=1e-6, dac_max_voltage_v=1.0)
    board.array.set_masks(np.full((2, 2), 3))
    replay(board, [
        (b"MVM 0.5,0.5\n", b"OK 9.910000000e+37,9.910000000e+37\n"),
        (b"MVM 0,0\n", b"OK 0.000000000e+00,0.000000000e+00\n"),
        (b"MVM 1.5,0\n", b"ERR 7 unsafe\n"),
        (b"MVM 0.5\n", b"ERR 2 bad argument\n"),
        (b"MVM 0.5,nan\n", b"ERR 2 bad argument\n"),
        (b"ADCRANGE 0\n", b"ERR 3 out of range\n"),
        (b"ADCNPLC 11\n", b"ERR 3 out of range\n"),
        (b"ADCRANGE 2e-3\n", b"OK\n"),
        (b"ADCRANGE?\n", b"OK 0.002\n"),
    ])


def test_readout_commands_need_the_capability() -> None:
    board = make_board(rows=2, cols=2, branches=2, has_readout=False)
    replay(board, [
        (b"CAP?\n", b"OK BATCH\n"),
        (b"MVM 0,0\n", b"ERR 6 not supported\n"),
        (b"DACMAX?\n", b"ERR 6 not supported\n"),
        (b"ADCRANGE bogus\n", b"ERR 6 not supported\n"),
    ])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["SET", "GET?", "LOAD", "ROW?", "ROUTE", "ROUTE?", "ROW", "COL",
                                 "*", "SRC", "MVM", "ADCRANGE", "0", "1", "3", "ff", "-1", "1e9",
                                 "0.5,0.5", ",", "", " ", "\r", "\xe9", "ERR?"]), max_size=8))
def test_no_line_crashes_the_board(tokens: list[str]) -> None:
    board = make_board(rows=2, cols=2, branches=2)
    reply = board.feed(" ".join(tokens).encode("latin-1") + b"\n")
    if reply:  # an empty line is the only one left unanswered
        assert reply.startswith((b"OK", b"ERR ")) and reply.count(b"\n") == 1
    assert board.feed(b"*IDN?\n") == b"OK CROSSBAR-CTL,SB-1,0001,1.0\n"
