"""``crossbar bench scale``: plan solving on Dask workers, and a study of many simulated arrays.

Planning rows: the 784-500-10 MLP trained on the digits at 28x28 (:func:`crossbar_ctl.engine._zoo.digits28_mlp`)
on a calibrated simulated array (64x64, 8 branches per cell, pcb), solved once in this process
(the reference masks; numba's parallel loops on every core) and then on a fresh ``LocalCluster``
per worker count (one thread per worker, numba's included). Every process first plans a one-tile
layer (imports, numba's cache) so ``plan_s`` times the solve alone: ``make_plan``, with
:func:`crossbar_ctl.engine._distributed.tile_map` on a cluster. ``speedup`` is against the first
worker count; ``identical``: every mask equals the in-process solve's (the first worker count's
with ``in_process`` False). ``task_cpu_s`` and ``speedup_cpu`` (the CPU seconds of the solve, and
the speed-up they allow) let a busy machine's figures be read: other processes stretch the wall
clock, hardly the CPU seconds.

Study row: :func:`crossbar_ctl.engine._study.run_study` of ``arrays`` arrays per spread on a local
cluster, timed from submission to the last result (cluster start-up excluded; each worker's first
imports and numba cache loads included, as a study pays them); ``identical``: its first two tasks
rerun in this process give the same figures. ``crossbar bench scale --skip-plan`` runs it alone.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._demo import progress_bar
from crossbar_ctl.engine._distributed import dask_client, tile_map
from crossbar_ctl.engine._plan import PlanOptions, SwitchPlan, make_plan

__all__ = ["bench_plan_scale", "bench_study_scale"]


def _masks(plan: SwitchPlan) -> np.ndarray:
    return np.stack([plan.tile(t, "masks") for t in range(len(plan.header.tiles))])


def _warm_up(model) -> None:
    """Plan a one-tile layer on ``model`` (run on every worker: imports and numba's cache load)."""
    rows, cols, _ = model.geometry
    make_plan(uniform_layer(rows - 1, cols // 2, samples=1)[0], model)


def _switch_writes(plan: SwitchPlan) -> int:
    """Branch switches that change state loading the plan's program steps in turn from all open."""
    from crossbar_ctl.engine._cost import predict_loads

    steps = sorted({record.step for record in plan.header.tiles})
    configs = [plan.step_masks(step) for step in steps]
    return predict_loads(configs, np.zeros_like(configs[0]), settle_s=0.0).switch_writes


def bench_plan_scale(*, hidden: int = 500, branches: int = 8, size: int = 64, workers: Sequence[int] = (1, 2),
                     profile: str = "pcb", seed: int = 0, in_process: bool = True,
                     show_progress: bool = False) -> list[dict[str, Any]]:
    """Plan the digits MLP in process and on local clusters of each worker count; one row per count.

    With ``in_process`` False the first worker count's masks are the reference.

    Returns
    -------
    list of dict
        ``case``, ``layer_shape``, ``tiles``, ``workers``, ``plan_s``, ``speedup``, ``identical``,
        ``switch_writes``; ``task_cpu_s``: the CPU seconds of the solve (summed over the workers'
        tasks; in process, the process's), which a busy machine hardly inflates; ``speedup_cpu``:
        the first worker count's ``task_cpu_s`` over the busiest worker's CPU seconds here, the
        speed-up the work allows when every worker has a core to itself (an estimate for a busy
        machine, whose wall-clock ``speedup`` other processes depress).
    """
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._workflow import array_model
    from crossbar_ctl.engine._zoo import digits28_mlp

    network = digits28_mlp(hidden, seed=seed)
    with open_lab({"name": "bench-scale", "sim": {"rows": size, "cols": size, "branches": branches,
                                                  "profile": profile, "seed": seed}}) as lab:
        model = array_model(calibrate(lab))
    options = PlanOptions()
    shape = ",".join(f"{layer.matrix.shape[1]}x{layer.matrix.shape[0]}" for layer in network.layers)
    case = f"plan {network.name}, {branches} branches, {size}x{size} {profile}"
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    if in_process:
        _warm_up(model)
        with progress_bar(None, "plan in process", enabled=show_progress) as bar:
            started, cpu = time.perf_counter(), time.process_time()
            plan = make_plan(network, model, options=options, progress=bar.update)
            serial_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        reference = _masks(plan)
        rows.append({"case": f"{case}, in process (numba threads: all cores)", "layer_shape": shape,
                     "tiles": len(plan.header.tiles), "workers": 0, "plan_s": serial_s, "speedup": None,
                     "identical": None, "switch_writes": _switch_writes(plan), "task_cpu_s": cpu_s})
    first: float | None = None
    first_cpu: float | None = None
    for n in workers:
        with dask_client(workers=n, dashboard_address=":0") as client:
            client.run(_warm_up, model)
            tasks_cpu_s: dict[int, float] = {}
            with progress_bar(None, f"plan on {n} workers", enabled=show_progress) as bar:
                started = time.perf_counter()
                plan = make_plan(network, model, options=options, progress=bar.update,
                                 tile_map=tile_map(client, cpu_s=tasks_cpu_s))
                plan_s = time.perf_counter() - started
        first = first or plan_s
        task_cpu_s = float(sum(tasks_cpu_s.values()))
        first_cpu = first_cpu or task_cpu_s
        reference = _masks(plan) if reference is None else reference
        rows.append({"case": case, "layer_shape": shape, "tiles": len(plan.header.tiles), "workers": n,
                     "plan_s": plan_s, "speedup": first / plan_s,
                     "identical": bool(np.array_equal(_masks(plan), reference)),
                     "switch_writes": _switch_writes(plan), "task_cpu_s": task_cpu_s,
                     "speedup_cpu": first_cpu / max(tasks_cpu_s.values())})
    return rows


def bench_study_scale(*, arrays: int = 50, spreads: Sequence[float] = (0.05, 0.1, 0.2, 0.3), branches: int = 8,
                      size: int = 8, workers: int = 2, seed: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """A study of ``arrays`` arrays per spread on a local cluster of ``workers``; one row."""
    from crossbar_ctl.engine._study import run_study, run_task, study_tasks

    tasks = study_tasks(arrays=arrays, spreads=spreads, branches=[branches], rows=size, cols=size, seed=seed)
    with tempfile.TemporaryDirectory(prefix="crossbar-study-") as out, \
            dask_client(workers=workers, dashboard_address=":0") as client, \
            progress_bar(len(tasks), f"study on {workers} workers", enabled=show_progress) as bar:
        started = time.perf_counter()
        results = run_study(tasks, out, client=client, progress=bar.update)
        wall_s = time.perf_counter() - started
    identical = all(run_task(r.task).figures() == r.figures() for r in results[:2])
    return {"case": f"study of {len(tasks)} simulated {size}x{size} arrays, {branches} branches, pcb",
            "layer_shape": f"{size - 1}x{size // 2}", "tiles": len(tasks), "workers": workers, "plan_s": wall_s,
            "speedup": None, "identical": identical, "switch_writes": None}
