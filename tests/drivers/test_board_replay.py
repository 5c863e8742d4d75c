"""Protocol replays for the switch board and the switch matrix."""

import math

import numpy as np
import pytest

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import InstrumentReportedError, LimitError, ProtocolError
from drivers import KeysightE5250A, SafetyGuard, SwitchBoard, crc16_ccitt
from tests.drivers.scripted import NO_ERROR, ScriptedTransport

BOARD_CONNECT = [("*IDN?", "OK CROSSBAR-CTL,SB-1,0001,1.0"), ("GEOM?", "OK 2 3 4"), ("CAP?", "OK MVM")]


def connect_board(steps=(), *, cap="MVM", guard=None):
    connect = BOARD_CONNECT[:2] + [("CAP?", f"OK {cap}".strip())]
    t = ScriptedTransport(connect)
    board = SwitchBoard(t, guard=guard)
    t.assert_done()
    t.extend(steps)
    return board, t


def test_crc16_ccitt_false_check_value():
    assert crc16_ccitt("123456789") == 0x29B1


def test_connect_reads_identity_geometry_capabilities():
    board, t = connect_board()
    assert board.idn == "CROSSBAR-CTL,SB-1,0001,1.0"
    assert board.geometry() == (2, 3, 4)
    assert board.capabilities() == {"MVM"} and board.has_readout


def test_board_without_readout():
    board, _ = connect_board(cap="")
    assert board.capabilities() == set() and not board.has_readout


def test_a_scpi_instrument_is_not_a_board():
    t = ScriptedTransport([("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,1,1")])
    with pytest.raises(ProtocolError, match="expected OK or ERR"):
        SwitchBoard(t)


def test_masks_routes_and_status():
    board, t = connect_board([
        ("SET 1 2 a", "OK"), ("GET? 1 2", "OK a"),
        ("ROUTE ROW 1 SRC", "OK"), ("ROUTE COL * GND", "OK"), ("ROUTE COL 2 SENSE", "OK"),
        ("ROUTE? ROW 1", "OK SRC"), ("ROUTE? COL 0", "OK GND"),
        ("TEMP?", "OK 25.50"), ("ERR?", "OK 3 out of range"), ("ERR?", "OK 0 No error"),
        ("SAFE", "OK"), ("*RST", "OK"),
    ])
    board.set_mask(1, 2, 0xA)
    assert board.get_mask(1, 2) == 0xA
    board.route_row(1, "src")
    board.route_col("*", "GND")
    board.route_col(2, "SENSE")
    assert board.row_route(1) == "SRC" and board.col_route(0) == "GND"
    assert board.temperature_c() == 25.5
    assert board.errors() == [(3, "out of range")]
    board.safe()
    board.reset()
    t.assert_done()


def test_load_row_checksums_and_reads_back():
    text = "1,f,0"
    board, t = connect_board([
        (f"LOAD 0 {text} {crc16_ccitt(text):04x}", "OK"), ("ROW? 0", f"OK {text} {crc16_ccitt(text):04x}"),
    ])
    board.load_row(0, [1, 15, 0])
    t.assert_done()


def test_load_row_read_back_mismatch_raises():
    text = "1,f,0"
    board, t = connect_board([
        (f"LOAD 0 {text} {crc16_ccitt(text):04x}", "OK"), ("ROW? 0", f"OK 1,f,1 {crc16_ccitt('1,f,1'):04x}"),
    ])
    with pytest.raises(ProtocolError, match="differs"):
        board.load_row(0, [1, 15, 0])


def test_row_read_back_with_bad_crc_raises():
    board, t = connect_board([("ROW? 1", "OK 1,2,3 0000")])
    with pytest.raises(ProtocolError, match="ROW"):
        board.read_row(1)


def test_load_masks_sends_only_changed_rows():
    board, t = connect_board([
        ("SAFE", "OK"),
        (f"LOAD 1 1,2,3 {crc16_ccitt('1,2,3'):04x}", "OK"), ("ROW? 1", f"OK 1,2,3 {crc16_ccitt('1,2,3'):04x}"),
    ])
    board.safe()
    assert board.load_masks(np.array([[0, 0, 0], [1, 2, 3]], dtype=np.uint64)) == 1
    assert board.load_masks(np.array([[0, 0, 0], [1, 2, 3]])) == 0
    t.assert_done()  # row 0, unchanged, was never sent


