"""The cost table names its two figures so they cannot be misread: program's prediction is one pass
of the schedule, the count includes what the closed loop wrote (the demo: 92,214 against 33,448)."""

from crossbar_ctl.cli._engine import _cost_table


def test_cost_table_says_the_prediction_is_one_pass(capsys):
    cost = {"boards": 1, "steps": 2, "tiles": 3, "switch_writes": 92_214, "switch_writes_predicted": 33_448,
            "row_writes": 892, "settle_waits": 40, "settle_s_estimate": 0.1}
    _cost_table(cost, "programming")
    out = capsys.readouterr().out
    assert "predicted, one pass" in out and "closed loop included" in out
    assert "92214" in out.replace(",", "") and "33448" in out.replace(",", "")
