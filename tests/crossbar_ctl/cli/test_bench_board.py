"""``crossbar bench board``: the switch board's replies per readout vector and per whole-array load,
one line each against batched lines (``BATCH``), in process and over a pty. Replies are
deterministic and checked exactly; times only for consistency."""

import json

import pytest

from crossbar_ctl.cli._main import main


def test_batched_lines_cut_the_replies_on_both_transports(capsys):
    assert main(["bench", "board", "--vectors", "8", "--loads", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    replies = {(row["transport"], row["lines"], row["operation"]): row["replies"] for row in rows}
    for transport in ("in-process", "pty (pyserial)"):
        # a load of 64 changed rows: LOAD and ROW? each, one WAIT; batched: LOADB, ROWS?, WAIT
        assert replies[transport, "one each", "whole-array loads"] == 2 * (64 + 64 + 1)
        assert replies[transport, "batched", "whole-array loads"] == 2 * 3
        # a vector a line; batched: one MVMB line (and ADCNPLC? once, for the batch's wait)
        assert replies[transport, "one each", "readout vectors"] == 8
        assert replies[transport, "batched", "readout vectors"] == 2
    for row in rows:
        assert row["seconds"] > 0 and row["per_s"] == pytest.approx(row["count"] / row["seconds"], rel=1e-9)