def test_load_masks_reads_the_board_first_when_unknown():
    crc = crc16_ccitt("0,0,0")
    board, t = connect_board([("ROW? 0", f"OK 0,0,0 {crc:04x}"), ("ROW? 1", f"OK 0,0,0 {crc:04x}")])
    assert board.load_masks(np.zeros((2, 3), dtype=np.uint64)) == 0
    t.assert_done()


def test_rows_are_loaded_and_read_back_a_line_on_a_board_with_batch():
    a, b = crc16_ccitt("1,2,3"), crc16_ccitt("4,5,6")
    load = ("LOADB 0,1 1,2,3;4,5,6 " + f"{crc16_ccitt('1,2,3;4,5,6'):04x}", "OK")
    batched, t = connect_board([("SAFE", "OK"), load] + [("ROWS? 0,1", f"OK 1,2,3 {a:04x};4,5,6 {b:04x}")] * 2,
                               cap="BATCH")
    plain, u = connect_board([("SAFE", "OK"), (f"LOAD 0 1,2,3 {a:04x}", "OK"), (f"LOAD 1 4,5,6 {b:04x}", "OK")]
                             + [("ROW? 0", f"OK 1,2,3 {a:04x}"), ("ROW? 1", f"OK 4,5,6 {b:04x}")] * 2)
    masks = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint64)
    for board in (batched, plain):
        board.safe()
        assert board.load_masks(masks) == 2
        np.testing.assert_array_equal(board.read_masks(), masks)
        assert board.row_writes == 2
    assert t.round_trips == 3 + 4 and u.round_trips == 3 + 7  # connect, then 4 against 7
    t.assert_done()
    u.assert_done()
    wrong, w = connect_board([("SAFE", "OK"), load,
                              ("ROWS? 0,1", f"OK 1,2,3 {a:04x};4,5,7 {crc16_ccitt('4,5,7'):04x}")], cap="BATCH")
    wrong.safe()
    with pytest.raises(ProtocolError, match="read back differs"):
        wrong.load_masks(masks)
    w.extend([("ROWS? 0,1", f"OK 1,2,3 {a:04x}")])  # one row for two
    with pytest.raises(ProtocolError, match="expected 2 rows"):
        wrong.read_masks()


def test_board_error_reply_raises_with_code_and_command():
    board, t = connect_board([("SET 0 0 1", "ERR 8 hardware fault")])
    with pytest.raises(InstrumentReportedError) as info:
        board.set_mask(0, 0, 1)
    assert (info.value.code, info.value.text) == (8, "hardware fault")
    assert "SET 0 0 1" in str(info.value)


def test_readout_commands_and_mvm():
    board, t = connect_board([
        ("SAFE", "OK"), ("SET 0 0 1", "OK"),
        ("DACMAX?", "OK 1"), ("DACBITS?", "OK 16"), ("ADCRANGE 0.001", "OK"), ("ADCRANGE?", "OK 0.001"),
        ("ADCNPLC 0.1", "OK"), ("ADCNPLC?", "OK 0.1"),
        ("MVM 0.1,-0.05", "OK 1.000000000e-05,0.000000000e+00,9.91e37"),
    ])
    board.safe()
    board.set_mask(0, 0, 1)
    assert board.dac_max_v() == 1.0
    assert board.dac_lsb_v() == 2.0**-15 and board.dac_lsb_v() == 2.0**-15  # asked once
    board.set_adc_range_a(1e-3)
    assert board.adc_range_a() == 1e-3
    board.set_adc_nplc(0.1)
    assert board.adc_nplc() == 0.1
    current = board.mvm([0.1, -0.05])
    assert current[0] == 1e-5 and current[1] == 0 and math.isnan(current[2])
    t.assert_done()


