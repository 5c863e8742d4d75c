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


def test_output_path_where_the_file_system_refuses_a_file_is_refused(tmp_path, monkeypatch):
    import tempfile

    def refused(*args, dir=None, **kwargs):  # what a read-only mount or an ACL answers, even to root
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(ConfigError, match=f"--out .*: cannot write in {tmp_path} \\(Permission denied\\)"):
        check_output_path(tmp_path / "plan.npz", "--out")


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


@pytest.mark.parametrize("residual", [[], ["--residual"]])
@pytest.mark.parametrize("zero_layer", [0, 1])
def test_a_plan_with_an_all_zero_layer_reads_back(small_lab, tmp_path, capsys, zero_layer, residual):
    """A layer of zeros closes nothing and reads back exactly; with ``--residual`` too (its residual
    is none: the measurement of a tile that closes nothing is read noise)."""
    _, lab, cal = small_lab
    weights = _weights(tmp_path / "w.npz", zero_layer=zero_layer)
    plan = tmp_path / "plan.npz"
    assert main(["program", "--weights", str(weights), "--calibration", str(cal), "--lab", str(lab),
                 "--out", str(plan), "--json", *residual]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    other = layers[1 - zero_layer]
    # the zero layer is mapped at the scale of a unit weight, not at 1e296 S per weight
    assert layers[zero_layer]["conductance_per_weight_s"] < 10 * other["conductance_per_weight_s"]
    assert all(np.isfinite(layer["weight_error_bits"]) for layer in layers)
    assert main(["check", "--plan", str(plan), "--data", str(weights), "--lab", str(lab), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"][zero_layer]["realized_bits"]["median"] == 52.0  # nothing closed: exactly 0
    if zero_layer == 0:  # every sample's output is the second layer's bias: one class
        assert report["agreement"] >= 0.9
    else:  # all outputs 0: the argmax is a tie the read noise decides; the layer reads ~0
        zero = report["layers"][1]
        assert zero["budget"]["total"] < 1e-3  # measured 8.5e-5, all read noise (mean square, weight units)


def test_program_residual_writes_a_residual_plan_that_check_adds(small_lab, tmp_path, capsys):
    """``crossbar program --residual``: the plan carries its residual plan (at a larger scale, the
    joint cost's weight for it), ``check`` adds it, and the weights land nearer on the truth."""
    _, lab, cal = small_lab
    weights = _weights(tmp_path / "w.npz")
    realized = {}
    for flags in ([], ["--residual"]):
        plan = tmp_path / f"plan{len(flags)}.npz"
        assert main(["program", "--weights", str(weights), "--calibration", str(cal), "--lab", str(lab),
                     "--out", str(plan), "--json", *flags]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["residual"] is not None) == bool(flags)
        if flags:
            for layer, scale in zip(result["layers"], result["residual"]["conductance_per_weight_s"]):
                assert scale > 10 * layer["conductance_per_weight_s"]
            assert result["residual"]["cost"]["switch_writes"] > 0
        assert main(["check", "--plan", str(plan), "--data", str(weights), "--lab", str(lab), "--json"]) == 0
        realized[bool(flags)] = [layer["realized_bits"]["median"] for layer in json.loads(capsys.readouterr().out)["layers"]]
    # measured (10x10x6, the default profile pcb): realized median 10.81 / 10.28 -> 12.69 / 12.19 bits
    assert all(after > before + 1.0 for before, after in zip(realized[False], realized[True]))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("crossbar: error:") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, said", [
    (["program", "--max-iterations", "-1"], "argument --max-iterations: expected an integer from 0 to 20, got -1"),
    (["program", "--max-iterations", "21"], "from 0 to 20, got 21"),
    (["program", "--max-tiles", "0"], "argument --max-tiles: expected an integer >= 1, got 0"),
    (["check", "--nplc", "-3"], "argument --nplc: expected a finite number > 0, got -3"),
    (["check", "--nplc", "nan"], "finite number > 0, got nan"),
    (["demo", "--samples", "0"], "argument --samples: expected an integer >= 1, got 0"),
    (["demo", "--samples", "-5"], "got -5"),
    (["demo", "--samples", "many"], "expected an integer >= 1, got 'many'"),
    (["info", "--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_options_are_one_line_before_any_work(argv, said, capsys):
    assert main(argv) == EXIT_ERROR  # program/check lack required files: the option is refused first
    assert said in _one_error_line(capsys)


def test_options_models_refusals_name_the_option():
    from crossbar_ctl.cli._main import build_options
    from crossbar_ctl.engine._program import ProgramOptions

    with pytest.raises(ConfigError, match=r"^--max-iterations -1: Input should be greater than or equal to 0$"):
        build_options(ProgramOptions, max_iterations=-1)
    assert build_options(ProgramOptions, max_iterations=5).max_iterations == 5


def test_a_validation_error_from_any_model_is_one_line(monkeypatch, capsys):
    import crossbar_ctl._lab
    from crossbar_ctl.core.config import Limits

    def refused(*args, **kwargs):
        return Limits(max_voltage_v=-1.0)

    monkeypatch.setattr(crossbar_ctl._lab, "lab_info", refused)
    assert main(["info"]) == EXIT_ERROR
    assert "Limits: max_voltage_v = -1.0: Input should be greater than 0" in _one_error_line(capsys)


def test_run_demo_refuses_a_bad_sample_count_before_any_work(monkeypatch):
    import crossbar_ctl.engine._demo as demo
    from crossbar_ctl.core.errors import EngineError

    monkeypatch.setattr(demo, "load_network", lambda *a: pytest.fail("work started"))
    for samples in (0, -5, 2.5, True):
        with pytest.raises(EngineError, match=f"samples = {samples!r}: expected a positive whole number"):
            demo.run_demo(samples=samples, show_progress=False)


def test_demo_refuses_more_samples_than_the_test_set_before_calibrating(monkeypatch, capsys):
    import crossbar_ctl.engine._demo as demo

    monkeypatch.setattr(demo, "demo_lab", lambda *a, **k: pytest.fail("work started"))
    assert main(["demo", "--samples", "361"]) == EXIT_ERROR
    assert "samples = 361: digits_mlp has only 360 test samples" in _one_error_line(capsys)


@pytest.mark.parametrize("argv", [
    ["program", "--weights", "missing.npz", "--calibration", "missing.npz", "--out", "{file}/plan.npz"],
    ["check", "--plan", "missing.npz", "--data", "missing.npz", "--out", "{file}/report.json"],
    ["check", "--plan", "missing.npz", "--data", "missing.npz", "--plot", "{file}/check.png"],
    ["demo", "--plot", "{file}"],
])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys, argv):
    afile = tmp_path / "a-file"
    afile.write_text("")
    argv = [arg.replace("{file}", str(afile)) for arg in argv]
    option = next(arg for arg in argv if "a-file" in arg)
    assert main(argv) == EXIT_ERROR  # the inputs don't exist: the output was checked first
    err = _one_error_line(capsys)
    assert f"{argv[argv.index(option) - 1]} {option}" in err and "missing.npz" not in err


def test_max_tiles_is_an_option_and_the_message_names_it(small_lab, tmp_path, capsys):
    _, lab, cal = small_lab
    weights = _weights(tmp_path / "w.npz")  # layer 0: 6 outputs on 5 pairs, 2 tiles
    argv = ["program", "--weights", str(weights), "--calibration", str(cal), "--lab", str(lab),
            "--out", str(tmp_path / "plan.npz"), "--json"]
    assert main([*argv, "--max-tiles", "1"]) == EXIT_ERROR
    err = _one_error_line(capsys)
    assert "needs 2 tiles" in err and "limit of 1" in err and "--max-tiles" in err
    assert not (tmp_path / "plan.npz").exists()
    assert main([*argv, "--max-tiles", "2"]) == 0
    assert [layer["tiles"] for layer in json.loads(capsys.readouterr().out)["layers"]] == [2, 1]


def test_dash_capital_v_is_the_version(capsys):
    from crossbar_ctl import __version__

    assert main(["-V"]) == 0
    assert capsys.readouterr().out.strip() == f"crossbar-ctl {__version__}"


def _every_option():
    import argparse

    from crossbar_ctl.cli._main import build_parser

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif action.option_strings and action.help is not argparse.SUPPRESS:
                yield parser, action

    return list(walk(build_parser()))


def test_every_option_of_every_command_has_help_with_its_default():
    import argparse

    options = _every_option()
    commands = {parser.prog for parser, _ in options}
    assert {"crossbar demo", "crossbar program", "crossbar check", "crossbar info", "crossbar sim serve",
            "crossbar bench solver", "crossbar bench circuit", "crossbar calibrate"} <= commands
    missing = [f"{parser.prog} {action.option_strings[-1]}" for parser, action in options
               if not (action.help or "").strip()]
    assert not missing, f"options without help: {missing}"
    for parser, action in options:
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if not unset:
            text = parser._get_formatter()._expand_help(action)
            forms = {str(default)} | ({f"{default:g}"} if isinstance(default, (int, float)) else set())
            assert "default" in text and any(form in text for form in forms), \
                f"{parser.prog} {action.option_strings[-1]}: default {default!r} not in {text!r}"


def test_json_is_documented_on_program_and_check(capsys):
    for command in ("program", "check"):
        assert main([command, "--help"]) == 0
        assert "--json" in capsys.readouterr().out
        help_ = next(a.help for p, a in _every_option() if p.prog == f"crossbar {command}"
                     and "--json" in a.option_strings)
        assert "JSON" in help_


def test_help_appends_defaults_including_zero_but_not_unset_ones():
    from crossbar_ctl.cli._main import _Parser

    parser = _Parser(prog="x")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--rate", type=float, default=2.5, help="a rate (default 2.5 per s)")
    parser.add_argument("--flag", action="store_true", help="a flag")
    parser.add_argument("--name", help="a name")
    text = " ".join(parser.format_help().split())
    assert "random seed (default: 0)" in text
    assert "(default 2.5 per s) --flag" in text  # not said twice
    assert "a flag --name" in text and text.endswith("a name")


def test_program_defaults_and_bounds_are_the_options_models_own():
    from crossbar_ctl.engine._plan import PlanOptions
    from crossbar_ctl.engine._program import ProgramOptions

    actions = {action.dest: action for parser, action in _every_option() if parser.prog == "crossbar program"}
    assert actions["max_tiles"].default == PlanOptions().max_tiles
    assert actions["max_iterations"].default == ProgramOptions().max_iterations
    bounds = ProgramOptions.model_fields["max_iterations"].metadata
    low = next(m.ge for m in bounds if hasattr(m, "ge"))
    high = next(m.le for m in bounds if hasattr(m, "le"))
    assert actions["max_iterations"].type(str(low)) == low and actions["max_iterations"].type(str(high)) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(Exception, match="expected an integer"):
            actions["max_iterations"].type(str(outside))
