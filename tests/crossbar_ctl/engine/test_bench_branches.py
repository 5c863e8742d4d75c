"""``crossbar bench branches``: bits against branches per cell through calibrate -> program -> check."""

import json

import numpy as np
import pytest

from crossbar_ctl.cli._main import main


def test_bench_branches_follows_one_bit_per_resistor_on_ideal(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "branches.png"
    assert main(["bench", "branches", "--profile", "ideal", "--rows", "8", "--cols", "8", "--samples", "50",
                 "--branches", "4", "6", "8", "--plot", str(png), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["branches"], row["pool"]) for row in rows] == [(4, 8), (6, 12), (8, 16)]
    keys = {"branches", "pool", "realized_bits_median", "realized_bits_p01", "planned_bits_median",
            "subset_sum_bits_median", "calibration_floor_bits", "readout_floor_bits", "common_mode_ratio",
            "common_mode_full_scale", "enob", "agreement", "refine_readings", "switch_writes", "wall_s"}
    assert all(set(row) == keys for row in rows)
    # measured (32 pairs per row): subset sum 7.2, 11.1, 15.7 bits, 1.07 bits per value of the pair's
    # pool (one per resistor); realized 7.4, 10.2, 11.4 (the calibration's uncertainty caps it);
    # enob 5.4, 8.4, 9.8; agreement 0.98, 1, 1
    pool = np.array([row["pool"] for row in rows], float)
    subset_sum = np.array([row["subset_sum_bits_median"] for row in rows])
    slope = np.polyfit(pool, subset_sum, 1)[0]
    assert 0.85 < slope < 1.25
    for row in rows:
        assert row["realized_bits_p01"] <= row["realized_bits_median"]
        assert row["realized_bits_median"] <= row["subset_sum_bits_median"] + 0.5  # the maths bounds the job
        # (the truth may beat the plan: the refinement corrects what the twin mispredicts, by measurement)
        assert row["agreement"] >= 0.9 and row["wall_s"] > 0 and row["refine_readings"] > 0
    assert rows[2]["realized_bits_median"] > rows[0]["realized_bits_median"] + 3
    assert rows[2]["enob"] > rows[0]["enob"] + 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_branches_refuses_a_bad_profile_before_any_work(capsys):
    assert main(["bench", "branches", "--profile", "lab"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lab'" in err and err.count("\n") == 1


def test_bench_branches_refuses_a_common_mode_weight_of_one_before_any_work(capsys):
    assert main(["bench", "branches", "--common-mode-weight", "1"]) == 2
    err = capsys.readouterr().err
    assert "--common-mode-weight" in err and err.count("\n") == 1