def test_a_batch_is_one_mvmb_line_on_a_board_with_batch_and_one_mvm_a_vector_without():
    reply = "1.000000000e-05,0.000000000e+00,9.91e37"
    batched, t = connect_board([("SAFE", "OK"), ("ADCNPLC 0.1", "OK"), ("DACMAX?", "OK 1"),
                                ("MVMB 0.1,-0.05;0,0.2;0.3,0", f"OK {reply};{reply};{reply}")], cap="MVM BATCH")
    plain, u = connect_board([("SAFE", "OK"), ("DACMAX?", "OK 1")] + [(f"MVM {v}", f"OK {reply}") for v in ("0.1,-0.05", "0,0.2", "0.3,0")])
    batched.safe()
    plain.safe()
    batched.set_adc_nplc(0.1)
    voltage = [[0.1, -0.05], [0, 0.2], [0.3, 0]]
    for board in (batched, plain):
        current = board.mvm(voltage)
        assert current.shape == (3, 3) and np.all(current[:, 0] == 1e-5) and np.all(np.isnan(current[:, 2]))
    assert t.round_trips == 3 + 4 and u.round_trips == 3 + 5  # connect, then 4 against 5
    t.assert_done()
    u.assert_done()
    assert batched.transport.timeout_s == 1.0  # the batch's longer wait ended with it


def test_a_batch_checks_every_vector_first_and_splits_at_the_line_limit():
    from drivers._board import LINE_BYTES

    board, t = connect_board([("SAFE", "OK"), ("DACMAX?", "OK 0.5")], cap="MVM BATCH")
    board.safe()
    board.dac_max_v()
    with pytest.raises(LimitError, match="dac_max_v"):
        board.mvm([[0.1, 0.0], [0.0, 0.6]])  # the second vector: nothing sent
    t.assert_done()
    voltage = np.full((8000, 2), 0.123456789)  # within DACMAX? 0.5  # 8000 vectors of 23 bytes: 3 lines
    text = "0.123456789,0.123456789"
    t.extend([("ADCNPLC?", "OK 1")] + [(f"MVMB {';'.join([text] * n)}", "OK " + ";".join(["1e-06,2e-06,3e-06"] * n))
                                       for n in (2730, 2730, 2540)])
    assert board.mvm(voltage).shape == (8000, 3)
    assert all(len(line) + 1 <= LINE_BYTES for line in t.sent)
    t.assert_done()


def test_mvm_refused_beyond_the_dac_range_sends_nothing():
    board, t = connect_board([("DACMAX?", "OK 0.2")], guard=SafetyGuard(Limits(max_voltage_v=1)))
    board.dac_max_v()
    with pytest.raises(LimitError, match="dac_max_v"):
        board.mvm([0.5, 0.0])
    t.assert_done()


def test_mvm_refused_beyond_the_total_current_bound():
    guard = SafetyGuard(Limits(max_total_current_a=1e-3), min_resistance_ohm=1e3)
    board, t = connect_board([("SAFE", "OK"), (f"LOAD 0 f,f,f {crc16_ccitt('f,f,f'):04x}", "OK"),
                              ("ROW? 0", f"OK f,f,f {crc16_ccitt('f,f,f'):04x}"), ("DACMAX?", "OK 1")], guard=guard)
    board.safe()
    board.load_row(0, [15, 15, 15])   # 12 branches of >= 1 kohm on row 0: 12 mS
    with pytest.raises(LimitError, match="max_total_current_a"):
        board.mvm([0.1, 0.0])          # up to 1.2 mA
    t.assert_done()  # and nothing further was sent: the script would have failed


@pytest.mark.parametrize("call", [
    lambda b: b.set_mask(2, 0, 1), lambda b: b.set_mask(0, 3, 1), lambda b: b.set_mask(0, 0, 16),
    lambda b: b.set_mask(-1, 0, 1), lambda b: b.set_mask(0, 0, 1.0), lambda b: b.set_mask(True, 0, 1),
    lambda b: b.load_row(0, [1, 2]), lambda b: b.load_row(0, [1, 2, 99]), lambda b: b.load_row(0, [0.5, 1, 1]),
    lambda b: b.load_masks(np.zeros((3, 3), dtype=int)),
    lambda b: b.route_row(0, "SENSE"), lambda b: b.route_col(0, "SRC"), lambda b: b.route_row(5, "GND"),
    lambda b: b.set_adc_nplc(20), lambda b: b.set_adc_range_a(-1), lambda b: b.mvm([2.0, 0.0]),
    lambda b: b.mvm([0.1, 0.1, 0.1]),
])
def test_invalid_board_values_raise_and_send_nothing(call):
    board, t = connect_board()
    with pytest.raises(LimitError):
        call(board)
    assert len(t.sent) == 3


