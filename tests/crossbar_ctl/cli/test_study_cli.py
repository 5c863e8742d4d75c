"""``crossbar study``: a summary table or JSON and a plot, resumed from its task files; one-line errors;
a started cluster's dashboard link; a worker that dies mid-study."""

import argparse
import json
import os
import re
import signal
import socket
import time
import urllib.request

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


def test_a_started_cluster_prints_its_dashboard_link_and_the_link_serves_the_dashboard(capsys):
    pytest.importorskip("distributed")
    if not os.environ.get("CI"):  # the distributed extra brings bokeh: CI has it, a hand-made venv may not
        pytest.importorskip("bokeh")
    import logging

    from crossbar_ctl.cli._study import cluster

    with cluster(argparse.Namespace(workers=1, scheduler=None)):
        err = capsys.readouterr().err
        assert re.fullmatch(r"Dask dashboard: http://\S+/status\n", err), err
        with urllib.request.urlopen(err.split(": ", 1)[1].strip(), timeout=30) as page:
            body = page.read().decode()
        assert logging.getLogger("distributed").level >= logging.WARNING  # its INFO lines follow -v
    assert page.status == 200 and "<html" in body.lower() and "needs bokeh" not in body


@pytest.mark.slow  # two fresh worker processes and a restarted one: 33-37 s at load 3-7
def test_a_worker_that_dies_mid_study_is_one_line_the_finished_tasks_stay_and_a_rerun_completes(tmp_path, capsys):
    """Through the CLI, on a running scheduler: array 3's worker kills itself once (SIGKILL) after
    another array is kept; the scheduler fails the task at the first death; the same command then
    runs only what is missing."""
    pytest.importorskip("distributed")
    import dask

    from crossbar_ctl.engine._distributed import dask_client

    out, doomed = tmp_path / "study", tmp_path / "killed"

    def die_once_on_array_3(out, doomed):  # runs on each worker: its run_task, before any task
        from crossbar_ctl.engine import _study

        real = _study.run_task

        def run_task(task):
            if task.array == 3 and not doomed.exists():
                deadline = time.monotonic() + 60
                while not any(out.glob("*.json")) and time.monotonic() < deadline:
                    time.sleep(0.05)
                doomed.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(task)

        _study.run_task = run_task

    argv = ["study", "--arrays", "4", "--spread", "0.1", "--branches", "2", "--rows", "2", "--cols", "2",
            "--out", str(out), "--json"]
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            dask_client(workers=2, dashboard_address=":0") as client:
        client.run(die_once_on_array_3, out, doomed)
        argv += ["--scheduler", client.scheduler.address]
        assert main(argv) == EXIT_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("crossbar: error: a Dask worker died while running array ")
        kept = int(re.search(r"; (\d+) of 4 tasks are kept in ", err).group(1))
        assert 1 <= kept < 4 and len(list(out.glob("*.json"))) == kept and doomed.exists()
        stamps = {path: path.stat().st_mtime_ns for path in out.glob("*.json")}
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed one
        assert main(argv) == 0
    assert [row["arrays"] for row in json.loads(capsys.readouterr().out)] == [4]
    assert len(list(out.glob("*.json"))) == 4
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps  # the kept ones not run again


def test_bench_scale_skip_plan_runs_the_study_row_alone(capsys, monkeypatch):
    """The coordinator's measure of the study target: no planning rows, the study's options passed
    on (the study row itself is what test_study's serial-against-Dask test checks, at 2x2)."""
    pytest.importorskip("distributed")
    from crossbar_ctl.engine import _bench_scale

    calls = []
    monkeypatch.setattr(_bench_scale, "bench_plan_scale", lambda **kw: pytest.fail("planned"))
    monkeypatch.setattr(_bench_scale, "bench_study_scale", lambda **kw: calls.append(kw) or {"case": "study"})
    assert main(["bench", "scale", "--skip-plan", "--arrays", "3", "--spread", "0.1,0.3", "--study-workers", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"case": "study"}]
    assert calls == [{"arrays": 3, "spreads": [0.1, 0.3], "workers": 1, "show_progress": False}]


def test_bench_scale_skip_plan_without_arrays_is_one_line(capsys):
    assert main(["bench", "scale", "--skip-plan", "--arrays", "0"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "crossbar: error: --skip-plan with --arrays 0 leaves nothing to measure\n"
