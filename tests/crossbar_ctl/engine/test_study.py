"""Studies: the same figures serially and on Dask, resumed from their task files. A worker that dies
mid-study: tests/crossbar_ctl/cli/test_study_cli.py, through the CLI."""

import pytest

from crossbar_ctl.engine import _study
from crossbar_ctl.engine._study import array_seed, run_study, study_tasks

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


def test_a_task_file_of_another_schema_version_is_run_again(serial, monkeypatch, tmp_path):
    out, expected = serial
    for path in out.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    old = next(tmp_path.glob("*array00001*.json"))
    old.write_text(old.read_text().replace(f'"schema_version": {_study.STUDY_SCHEMA_VERSION}', '"schema_version": 1'))
    ran = []
    monkeypatch.setattr(_study, "run_task", lambda task: ran.append(task.key) or expected[task.array])
    assert run_study(study_tasks(arrays=2, **TINY), tmp_path) == expected
    assert ran == [expected[1].task.key]
