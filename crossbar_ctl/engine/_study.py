"""``crossbar study``: Monte Carlo over simulated arrays, in this process or on a Dask cluster.

A study is a grid of configurations (board profile, resistor spread, branches per cell, wire
resistance per segment) times ``arrays`` simulated arrays each. One task is one array: a fresh
simulated lab (its seed derived from the study's seed and the array's index, the same for every
configuration, so configurations are compared on the same draws), calibrated, the study's fixed
layer (``uniform_layer``: U(-1, 1) weights, one tile) programmed with the hardware in the loop and
checked; its figures come from the simulator's truth: realized weight bits (median and 1st
percentile against max|w|), planned bits, ENOB of the outputs. An array *yields* when its realized
1st percentile reaches ``min_bits``; a configuration's yield is the fraction of its arrays that do.

Each finished task is written atomically as one JSON file in the study's directory and skipped on
a rerun, so an interrupted study (Ctrl-C, a worker that died, a lost scheduler) resumes where it
stopped. A task's figures depend only on the task, so a study run serially or on any cluster gives
the same results (``wall_s`` aside).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from crossbar_ctl import __version__
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_save_figure, atomic_write_text, pyplot

__all__ = ["StudyResult", "StudyTask", "plot_study", "run_study", "run_task", "study_tasks", "summarize"]

STUDY_SCHEMA_VERSION = 2
"""2: the task runs without the stale-record guards (version 1 files are run again)."""
STUDY_SAMPLES = 32
"""Random inputs of each array's check (its ENOB; the realized bits need none)."""
STUDY_NPLC = 1.0
"""Readout integration time of each array's check, power-line cycles."""


class StudyTask(StrictModel):
    """One simulated array of a study."""

    profile: Literal["ideal", "pcb", "harsh"]
    spread: float = Field(ge=0, lt=1)
    """Relative (lognormal) spread of the resistors."""
    branches: int = Field(ge=1, le=64)
    wire_resistance_ohm: float = Field(ge=0)
    """Row and column wire resistance per segment (the profile scatters it around this)."""
    rows: int = Field(ge=2, le=64)
    cols: int = Field(ge=2, le=64)
    array: int = Field(ge=0)
    """Index of the array within its configuration."""
    seed: int = Field(ge=0)
    """The simulated lab's seed, from the study's seed and ``array``."""

    @property
    def key(self) -> str:
        """The task's file name stem: every parameter, so a changed study never reuses a file."""
        return (f"{self.profile}-spread{self.spread:g}-b{self.branches}-wire{self.wire_resistance_ohm:g}ohm-"
                f"{self.rows}x{self.cols}-array{self.array:05d}-seed{self.seed}")


class StudyResult(StrictModel):
    """One finished task: its figures on the simulator's truth."""

    schema_version: int = STUDY_SCHEMA_VERSION
    kind: Literal["study_task"] = "study_task"
    task: StudyTask
    realized_bits_median: float
    realized_bits_p01: float
    planned_bits_median: float
    enob: float
    agreement: float
    wall_s: float
    software: str = f"crossbar-ctl {__version__}"

    def figures(self) -> dict[str, float]:
        """The figures alone (what a serial and a distributed run must agree on)."""
        return self.model_dump(exclude={"wall_s", "software"})


def array_seed(seed: int, array: int) -> int:
    """A simulated array's seed from the study's seed and the array's index (never from run order)."""
    return int(np.random.SeedSequence([seed, array]).generate_state(1, dtype=np.uint32)[0])


def study_tasks(*, arrays: int, spreads: Sequence[float], branches: Sequence[int],
                wire_resistances_ohm: Sequence[float] = (0.5,), profiles: Sequence[str] = ("pcb",),
                rows: int = 8, cols: int = 8, seed: int = 0) -> list[StudyTask]:
    """Every task of a study grid: ``arrays`` per configuration, configurations in grid order."""
    return [StudyTask(profile=profile, spread=spread, branches=n, wire_resistance_ohm=wire, rows=rows, cols=cols,
                      array=a, seed=array_seed(seed, a))
            for profile in profiles for spread in spreads for n in branches for wire in wire_resistances_ohm
            for a in range(arrays)]


