"""``crossbar calibrate`` on a small simulated lab file."""

import json

import numpy as np
import pytest

from calibration import CalibrationRecord
from crossbar_ctl.cli._main import main

LAB = """
name = "small"
[sim]
rows = 6
cols = 6
branches = 4
seed = 7
faults = [{kind = "open_resistor", row = 1, col = 2, branch = 3}]
"""


def test_calibrate_json_plot_and_reload(tmp_path, capsys):
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB)
    out, plot = tmp_path / "cal.npz", tmp_path / "cal.png"
    code = main(["calibrate", "--lab", str(lab), "--out", str(out), "--json", "--plot", str(plot)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("branches", "flagged", "median_rel_sigma", "readings", "wall_s", "round_trips"):
        assert key in result
    assert result["branches"] == 6 * 6 * 4 and result["flagged"] == 1
    assert result["flagged_by_kind"] == {"open": 1}
    assert 0 < result["median_rel_sigma"] < 1e-3
    assert plot.stat().st_size > 1000
    record = CalibrationRecord.load(out)
    assert record.header.complete and np.isfinite(record.conductance_s).all()


def test_table_output_and_resume_of_a_complete_record(tmp_path, capsys):
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB)
    out = tmp_path / "cal.npz"
    assert main(["calibrate", "--lab", str(lab), "--out", str(out)]) == 0
    assert "median_rel_sigma" in capsys.readouterr().out
    assert main(["calibrate", "--lab", str(lab), "--out", str(out), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["branches"] == 144


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["calibrate", "--lab", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crossbar: error:") and "\n" not in err
    corrupt = tmp_path / "cal.npz"
    corrupt.write_bytes(b"not a zip")
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB)
    assert main(["calibrate", "--lab", str(lab), "--out", str(corrupt), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated or corrupt" in err and "\n" not in err
    assert main(["calibrate", "--lab", str(lab), "--repeats", "1"]) == 2
    assert "repeats" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quick_json(capsys):
    assert main(["bench", "calibrate", "--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    throughput = result["throughput"]
    assert {row["transport"] for row in throughput} == {"in-process", "tcp+pty"}
    assert all(row["branches_per_s"] > 0 and row["round_trips"] > 0 for row in throughput)
    for row in result["accuracy (healthy branches vs truth)"]:
        assert 0.8 <= row["z_sd"] <= 1.25 and row["faults_flagged"] == "8/8" and row["healthy_flagged"] == 0
    gains = result["weighing design vs one at a time (same readings)"]
    for entry in gains:  # measured and predicted gains agree within a factor 1.5 either way
        assert 1 / 1.5 < entry["gain_measured"] / entry["gain_theory"] < 1.5
