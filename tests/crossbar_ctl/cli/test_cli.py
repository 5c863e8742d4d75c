"""The crossbar command: one line on stderr and a non-zero exit for every error."""

import json

from crossbar_ctl.cli._main import EXIT_ERROR, main, print_table


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
