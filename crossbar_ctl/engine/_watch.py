"""``crossbar watch``: probe a programmed plan on a schedule, log its drift, act when it is stale.

Every ``every_s`` the drift probe (:func:`crossbar_ctl.engine._guard.probe_plan`) measures the
plan's tiles; one JSON line per probe is appended to the log (the file rewritten atomically). On a
simulated lab the simulated clock advances instead of waiting, so a month of drift runs in
seconds; on hardware the watch sleeps. With a calibration record, a probe over the budget
recalibrates for the plan and rewrites its pairs over budget (:func:`recalibrate_plan`,
:func:`update_plan`), and the watch goes on with the updated plan and record.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossbar_ctl.core.errors import ConfigError, EngineError
from crossbar_ctl.core.files import atomic_save_figure, atomic_write_text, pyplot
from crossbar_ctl.engine._guard import DEFAULT_SLACK_BITS, probe_plan
from crossbar_ctl.engine._plan import SwitchPlan, utc_now
from crossbar_ctl.engine._program import per_board

if TYPE_CHECKING:
    from calibration import CalibrationRecord, TcrEstimate
    from drivers import Lab

__all__ = ["interval_s", "plot_watch", "read_log", "watch_plan"]

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def interval_s(text: str) -> float:
    """``"10m"``, ``"30s"``, ``"2h"``, ``"1d"`` or plain seconds, as seconds (> 0).

    Raises
    ------
    ConfigError
        Anything else (one line naming the forms allowed).
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([smhd]?)\s*", text)
    value = float(match.group(1)) * _UNITS_S[match.group(2) or "s"] if match else float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"--every {text!r}: expected a positive duration such as 30s, 10m, 2h or 1d", key="every")
    return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a watch log (JSON lines); a missing file has none.

    Raises
    ------
    ConfigError
        A line that is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON line ({exc.msg}); give another --log", key="log") from exc
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}:{number}: not a JSON object; give another --log", key="log")
        entries.append(entry)
    return entries


def watch_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan, *, every_s: float, count: int, log: str | Path,
               record: CalibrationRecord | Sequence[CalibrationRecord] | None = None, tcr: TcrEstimate | None = None,
               slack_bits: float = DEFAULT_SLACK_BITS, sleep: Callable[[float], None] = time.sleep,
               progress: Callable[[int], None] | None = None
               ) -> tuple[list[dict[str, Any]], SwitchPlan, CalibrationRecord | None]:
    """Probe ``count`` times, ``every_s`` apart (the first at once), appending to ``log``.

    A plan on several boards is probed, recalibrated and updated on every board (the same path as
    ``check``, ``recalibrate`` and ``program --update``).

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan, in order
    every_s : float
        Time between probes, s: simulated time on a simulated lab, wall time otherwise.
    count : int
        Probes to take.
    log : path
        JSON-lines log, appended (rewritten atomically after each probe).
    record : CalibrationRecord, or one per board, optional
        The plan's calibration: when given, a probe over budget recalibrates and updates the plan.
    tcr : TcrEstimate, optional
        Used by the recalibration and the update.
    sleep : callable
        How a real lab waits (``time.sleep``).

    Returns
    -------
    entries : list of dict
        This run's log lines: ``time_utc``, ``sim_time_s`` (None on hardware), ``temperature_c``,
        ``over_budget``, ``bits_lost``, ``error_median`` and ``budget_median`` (per layer),
        ``board_bits_lost`` (a plan on several boards: per layer and board), ``slack_bits``,
        ``readings``, ``action``
        (None, or what the recalibration and update did, with ``bits_lost_after``: the probe after).
    plan, record
        The plan and record(s) in use at the end (updated when the watch acted).
    """
    from crossbar_ctl._lab import advance_sim_time
    from crossbar_ctl.engine._update import recalibrate_plan, update_plan

    if count < 1 or not every_s > 0:
        raise EngineError(f"count = {count}, every_s = {every_s}: need count >= 1 and every_s > 0")
    labs = per_board(lab, plan.board_count, "labs")
    simulated = all(board_lab.sim is not None for board_lab in labs)
    previous = read_log(log)
    entries: list[dict[str, Any]] = []
    for i in range(count):
        if i:
            if simulated:
                for board_lab in labs:
                    advance_sim_time(board_lab, every_s)
            else:
                sleep(every_s)
        probe = probe_plan(labs, plan, slack_bits=slack_bits)
        entry: dict[str, Any] = {
            "time_utc": utc_now(), "sim_time_s": labs[0].sim.time_s if simulated else None,
            "temperature_c": probe.temperature_c, "over_budget": probe.over_budget,
            "bits_lost": [layer.bits_lost for layer in probe.layers],
            "error_median": [layer.error_median for layer in probe.layers],
            "budget_median": [layer.budget_median for layer in probe.layers], "slack_bits": probe.slack_bits,
            "board_bits_lost": [{"layer": part.index, "board": part.board, "bits_lost": part.bits_lost}
                                for part in probe.board_layers],
            "readings": probe.readings,
            "action": None}
        if probe.over_budget and record is not None:
            record, recal = recalibrate_plan(labs, plan, record, tcr=tcr, slack_bits=slack_bits)
            plan, update = update_plan(labs, plan, record, tcr=tcr, slack_bits=slack_bits)
            recals = recal if isinstance(recal, list) else [recal]
            entry["action"] = {"recalibrated_rows": sum(len(r.remeasured_rows) for r in recals),
                               "readings": sum(r.readings for r in recals),
                               "readings_fraction": max(r.readings_fraction for r in recals),
                               "pairs_resolved": update.pairs_resolved,
                               "cells_rewritten": update.cells_rewritten,
                               "rewrites_fraction": update.rewrites_fraction,
                               "pairs_over_after": update.pairs_over_after,
                               "bits_lost_after": [layer.bits_lost for layer in
                                                   probe_plan(labs, plan, slack_bits=slack_bits).layers]}
        entries.append(entry)
        atomic_write_text(log, "".join(json.dumps(e) + "\n" for e in previous + entries))
        if progress:
            progress(1)
    return entries, plan, record


def plot_watch(entries: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """The drift history: bits lost per layer against time, the budget, and the actions taken."""
    plt = pyplot(EngineError, "--plot needs")
    simulated = all(e.get("sim_time_s") is not None for e in entries)
    if simulated:
        t = [e["sim_time_s"] / 3600.0 for e in entries]
        label = "simulated time [h]"
    else:
        import datetime as dt

        start = dt.datetime.fromisoformat(entries[0]["time_utc"])
        t = [(dt.datetime.fromisoformat(e["time_utc"]) - start).total_seconds() / 3600.0 for e in entries]
        label = "time since the first probe in the log [h]"
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    layers = max(len(e["bits_lost"]) for e in entries)
    for k in range(layers):  # each probe, and where the watch acted, the probe after it
        xs, ys = [], []
        for x, e in zip(t, entries):
            xs.append(x)
            ys.append(e["bits_lost"][k] if k < len(e["bits_lost"]) else float("nan"))
            if e.get("action"):
                xs.append(x)
                ys.append(e["action"]["bits_lost_after"][k])
        ax.plot(xs, ys, "o-", markersize=3, label=f"layer {k}")
    ax.axhline(entries[-1]["slack_bits"], color="k", linewidth=0.8, linestyle="--", label="budget")
    for x, e in zip(t, entries):
        if e.get("action"):
            ax.axvline(x, color="tab:red", linewidth=0.8, alpha=0.6)
    ax.set(xlabel=label, ylabel="bits lost since programming (probe)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
