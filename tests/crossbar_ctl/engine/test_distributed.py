"""Plan solving on Dask: the same masks as in process, whatever the chunks; one-line errors; the zoo."""

import math
import os
import socket

import numpy as np
import pytest

from crossbar_ctl.core.errors import ConfigError, EngineError
from crossbar_ctl.engine._distributed import dask_client, tile_map
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from tests.crossbar_ctl.engine.fakes import array_model

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the module (starting one takes seconds)."""
    with dask_client(workers=2, dashboard_address=":0") as client:
        yield client


def _network(rng, sizes=(9, 7, 4)):
    return build_network([rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:])],
                         [0.3 * rng.normal(size=o) for o in sizes[1:]], ["relu"] * (len(sizes) - 2) + ["none"],
                         input_shape=None, strides=[1] * (len(sizes) - 1), paddings=[0] * (len(sizes) - 1),
                         name="small")


@pytest.mark.parametrize("branches, cols, predistort, sizes, splits", [
    (8, 8, True, (9, 7, 4), (1, 3)),  # a twin with wires: pre-distortion runs; 6 tiles in 2, then 6 chunks
    (24, 4, False, (9, 2), (1,)),  # 48-value pools, past the exact solver: its seeded reduction; 2 tiles
])
def test_plan_on_two_workers_is_bit_identical_to_in_process(client, branches, cols, predistort, sizes, splits):
    model = array_model(rows=6, cols=cols, branches=branches, wire_ohm=2.0)
    network = _network(np.random.default_rng(1), sizes)
    options = PlanOptions(predistort=predistort, predistort_iterations=1)
    serial = make_plan(network, model, options=options)
    tiles = len(serial.header.tiles)
    assert tiles == {2: 6, 1: 2}[len(sizes) - 1]
    pids = set(client.run(os.getpid).values())
    for chunks_per_worker in splits:
        done, cpu_s = [], {}
        spread = make_plan(network, model, options=options, progress=done.append,
                           tile_map=tile_map(client, chunks_per_worker=chunks_per_worker, cpu_s=cpu_s))
        size = math.ceil(tiles / (2 * chunks_per_worker))
        assert sum(done) == tiles and len(done) == math.ceil(tiles / size)  # one call per chunk
        assert set(cpu_s) <= pids and sum(cpu_s.values()) > 0  # the solve's CPU seconds, per worker
        assert spread.header.layers == serial.header.layers
        for t in range(tiles):
            for name in ("masks", "cell_s", "predicted_s"):
                np.testing.assert_array_equal(spread.tile(t, name), serial.tile(t, name))


def test_a_task_error_on_a_worker_comes_back_as_it_is(client):
    def refuse(*args, **kwargs):
        raise EngineError("refused on the worker")

    model = array_model(rows=6, cols=8, branches=4)
    with pytest.raises(EngineError, match="refused on the worker"):
        make_plan(_network(np.random.default_rng(1)), model, solver=refuse, tile_map=tile_map(client))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_scheduler_is_one_line():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(EngineError) as info:
        with dask_client(scheduler=address, timeout_s=1.0):
            pass
    message = str(info.value)
    assert message.startswith(f"cannot reach the Dask scheduler at {address}") and "\n" not in message


def test_the_dashboard_line_asks_whether_bokeh_is_installed(monkeypatch):
    """Without bokeh, dask still registers its ``dashboard`` service (a page saying bokeh is
    missing): the line must come from the installed packages, not from the service list."""
    import importlib.util

    from crossbar_ctl.engine import _distributed

    class Client:  # what a scheduler without bokeh reports
        dashboard_link = "http://127.0.0.1:8787/status"

        def scheduler_info(self):
            return {"services": {"dashboard": 8787}}

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bokeh" else find_spec(name, *a))
    assert _distributed._dashboard(Client()) == "Dask dashboard: http://127.0.0.1:8787/status"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else find_spec(name, *a))
    assert _distributed._dashboard(Client()) == "Dask dashboard: not running (it needs bokeh: pip install 'bokeh>=3.1')"


def test_workers_and_scheduler_are_exclusive():
    with pytest.raises(ConfigError, match="either --workers N or --scheduler"):
        with dask_client(workers=1, scheduler="tcp://127.0.0.1:1"):
            pass


SMALL_LAB = """name = "distributed-test"
[sim]
rows = 10
cols = 10
branches = 6
seed = 3
"""


def test_program_scheduler_gives_the_plan_of_a_serial_program(client, tmp_path):
    from crossbar_ctl.cli._main import main
    from crossbar_ctl.engine._network import save_network
    from crossbar_ctl.engine._plan import SwitchPlan

    lab = tmp_path / "lab.toml"
    lab.write_text(SMALL_LAB)
    assert main(["calibrate", "--lab", str(lab), "--out", str(tmp_path / "cal.npz"), "--json"]) == 0
    rng = np.random.default_rng(2)
    save_network(tmp_path / "w.npz", build_network([rng.normal(size=(8, 12))], [rng.normal(size=8)], ["none"],
                                                   input_shape=None, strides=[1], paddings=[0], name="w"))
    common = ["program", "--weights", str(tmp_path / "w.npz"), "--calibration", str(tmp_path / "cal.npz"),
              "--lab", str(lab), "--max-iterations", "0", "--json"]
    assert main(common + ["--out", str(tmp_path / "serial.npz")]) == 0
    assert main(common + ["--out", str(tmp_path / "dask.npz"), "--scheduler", client.scheduler.address]) == 0
    serial, spread = SwitchPlan.load(tmp_path / "serial.npz"), SwitchPlan.load(tmp_path / "dask.npz")
    assert len(serial.header.tiles) == 4  # 12 inputs + bias on 10 rows, 8 outputs on 5 pairs: 2 x 2
    for t in range(len(serial.header.tiles)):
        np.testing.assert_array_equal(spread.tile(t, "masks"), serial.tile(t, "masks"))


def test_zoo_trains_once_then_reads_its_cache(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from crossbar_ctl.engine import _zoo

    network = _zoo.digits28_mlp(8, max_iter=30, cache=tmp_path)
    assert [layer.weight.shape for layer in network.layers] == [(8, 784), (10, 8)]
    assert np.mean(network.predict(network.test_x) == network.test_y) > 0.6  # measured 0.775 (30 epochs)
    assert len(list(tmp_path.glob("digits28-mlp-784-8-10-seed0-iter30-sklearn*.npz"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    import sklearn.neural_network

    monkeypatch.setattr(sklearn.neural_network, "MLPClassifier", no_training)
    again = _zoo.digits28_mlp(8, max_iter=30, cache=tmp_path)
    for a, b in zip(network.layers, again.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
