"""Dask (``dask.distributed``) for work that outgrows one process: plan solving in chunks of tiles.

:func:`dask_client` starts a ``LocalCluster`` (``workers`` processes, one thread each, the
dashboard link announced) or connects to an existing scheduler (``tcp://host:8786``); a scheduler
that cannot be reached is one :class:`~crossbar_ctl.core.errors.EngineError` line.
:func:`solve_tiles` is the serial path of :func:`crossbar_ctl.engine._plan.make_plan` (every tile
through :func:`crossbar_ctl.engine._solve.solve_tile`); :func:`tile_map` returns the same map run
on a cluster: the model is scattered once, consecutive tiles go out in chunks, the solutions come
back in tile order. A tile's solution depends only on its model, tile and target (the optimizer
draws its per-cell seeds from a fixed seed in every call, never from a shared stream), so the
masks are bit-identical to a serial run whatever the chunking or the worker that ran a chunk.

dask is the ``distributed`` extra, imported only here and only when a cluster is asked for.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from crossbar_ctl.core.errors import ConfigError, CrossbarError, EngineError
from crossbar_ctl.engine._mapping import ArrayModel, Tile
from crossbar_ctl.engine._solve import TileSolution, solve_tile

__all__ = ["TileMap", "dask_client", "distributed", "solve_tiles", "task_error", "tile_map"]

TileMap = Callable[..., list[TileSolution]]
"""``(model, jobs, solve, *, progress=None) -> solutions``: :func:`solve_tiles` or :func:`tile_map`'s."""

CHUNKS_PER_WORKER = 32
"""Chunks of tiles per worker: enough that the last ones leave little idle (a 64x64 tile of the
784-500-10 network at 8 branches takes ~1.4 CPU s, the chunks of its 216 tiles 3-4 on two workers),
few enough that overhead (a few ms a task) stays small."""

SCHEDULER_TIMEOUT_S = 10.0
"""How long to try an existing scheduler before giving up."""


def distributed():
    """The ``distributed`` module, or a one-line :class:`ConfigError` naming the extra."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("--workers and --scheduler need dask.distributed: "
                          "pip install 'crossbar-ctl[distributed]'", key="workers") from exc
    return distributed


def _dashboard(client: Any) -> str:
    """The dashboard's address, or why there is none (it needs bokeh).

    Asked of the installed packages: without bokeh the scheduler still serves a page (saying it
    needs bokeh) under the same ``dashboard`` service, so the service list cannot tell.
    """
    if importlib.util.find_spec("bokeh") is None:
        return "Dask dashboard: not running (it needs bokeh: pip install 'bokeh>=3.1')"
    return f"Dask dashboard: {client.dashboard_link}"


@contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None,
                announce: Callable[[str], None] | None = None, dashboard_address: str = ":8787",
                timeout_s: float | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on a new local cluster or on an existing scheduler, closed on exit.

    Parameters
    ----------
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes, one thread each.
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://host:8786`` (exclusive with ``workers``).
    announce : callable, optional
        Called with one line: the dashboard link of a started cluster.
    dashboard_address : str
        Where a started cluster serves its dashboard (a busy port falls back to a free one).
    timeout_s : float, optional
        How long to try an existing scheduler before giving up, s (default ``SCHEDULER_TIMEOUT_S``).

    Raises
    ------
    ConfigError
        Both or neither of ``workers`` and ``scheduler``, or dask not installed.
    EngineError
        The scheduler cannot be reached within ``timeout_s``.
    """
    if (workers is None) == (scheduler is None):
        raise ConfigError("give either --workers N or --scheduler ADDRESS", key="workers")
    dd = distributed()
    if scheduler is not None:
        try:
            client = dd.Client(scheduler, timeout=f"{timeout_s or SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {scheduler} "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        with client:
            yield client
        return
    with dd.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         env={"NUMBA_NUM_THREADS": "1"},  # one thread each, numba's parallel loops too
                         dashboard_address=dashboard_address, silence_logs=logging.ERROR) as cluster, \
            dd.Client(cluster) as client:
        if announce:
            announce(_dashboard(client))
        yield client


