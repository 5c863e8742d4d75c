"""``MVMB`` and ``MVMDB`` (``BATCH`` in ``CAP?``): several vectors a line, read exactly as that many
``MVM`` / ``MVMD`` lines would be (docs/switchboard-protocol.md)."""

from __future__ import annotations

import numpy as np

from crossbar_ctl.core.config import SimArrayConfig
from sim._array import PhysicalArray
from sim._board import SimSwitchBoard


def _board() -> SimSwitchBoard:
    """A pcb board (noise, drift, converters) with difference channels and some branches closed."""
    board = SimSwitchBoard(PhysicalArray(SimArrayConfig(profile="pcb", rows=4, cols=8, branches=4, seed=5,
                                                        physics={"readout": {"differential": True}})))
    board.array.set_masks(np.random.default_rng(0).integers(0, 16, size=(4, 8)).astype(np.uint64))
    return board


def _ask(board: SimSwitchBoard, line: str) -> str:
    return board.feed(line.encode("ascii") + b"\n").decode("ascii")


VECTORS = ["0.1,0,-0.05,0.2", "0,0,0,0", "-0.3,0.1,0.1,0.1"]


def test_a_batch_answers_byte_for_byte_what_its_vectors_answer_one_line_each():
    for single, batch in (("MVM", "MVMB"), ("MVMD", "MVMDB")):
        one, other = _board(), _board()
        assert _ask(one, "CAP?") == "OK MVM DIFF BATCH SETTLE\n"
        replies = [_ask(one, f"{single} {vector}") for vector in VECTORS]
        assert all(reply.startswith("OK ") for reply in replies)
        joined = "OK " + ";".join(reply[3:-1] for reply in replies) + "\n"
        assert _ask(other, f"{batch} {';'.join(VECTORS)}") == joined
        assert one.array.now_s() == other.array.now_s()  # simulated time passed alike
        assert _ask(one, f"{single} {VECTORS[0]}") == _ask(other, f"{single} {VECTORS[0]}")  # and noise drawn alike


def test_a_refused_batch_drives_nothing():
    one, other = _board(), _board()
    assert _ask(one, f"MVMB {VECTORS[0]};0,0,0").startswith("ERR 2")    # the second vector: 3 rows of 4
    assert _ask(one, f"MVMB {VECTORS[0]};0,0,0,5").startswith("ERR 7")  # above DACMAX?
    assert _ask(one, f"MVMB {VECTORS[0]};").startswith("ERR 2")         # an empty vector
    assert _ask(one, "MVMB").startswith("ERR 2")
    assert _ask(one, f"MVM {VECTORS[2]}") == _ask(other, f"MVM {VECTORS[2]}")  # nothing read, no time passed
    one.has_batch = False  # a board without it
    assert _ask(one, "CAP?") == "OK MVM DIFF SETTLE\n"
    assert _ask(one, f"MVMB {VECTORS[0]}").startswith("ERR 6")
    assert _ask(one, f"MVMDB {VECTORS[0]}").startswith("ERR 6")


def test_rows_reads_rows_back_as_row_does():
    board = _board()
    rows = [_ask(board, f"ROW? {row}")[3:-1] for row in (2, 0, 3)]
    assert _ask(board, "ROWS? 2,0,3") == "OK " + ";".join(rows) + "\n"
    assert _ask(board, "ROWS? 2,4").startswith("ERR 3")   # 4 rows: 0..3
    assert _ask(board, "ROWS? 2,x").startswith("ERR 2")
    assert _ask(board, "ROWS?").startswith("ERR 2")
    board.has_batch = False
    assert _ask(board, "ROWS? 0").startswith("ERR 6")


def test_loadb_sets_rows_as_loads_do_or_nothing():
    from sim._board import crc16

    one, other = _board(), _board()
    texts = ["1,2,3,4,5,6,7,8", "f,e,d,c,b,a,9,0"]
    for row, text in zip((3, 1), texts):
        assert _ask(one, f"LOAD {row} {text} {crc16(text):04x}") == "OK\n"
    batch = ";".join(texts)
    assert _ask(other, f"LOADB 3,1 {batch} {crc16(batch):04x}") == "OK\n"
    np.testing.assert_array_equal(one.array.masks, other.array.masks)
    assert _ask(one, f"MVM {VECTORS[0]}") == _ask(other, f"MVM {VECTORS[0]}")  # the same physics since
    before = other.array.masks.copy()
    bad = "0,0,0,0,0,0,0,0;0,0,0,0,0,0,0,10"  # the second row's last mask: 5 bits on a 4-branch board
    assert _ask(other, f"LOADB 0,2 {bad} {crc16(bad):04x}").startswith("ERR 3")
    assert _ask(other, f"LOADB 0,2 {batch} 0000").startswith("ERR 5")
    assert _ask(other, f"LOADB 0 {batch} {crc16(batch):04x}").startswith("ERR 2")  # 2 lists, 1 row
    assert _ask(other, f"LOADB 0,4 {batch} {crc16(batch):04x}").startswith("ERR 3")
    np.testing.assert_array_equal(other.array.masks, before)  # a refused LOADB changed nothing
