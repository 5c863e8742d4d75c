"""The crossbar command: one line on stderr and a non-zero exit for every error."""

import json
import os

import numpy as np
import pytest

from crossbar_ctl.cli._main import EXIT_ERROR, check_output_path, main, print_table
from crossbar_ctl.core.errors import ConfigError


def test_config_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "lab.toml"
    bad.write_text("[limits]\nmax_voltage = 1\n")
    assert main(["info", "--lab", str(bad)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("crossbar: error:") and "limits.max_voltage" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_info_json_on_the_default_simulated_lab(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["rows"], info["cols"], info["branches"]) == (64, 64, 8)
    assert info["simulated"] is True


def test_internal_errors_are_one_line_too(monkeypatch, capsys):
    import crossbar_ctl._lab

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(crossbar_ctl._lab, "lab_info", broken)
    assert main(["info"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == EXIT_ERROR
    assert "usage: crossbar" in capsys.readouterr().out


def test_table_aligns_numbers_right_and_text_left(capsys):
    print_table([{"name": "a", "value": 1.5}, {"name": "bbb", "value": 10.0}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "a       1.5"
    assert lines[3] == "bbb      10"


def test_output_path_below_a_file_is_refused(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*notes.txt is a file, not a directory"):
        check_output_path(afile / "sub" / "plan.npz", "--out")
    with pytest.raises(ConfigError, match="--plot .*is a file, expected a directory"):
        check_output_path(afile, "--plot", directory=True)
    with pytest.raises(ConfigError, match="--out .*is a directory"):
        check_output_path(tmp_path, "--out")


def test_output_path_accepts_new_directories_and_none(tmp_path):
    assert check_output_path(None, "--out") is None
    assert check_output_path(tmp_path / "a" / "b" / "plan.npz", "--out") == tmp_path / "a" / "b" / "plan.npz"
    assert check_output_path(str(tmp_path / "plots"), "--plot", directory=True) == tmp_path / "plots"
    assert not (tmp_path / "a").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_output_path_in_a_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="--out .*cannot write in"):
            check_output_path(locked / "plan.npz", "--out")
    finally:
        locked.chmod(0o755)


SMALL_LAB = '[sim]\nrows = 10\ncols = 10\nbranches = 6\nseed = 1\n'


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    """A calibrated 10x10x6 simulated lab: (directory, lab file, calibration record)."""
    tmp = tmp_path_factory.mktemp("small")
    lab = tmp / "lab.toml"
    lab.write_text(SMALL_LAB)
    assert main(["calibrate", "--lab", str(lab), "--out", str(tmp / "cal.npz"), "--json"]) == 0
    return tmp, lab, tmp / "cal.npz"


def _weights(path, *, zero_layer=None, inputs=8, seed=0):
    """An inputs-6-3 ReLU network saved as .npz; its labels are its own float64 predictions."""
    from crossbar_ctl.engine._network import build_network, save_network

    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(6, inputs)), rng.normal(size=(3, 6))]
    biases = [0.2 * rng.normal(size=6), 0.2 * rng.normal(size=3)]
    if zero_layer is not None:
        weights[zero_layer][:] = 0.0
        biases[zero_layer][:] = 0.0
    shape = dict(input_shape=None, strides=[1, 1], paddings=[0, 0], name="user")
    x = rng.uniform(0, 1, size=(20, inputs))
    net = build_network(weights, biases, ["relu", "none"], **shape)
    save_network(path, build_network(weights, biases, ["relu", "none"], **shape, test_x=x,
                                     test_y=net.predict(x)))
    return path


@pytest.mark.parametrize("zero_layer", [0, 1])
def test_a_plan_with_an_all_zero_layer_reads_back(small_lab, tmp_path, capsys, zero_layer):
    _, lab, cal = small_lab
    weights = _weights(tmp_path / "w.npz", zero_layer=zero_layer)
    plan = tmp_path / "plan.npz"
    assert main(["program", "--weights", str(weights), "--calibration", str(cal), "--lab", str(lab),
                 "--out", str(plan), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    other = layers[1 - zero_layer]
    # the zero layer is mapped at the scale of a unit weight, not at 1e296 S per weight
    assert layers[zero_layer]["conductance_per_weight_s"] < 10 * other["conductance_per_weight_s"]
    assert all(np.isfinite(layer["weight_error_bits"]) for layer in layers)
    assert main(["check", "--plan", str(plan), "--data", str(weights), "--lab", str(lab), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agreement"] >= 0.9