# ---- switch matrix ------------------------------------------------------------------------------

def connect_matrix(steps=(), *, outputs=20, rule="FREE", closed="(@)"):
    t = ScriptedTransport([("*IDN?", "Agilent Technologies,E5250A,0,B.01.06"),
                           (":ROUT:CONN:RULE? 0", rule), (":ROUT:CLOS:CARD? 0", closed)])
    matrix = KeysightE5250A(t, outputs=outputs)
    t.assert_done()
    t.extend(steps)
    return matrix, t


def test_matrix_commands():
    matrix, t = connect_matrix([
        (":ROUT:CLOS (@00101,00212)", None), NO_ERROR,
        (":ROUT:CLOS:CARD? 0", "(@00101,00212)"),
        (":ROUT:OPEN (@00212)", None), NO_ERROR,
        (":ROUT:CONN:RULE 0,SROU", None), NO_ERROR,
        (":ROUT:CONN:SEQ 0,BBM", None), NO_ERROR,
        (":ROUT:AGND 0,ON", None), NO_ERROR,
        (":ROUT:OPEN:CARD 0", None),
        ("*RST", None), ("*CLS", None), NO_ERROR, (":ROUT:CONN:RULE? 0", "FREE"),
    ])
    matrix.close_channels([(1, 1), (2, 12)])
    assert matrix.closed_channels() == {(1, 1), (2, 12)}
    matrix.open_channels([(2, 12)])
    matrix.set_connection_rule("SROU")
    matrix.set_connection_sequence("bbm")
    matrix.set_ground_unused(True)
    matrix.open_all()
    matrix.reset()
    assert matrix.connection_rule == "FREE"
    t.assert_done()


def test_matrix_reads_ranges_in_closed_lists():
    matrix, t = connect_matrix()
    t.extend([(":ROUT:CLOS:CARD? 0", "(@00101:00203)")])
    assert matrix.closed_channels() == {(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)}


def test_matrix_three_digit_outputs():
    matrix, t = connect_matrix([(":ROUT:CLOS (@001120)", None), NO_ERROR], outputs=128)
    matrix.close_channels([(1, 120)])
    t.assert_done()


def test_matrix_refuses_two_inputs_on_one_output_in_free_rule():
    matrix, t = connect_matrix([(":ROUT:CLOS (@00105)", None), NO_ERROR])
    matrix.close_channels([(1, 5)])
    with pytest.raises(LimitError, match="short"):
        matrix.close_channels([(2, 5)])
    with pytest.raises(LimitError, match="short"):
        matrix.close_channels([(3, 7), (4, 7)])
    t.assert_done()


def test_matrix_single_route_rule_replaces_instead_of_shorting():
    matrix, t = connect_matrix([(":ROUT:CLOS (@00105)", None), NO_ERROR, (":ROUT:CLOS (@00205)", None), NO_ERROR],
                               rule="SROU")
    matrix.close_channels([(1, 5)])
    matrix.close_channels([(2, 5)])
    t.assert_done()


def test_matrix_refuses_a_wrong_model():
    t = ScriptedTransport([("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,1,1")])
    with pytest.raises(ProtocolError, match="E5250A"):
        KeysightE5250A(t)


@pytest.mark.parametrize("call", [
    lambda m: m.close_channels([(11, 1)]), lambda m: m.close_channels([(1, 21)]), lambda m: m.close_channels([]),
    lambda m: m.close_channels([(1,)]), lambda m: m.open_channels([(0, 1)]),
    lambda m: m.set_connection_rule("ANY"), lambda m: m.set_connection_sequence("X"),
    lambda m: m.set_ground_unused("yes"),
])
def test_invalid_matrix_values_raise_and_send_nothing(call):
    matrix, t = connect_matrix()
    with pytest.raises(LimitError):
        call(matrix)
    assert len(t.sent) == 3
