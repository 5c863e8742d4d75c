"""Studies: the same figures serially and on Dask, resumed from their task files, a killed worker."""

import os
import re
import signal

import pytest

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine import _study
from crossbar_ctl.engine._study import StudyResult, array_seed, run_study, study_tasks, summarize

pytest.importorskip("distributed")

TINY = dict(spreads=[0.1], branches=[2], rows=2, cols=2)  # one 1-input, 1-output layer: ~2 s a task


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the module. The scheduler fails a task at its worker's first
    death (by default it retries it on another worker up to 3 times)."""
    import dask

    from crossbar_ctl.engine._distributed import dask_client

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            dask_client(workers=2, dashboard_address=":0") as client:
        yield client


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """Two arrays run in this process: (directory, results)."""
    out = tmp_path_factory.mktemp("serial")
    return out, run_study(study_tasks(arrays=2, **TINY), out)


def test_seeds_come_from_the_study_seed_and_the_array_index_only():
    tasks = study_tasks(arrays=3, spreads=[0.05, 0.2], branches=[2, 4], seed=7)
    assert len(tasks) == 12 and len({t.key for t in tasks}) == 12
    assert {t.seed for t in tasks} == {array_seed(7, a) for a in range(3)}  # shared across configurations
    assert all(t.seed == array_seed(7, t.array) for t in tasks)
    assert array_seed(7, 0) != array_seed(8, 0)


def test_a_study_runs_the_same_on_two_workers_as_in_process(client, serial, tmp_path):
    out, expected = serial
    assert len(list(out.glob("*.json"))) == 2
    assert expected[0].figures() != expected[1].figures()  # two different arrays
    done = []
    got = run_study(study_tasks(arrays=2, **TINY), tmp_path, client=client, progress=done.append)
    assert done == [1, 1]
    assert [r.figures() for r in got] == [r.figures() for r in expected]
    for result in expected:  # the pcb board's 2x2x2 arrays: about 3-5 bits median (measured 4.3)
        assert 1.0 < result.realized_bits_median < 8.0


def test_a_rerun_skips_the_finished_tasks(serial, monkeypatch):
    out, expected = serial

    def not_again(task):
        raise AssertionError(f"ran {task.key} again")

    monkeypatch.setattr(_study, "run_task", not_again)
    done = []
    assert run_study(study_tasks(arrays=2, **TINY), out, progress=done.append) == expected
    assert done == [2]
    with pytest.raises(AssertionError, match="array00002"):  # a third array is new work
        run_study(study_tasks(arrays=3, **TINY), out)


def test_a_killed_worker_is_one_line_the_finished_tasks_stay_and_a_rerun_completes(client, tmp_path, monkeypatch):
    tasks = study_tasks(arrays=6, **TINY)

    def kill_a_busy_worker(count):
        if not getattr(kill_a_busy_worker, "done", False):
            kill_a_busy_worker.done = True
            busy = next(address for address, keys in client.processing().items() if keys)
            pid = client.run(os.getpid, workers=[busy])[busy]
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(EngineError) as info:
        run_study(tasks, tmp_path, client=client, progress=kill_a_busy_worker)
    message = str(info.value)
    assert "\n" not in message and message.startswith("a Dask worker died while running array")
    kept = int(re.search(r"; (\d+) of 6 tasks are kept in ", message).group(1))
    assert 1 <= kept < 6 and len(list(tmp_path.glob("*.json"))) == kept
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed one: the cluster goes on
    ran = []
    real = _study.run_task

    def counted(task):
        ran.append(task.key)
        return real(task)

    monkeypatch.setattr(_study, "run_task", counted)
    results = run_study(tasks, tmp_path)  # the rest, here
    assert len(ran) == 6 - kept and all(isinstance(r, StudyResult) for r in results)
    assert [row["arrays"] for row in summarize(results)] == [6]