def run_task(task: StudyTask) -> StudyResult:
    """Calibrate one simulated array, program the study's layer, score it on the simulator's truth.

    The record is used on the lab that made it a moment before, so the guards that refuse a record
    of another array or one gone stale (fingerprint, drift recheck, the check's drift probe: a
    third of a task's time) are not run: their readings are not figures of the study.
    """
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._bench import uniform_layer
    from crossbar_ctl.engine._check import run_check
    from crossbar_ctl.engine._plan import make_plan
    from crossbar_ctl.engine._program import program_plan
    from crossbar_ctl.engine._workflow import array_model

    started = time.monotonic()
    network, x = uniform_layer(task.rows - 1, task.cols // 2, samples=STUDY_SAMPLES, seed=0)
    config = {"name": f"study-{task.key}",
              "sim": {"rows": task.rows, "cols": task.cols, "branches": task.branches, "profile": task.profile,
                      "seed": task.seed, "population": {"spread": task.spread},
                      "row_wire_resistance_ohm": task.wire_resistance_ohm,
                      "col_wire_resistance_ohm": task.wire_resistance_ohm}}
    with open_lab(config) as lab:
        model = array_model(calibrate(lab))
        plan = program_plan(lab, make_plan(network, model), model)
        report = run_check(lab, plan, x, nplc=STUDY_NPLC)
    layer = report.layers[0]
    assert layer.realized_bits is not None, "a simulated lab always has its truth"
    return StudyResult(task=task, realized_bits_median=layer.realized_bits.median,
                       realized_bits_p01=layer.realized_bits.p01, planned_bits_median=layer.planned_bits.median,
                       enob=layer.enob, agreement=report.agreement, wall_s=time.monotonic() - started)


def _path(out_dir: Path, task: StudyTask) -> Path:
    return out_dir / f"{task.key}.json"


def _finished(out_dir: Path, task: StudyTask) -> StudyResult | None:
    """The task's persisted result, or None (not run, or a file of another task or version)."""
    path = _path(out_dir, task)
    if not path.exists():
        return None
    try:
        result = StudyResult.model_validate_json(path.read_text())
    except (ValidationError, OSError, UnicodeDecodeError):
        return None
    return result if result.task == task and result.schema_version == STUDY_SCHEMA_VERSION else None


def _lost(exc: BaseException, task: StudyTask, kept: int, total: int, out_dir: Path) -> EngineError | None:
    from crossbar_ctl.engine._distributed import task_error

    lost = task_error(exc, f"array {task.key}")
    if lost is None:
        return None
    return EngineError(f"{lost}; {kept} of {total} tasks are kept in {out_dir}: rerun the same command to finish")


def run_study(tasks: Sequence[StudyTask], out_dir: str | Path, *, client: Any = None,
              progress: Callable[[int], None] | None = None) -> list[StudyResult]:
    """Run every task not already finished in ``out_dir``; each result is persisted as it arrives.

    Parameters
    ----------
    tasks : sequence of StudyTask
    out_dir : path
        One ``<task key>.json`` per finished task; those found are skipped.
    client : distributed.Client, optional
        Run the tasks on this Dask cluster (default: in this process, in order).
    progress : callable, optional
        Called with the number of tasks finished (the skipped ones first, at once).

    Returns
    -------
    list of StudyResult
        In the order of ``tasks``.

    Raises
    ------
    EngineError
        A worker died or the cluster was lost: the tasks finished so far are kept on disk.
    """
    out_dir = Path(out_dir)
    results = {task.key: _finished(out_dir, task) for task in tasks}
    todo = [task for task in tasks if results[task.key] is None]
    if progress and len(todo) < len(tasks):
        progress(len(tasks) - len(todo))

    def keep(result: StudyResult) -> None:
        atomic_write_text(_path(out_dir, result.task), result.model_dump_json(indent=1))
        results[result.task.key] = result
        if progress:
            progress(1)

    if client is None:
        for task in todo:
            keep(run_task(task))
    elif todo:
        from crossbar_ctl.engine._distributed import distributed

        futures = {client.submit(run_task, task, pure=False): task for task in todo}
        try:
            for future in distributed().as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:
                    kept = sum(r is not None for r in results.values())
                    lost = _lost(exc, futures[future], kept, len(tasks), out_dir)
                    if lost is None:
                        raise
                    raise lost from exc
                keep(result)
        finally:
            client.cancel(list(futures))
    return [results[task.key] for task in tasks]  # type: ignore[misc]


def summarize(results: Sequence[StudyResult], *, min_bits: float = 6.0) -> list[dict[str, Any]]:
    """One row per configuration: arrays, median figures over its arrays, and the yield.

    An array yields when its realized 1st-percentile bits reach ``min_bits``.
    """
    groups: dict[tuple, list[StudyResult]] = {}
    for result in results:
        t = result.task
        groups.setdefault((t.profile, t.spread, t.branches, t.wire_resistance_ohm), []).append(result)
    rows = []
    for (profile, spread, branches, wire), group in groups.items():
        p01 = np.array([r.realized_bits_p01 for r in group])
        rows.append({
            "profile": profile, "spread": spread, "branches": branches, "wire_resistance_ohm": wire,
            "arrays": len(group),
            "realized_bits_median": float(np.median([r.realized_bits_median for r in group])),
            "realized_bits_p01": float(np.median(p01)),
            "enob": float(np.median([r.enob for r in group])),
            "yield": float(np.mean(p01 >= min_bits)),
        })
    return rows


def plot_study(rows: Sequence[dict[str, Any]], path: str | Path, *, min_bits: float, title: str = "") -> list[Path]:
    """Realized bits and yield against resistor spread, one line per (profile, branches, wire), as an image."""
    plt = pyplot(EngineError, "crossbar study --plot needs")
    fig, (bits_ax, yield_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault((row["profile"], row["branches"], row["wire_resistance_ohm"]), []).append(row)
    for (profile, branches, wire), group in lines.items():
        group = sorted(group, key=lambda row: row["spread"])
        spread = [row["spread"] for row in group]
        label = f"{profile}, {branches} branches, {wire:g} ohm"
        line, = bits_ax.plot(spread, [row["realized_bits_median"] for row in group], "o-", label=f"{label} (median)")
        bits_ax.plot(spread, [row["realized_bits_p01"] for row in group], "v--", color=line.get_color(),
                     label=f"{label} (1st percentile)")
        yield_ax.plot(spread, [row["yield"] for row in group], "o-", color=line.get_color(), label=label)
    bits_ax.set(xlabel="resistor spread (lognormal sigma)", ylabel="realized bits against max|w|",
                title="weights on the true circuit")
    yield_ax.set(xlabel="resistor spread (lognormal sigma)", ylabel="yield", ylim=(-0.02, 1.02),
                 title=f"arrays with 1st-percentile bits >= {min_bits:g}")
    for ax in (bits_ax, yield_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)  # its directory made as needed
    plt.close(fig)
    return [Path(path)]
