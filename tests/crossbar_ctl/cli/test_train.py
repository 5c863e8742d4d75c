"""crossbar train -> program --plan -> check on a simulated lab; bench lottery-train; one-line errors."""

from __future__ import annotations

import json
import sys

import pytest

from crossbar_ctl.cli._main import EXIT_ERROR, main

pytest.importorskip("torch")
pytest.importorskip("sklearn")

LAB = """name = "train-test"
[sim]
rows = 24
cols = 24
branches = 8
seed = 1
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A calibrated 24x24x8 pcb lab, 4x4 digits (2x2 means of the 8x8) in a data file, a trained plan."""
    from crossbar_ctl.engine._datasets import Dataset, digits_8x8, save_training_data

    tmp = tmp_path_factory.mktemp("train")
    lab = tmp / "lab.toml"
    lab.write_text(LAB)
    assert main(["calibrate", "--lab", str(lab), "--out", str(tmp / "cal.npz"), "--json"]) == 0
    small = digits_8x8()
    pool = lambda x: x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(x), 16)  # noqa: E731
    save_training_data(tmp / "data.npz", Dataset("digits4", pool(small.train_x), small.train_y,
                                                 pool(small.test_x), small.test_y, (1, 4, 4)))
    return tmp, lab


@pytest.mark.slow  # 10 s of CPU, a minute on a loaded machine
def test_train_program_check_on_a_simulated_lab(trained, capsys):
    tmp, lab = trained
    cal, data, plan, done = (str(tmp / name) for name in ("cal.npz", "data.npz", "plan.npz", "done.npz"))
    capsys.readouterr()
    # a net this small needs a gentler rate than the default (2.0: 0.28 here, 64-32-10's best)
    assert main(["train", "--calibration", cal, "--data", data, "--arch", "16-8-10", "--epochs", "8",
                 "--learning-rate", "0.5", "--out", plan, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_samples"] == 360 and summary["arch"] == "16-8-10"
    assert summary["test_accuracy"] > 0.7  # measured 0.82; a random mask: ~0.1
    assert main(["program", "--plan", plan, "--calibration", cal, "--lab", str(lab), "--out", done, "--json"]) == 0
    programmed = json.loads(capsys.readouterr().out)
    assert programmed["tiles"] == 2 and programmed["program"]["iterations"]
    assert main(["check", "--plan", done, "--data", data, "--lab", str(lab), "--samples", "120", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agreement"] >= 0.95  # measured 1.0
    assert abs(report["analog_accuracy"] - report["digital_accuracy"]) <= 0.03
    assert report["digital_accuracy"] > 0.7


def test_a_plan_of_another_calibration_is_refused(trained, tmp_path, capsys):
    tmp, lab = trained
    other = tmp_path / "lab.toml"
    other.write_text(LAB.replace("seed = 1", "seed = 2"))
    assert main(["calibrate", "--lab", str(other), "--out", str(tmp_path / "cal.npz"), "--json"]) == 0
    assert main(["train", "--calibration", str(tmp_path / "cal.npz"), "--data", str(tmp / "data.npz"),
                 "--arch", "16-8-10", "--epochs", "0", "--out", str(tmp_path / "plan.npz"), "--json"]) == 0
    capsys.readouterr()
    assert main(["program", "--plan", str(tmp_path / "plan.npz"), "--calibration", str(tmp / "cal.npz"),
                 "--lab", str(lab), "--out", str(tmp_path / "done.npz")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "made from another calibration record" in err and err.count("\n") == 1
    assert not (tmp_path / "done.npz").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--arch", "63-10"], "starts with 63 inputs but the data has 64"),
    (["--arch", "64-c4k3-4"], "the last layer must be dense with at least 10 outputs"),
    (["--keep-fraction", "1.5"], "--keep-fraction 1.5: Input should be less than or equal to 1"),
    (["--data", "nothing.npz"], "no such data file"),
])
def test_train_refuses_in_one_line_and_writes_nothing(trained, tmp_path, capsys, argv, message):
    tmp, _ = trained
    out = tmp_path / "plan.npz"
    base = ["train", "--calibration", str(tmp / "cal.npz"), "--data", "digits8", "--out", str(out)]
    assert main(base + argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_without_torch_train_names_the_extra(trained, tmp_path, capsys, monkeypatch):
    tmp, _ = trained
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert main(["train", "--calibration", str(tmp / "cal.npz"), "--data", "digits8",
                 "--out", str(tmp_path / "plan.npz")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "pip install 'crossbar-ctl[train]'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_bench_lottery_train_rows_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "accuracy.png"
    assert main(["bench", "lottery-train", "--rows", "24", "--cols", "24", "--arch", "64-8-10", "--epochs", "4",
                 "--samples", "60", "--plot", str(plot), "--json"]) == 0
    rows = {row["method"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["dense+subset-sum", "edge-popup-measured", "random-mask"]
    assert set(rows["random-mask"]) >= {"method", "arch", "digital_accuracy", "analog_accuracy", "agreement",
                                        "enob_min", "train_s"}
    assert rows["edge-popup-measured"]["digital_accuracy"] > rows["random-mask"]["digital_accuracy"] + 0.4
    assert rows["dense+subset-sum"]["agreement"] >= 0.9 and rows["edge-popup-measured"]["agreement"] >= 0.9
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