def task_error(exc: BaseException, what: str) -> EngineError | None:
    """The one-line error for a task lost to the cluster (a worker died, the scheduler went away),
    or None for any other exception (the task's own, re-raised as it is)."""
    dd = distributed()
    if isinstance(exc, CrossbarError):  # the task's own, even a ConnectionLost (an OSError)
        return None
    if isinstance(exc, dd.KilledWorker):
        return EngineError(f"a Dask worker died while running {what} ({exc.args[0] if exc.args else 'task'})")
    cancelled = type(exc).__name__ == "FutureCancelledError"  # lost dependencies, a closed client
    if cancelled or isinstance(exc, (dd.comm.CommClosedError, OSError, TimeoutError)):
        return EngineError(f"the Dask cluster was lost while running {what} ({type(exc).__name__}: {exc})")
    return None


def _solve_chunk(model: ArrayModel, jobs: Sequence[tuple[Tile, np.ndarray]], solve: dict[str, Any]
                 ) -> tuple[list[TileSolution], float, int]:
    """The chunk's solutions, the CPU seconds its thread spent on them and the process id."""
    started = time.thread_time()
    solutions = [solve_tile(model, tile, target, **solve) for tile, target in jobs]
    return solutions, time.thread_time() - started, os.getpid()


def solve_tiles(model: ArrayModel, jobs: Sequence[tuple[Tile, np.ndarray]], solve: dict[str, Any], *,
                progress: Callable[[int], None] | None = None) -> list[TileSolution]:
    """Solve every tile in this process, in order.

    Parameters
    ----------
    jobs : sequence of (Tile, ndarray (tile.rows, tile.pairs))
        Each tile and its target pair transfers, siemens.
    solve : dict
        Keyword arguments of :func:`crossbar_ctl.engine._solve.solve_tile` (twin, solver, ...).
    progress : callable, optional
        Called with 1 after each tile.
    """
    solutions = []
    for job in jobs:
        solutions.extend(_solve_chunk(model, [job], solve)[0])
        if progress:
            progress(1)
    return solutions


def tile_map(client: Any, *, chunks_per_worker: int = CHUNKS_PER_WORKER,
             cpu_s: dict[int, float] | None = None) -> TileMap:
    """:func:`solve_tiles` on a Dask cluster: chunks of consecutive tiles, results in tile order.

    Parameters
    ----------
    client : distributed.Client
    chunks_per_worker : int
        Split the tiles into about this many chunks per worker.
    cpu_s : dict, optional
        Gets the CPU seconds the tasks spent solving, s, summed per worker process (by its id).

    Raises
    ------
    EngineError
        A worker died (or the cluster went away) while solving; nothing is returned.
    """
    def run(model: ArrayModel, jobs: Sequence[tuple[Tile, np.ndarray]], solve: dict[str, Any], *,
            progress: Callable[[int], None] | None = None) -> list[TileSolution]:
        dd = distributed()
        workers = max(1, len(client.scheduler_info()["workers"]))
        size = max(1, math.ceil(len(jobs) / (workers * chunks_per_worker)))
        chunks = [list(jobs[start:start + size]) for start in range(0, len(jobs), size)]
        shared = client.scatter(model, broadcast=True, hash=False)  # a key of its own: never a released one's
        futures = {client.submit(_solve_chunk, shared, chunk, solve, pure=False): k
                   for k, chunk in enumerate(chunks)}
        results: list[list[TileSolution] | None] = [None] * len(chunks)
        try:
            for future in dd.as_completed(futures):
                k = futures[future]
                try:
                    results[k], spent_s, worker = future.result()
                except Exception as exc:
                    lost = task_error(exc, f"tiles {k * size}..{k * size + len(chunks[k]) - 1}")
                    if lost is None:
                        raise
                    raise lost from exc
                if cpu_s is not None:
                    cpu_s[worker] = cpu_s.get(worker, 0.0) + spent_s
                if progress:
                    progress(len(chunks[k]))
        finally:
            client.cancel(list(futures))
        return [solution for chunk in results for solution in chunk]  # type: ignore[union-attr]

    return run
