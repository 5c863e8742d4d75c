"""``crossbar study``: a summary table or JSON and a plot, resumed from its task files; one-line errors."""

import json
import socket

import pytest

from crossbar_ctl.cli._main import EXIT_ERROR, main

TINY = ["--arrays", "1", "--spread", "0.05,0.2", "--branches", "2", "--rows", "2", "--cols", "2"]


def test_study_prints_its_summary_plots_it_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "study"
    argv = ["study", *TINY, "--out", str(out), "--plot", str(tmp_path / "study.png"), "--min-bits", "3", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["spread"], row["arrays"]) for row in rows] == [(0.05, 1), (0.2, 1)]
    for row in rows:  # pcb 2x2x2: 2.9 to 6 bits median; one array each: yield 0 or 1
        assert 1.0 < row["realized_bits_median"] < 8.0 and row["yield"] in (0.0, 1.0)
    assert len(list(out.glob("*.json"))) == 2
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*.json")}
    assert main(argv) == 0  # resumed: nothing run again, the same summary
    assert json.loads(capsys.readouterr().out) == rows
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.json")} == stamps


def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from crossbar_ctl.engine import _distributed

    monkeypatch.setattr(_distributed, "SCHEDULER_TIMEOUT_S", 1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "study"
    assert main(["study", *TINY, "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{port}"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"crossbar: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert err.count("\n") == 1
    assert not list(out.glob("*.json"))


@pytest.mark.parametrize("argv, said", [
    (["--spread", "0.1,x"], "argument --spread: expected comma-separated spreads in [0, 1)"),
    (["--spread", "1.5"], "a spread is from 0 to below 1, got 1.5"),
    (["--branches", "8,99"], "argument --branches: expected comma-separated branch counts 1..16"),
    (["--profile", "pcb,lab"], "a profile is ideal, pcb or harsh, got 'lab'"),
    (["--workers", "2", "--scheduler", "tcp://h:8786"], "argument --scheduler: not allowed with argument --workers"),
])
def test_bad_study_options_are_one_line(argv, said, tmp_path, capsys):
    assert main(["study", "--arrays", "1", "--out", str(tmp_path), *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
