"""``crossbar recalibrate``, ``crossbar watch`` and ``crossbar bench drift`` (registered by
crossbar_ctl.cli._main): keeping a programmed plan's precision over time."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from crossbar_ctl.cli._main import (
    check_output_path,
    emit,
    int_range,
    positive_float,
    positive_int,
    print_table,
)
from crossbar_ctl.core.errors import ConfigError

__all__ = ["add_commands"]


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must lie in (0, 1]")
    return value


def add_commands(commands, bench) -> None:
    """Add ``recalibrate`` and ``watch`` to ``crossbar`` and ``drift`` to ``crossbar bench``."""
    recal = commands.add_parser(
        "recalibrate", help="measure a sample, re-measure only what moved (and what a plan needs)",
        description="Read a sample of the calibration's own steps again, find what moved, re-measure those "
                    "rows (with --plan: the rows of its pairs over budget first) within a share of a full "
                    "calibration's readings. The new record names its parent's checksum.")
    recal.add_argument("--calibration", required=True, metavar="CAL", type=Path, nargs="+",
                       help="the record to bring up to date; one per board, in order, for a lab of several boards")
    recal.add_argument("--out", required=True, metavar="CAL2", type=Path, nargs="+",
                       help="where to write the new record; one per --calibration, in the same order")
    recal.add_argument("--plan", metavar="PLAN", type=Path, default=None,
                       help="a plan programmed from CAL: its pairs over budget decide which rows come first")
    recal.add_argument("--tcr", metavar="TCR", type=Path, default=None,
                       help="TCR record (crossbar calibrate-tcr): compare at the lab's measured temperature")
    recal.add_argument("--max-fraction", type=_fraction, default=0.15, metavar="F",
                       help="readings allowed, as a fraction of the parent calibration's")
    recal.add_argument("--lab", metavar="LAB.toml", help="lab file (default: the simulated lab)")
    recal.add_argument("--json", action="store_true", help="print the report as JSON")
    recal.set_defaults(run=_recalibrate)

    watch = commands.add_parser(
        "watch", help="probe a programmed plan on a schedule and log its drift",
        description="Probe the plan's tiles every --every (on a simulated lab the simulated clock advances "
                    "instead of waiting), append one JSON line per probe to --log; with --recalibrate, a probe "
                    "over budget recalibrates and rewrites the pairs over budget.")
    watch.add_argument("--plan", required=True, metavar="PLAN", type=Path, help="a programmed switch plan")
    watch.add_argument("--every", required=True, metavar="DURATION",
                       help="time between probes: 30s, 10m, 2h, 1d (simulated time on a simulated lab)")
    watch.add_argument("--count", type=positive_int, default=6, metavar="N", help="probes to take")
    watch.add_argument("--log", type=Path, default=Path("drift.jsonl"), metavar="LOG.jsonl",
                       help="JSON-lines log to append to")
    watch.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                       help="draw the log's drift history (needs matplotlib)")
    watch.add_argument("--recalibrate", action="store_true",
                       help="act when the guard would refuse: recalibrate (needs --calibration) and program --update")
    watch.add_argument("--calibration", type=Path, default=None, metavar="CAL", nargs="+",
                       help="the plan's calibration record; one per board, in order, for a lab of several boards")
    watch.add_argument("--tcr", type=Path, default=None, metavar="TCR", help="TCR record used when acting")
    watch.add_argument("--out-plan", type=Path, default=Path("plan-updated.npz"), metavar="PLAN2",
                       help="with --recalibrate: where the updated plan goes (written only if the watch acted)")
    watch.add_argument("--out-calibration", type=Path, default=[Path("calibration-updated.npz")], metavar="CAL2",
                       nargs="+", help="with --recalibrate: where the new record goes, one per --calibration "
                                       "(written only if the watch acted)")
    watch.add_argument("--lab", metavar="LAB.toml", help="lab file (default: the simulated lab)")
    watch.add_argument("--json", action="store_true", help="print this run's log lines as JSON")
    watch.set_defaults(run=_watch)

    drift = bench.add_parser(
        "drift", help="precision after 1, 7, 31 days and a +10 K step; what recalibrate + program --update win back")
    drift.add_argument("--scenarios", nargs="+", default=["1 d", "7 d", "31 d", "+10 K", "+10 K uncompensated"],
                       metavar="S", help="'<days> d', '+10 K' (TCR compensated) or '+10 K uncompensated', one row each")
    drift.add_argument("--profile", choices=("ideal", "pcb", "harsh"), default="pcb",
                       help="the simulated board's hidden physics")
    drift.add_argument("--rows", type=int_range(2, 64), default=16, metavar="N", help="array rows")
    drift.add_argument("--cols", type=int_range(2, 64), default=16, metavar="N", help="array columns")
    drift.add_argument("--branches", type=int_range(1, 16), default=8, metavar="N", help="branches per cell")
    drift.add_argument("--samples", type=positive_int, default=100, metavar="N", help="inputs of each check")
    drift.add_argument("--drift-per-hour", type=positive_float, default=None, metavar="X",
                       help="relative random-walk drift of the resistors per sqrt(hour) (default: the profile's: pcb "
                            "1.6e-5, thin film; ideal and harsh 1e-4)")
    drift.add_argument("--demo", action="store_true",
                       help="the demo's 64x64x8 lab and digits MLP (its test set, --samples of it) instead")
    drift.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the layer and the labs")
    drift.add_argument("--json", action="store_true", help="print the rows as JSON")
    drift.set_defaults(run=_bench_drift)


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) or sys.stderr.isatty()


def _board_records(paths: list[Path], labs: Any, option: str) -> list[Any]:
    """One calibration record per board of ``labs``, loaded from ``paths`` in order."""
    from calibration import CalibrationRecord

    if len(paths) != len(labs):
        raise ConfigError(f"{option}: the lab has {len(labs)} board(s); give one record per board, in order "
                          f"(got {len(paths)})", key=option)
    return [CalibrationRecord.load(path) for path in paths]


def _check_outputs(paths: list[Path], count: int, option: str, of: str) -> None:
    if len(paths) != count:
        raise ConfigError(f"{option}: give one path per {of} ({count}), got {len(paths)}", key=option)
    for path in paths:
        check_output_path(path, option)


def _recalibrate(args: argparse.Namespace) -> int:
    _check_outputs(args.out, len(args.calibration), "--out", "--calibration")
    from calibration import TcrEstimate, recalibrate
    from crossbar_ctl._lab import open_labs
    from crossbar_ctl.engine._plan import SwitchPlan
    from crossbar_ctl.engine._update import recalibrate_plan

    plan = SwitchPlan.load(args.plan) if args.plan is not None else None
    tcr = TcrEstimate.load(args.tcr) if args.tcr is not None else None
    with open_labs(args.lab) as labs:
        records = _board_records(args.calibration, labs, "--calibration")
        if plan is not None:
            news, reports = recalibrate_plan(list(labs), plan, records, tcr=tcr, max_fraction=args.max_fraction)
        else:
            if tcr is not None and len(labs) > 1:
                raise ConfigError("--tcr: a TCR estimate is of one array; recalibrate several boards without it",
                                  key="--tcr")
            news, reports = map(list, zip(*(recalibrate(board_lab, board_record, tcr=tcr,
                                                        max_fraction=args.max_fraction)
                                            for board_lab, board_record in zip(labs, records))))
    for new, out in zip(news, args.out):  # every board measured before any file is written
        new.save(out)
    results = [{"board": board, "out": str(out), "checksum": new.checksum(), **report.model_dump()}
               for board, (new, out, report) in enumerate(zip(news, args.out, reports))]

    def show(results: list[dict[str, Any]]) -> None:
        print_table([{"board": result["board"], "parent": result["parent_checksum"], "new": result["checksum"],
                      "sampled steps [#]": result["sampled_steps"], "common move [1]": result["common_ratio"] - 1,
                      "spread [1]": result["spread_rel"], "rows moved [#]": len(result["moved_rows"]),
                      "rows asked [#]": len(result["asked_rows"]),
                      "rows re-measured [#]": len(result["remeasured_rows"]), "readings [#]": result["readings"],
                      "of a full calibration [1]": result["readings_fraction"]} for result in results],
                    title=f"recalibration written to {', '.join(result['out'] for result in results)}")

    emit(results[0] if len(results) == 1 else results, args,
         lambda result: show([result] if isinstance(result, dict) else result))
    return 0


def program_update(args: argparse.Namespace) -> int:
    """``crossbar program --update PLAN --calibration CAL2``: rewrite only the pairs over budget."""
    from calibration import TcrEstimate
    from crossbar_ctl._lab import open_labs
    from crossbar_ctl.cli._main import build_options
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._plan import SwitchPlan
    from crossbar_ctl.engine._program import ProgramOptions
    from crossbar_ctl.engine._update import update_plan

    calibrations = args.calibration if isinstance(args.calibration, list) else [args.calibration]
    options = build_options(ProgramOptions, max_iterations=args.max_iterations)
    plan = SwitchPlan.load(args.update)
    tcr = TcrEstimate.load(args.tcr) if args.tcr is not None else None
    with open_labs(args.lab) as labs:
        records = _board_records([Path(path) for path in calibrations], labs, "--calibration")
        with progress_bar(len(plan.header.tiles), "update", enabled=_progress(args)) as bar:
            updated, report = update_plan(list(labs), plan, records, tcr=tcr, options=options, progress=bar.update,
                                          affine_vectors=args.affine_vectors)
    updated.save(args.out)
    result = {"plan": str(args.out), "calibration": updated.header.calibration.checksum,
              "calibrations": [updated.board_calibration(b).checksum for b in range(updated.board_count)],
              **report.model_dump()}

    def show(result: dict[str, Any]) -> None:
        print_table([{"pairs [#]": result["pairs"], "over budget before [#]": result["pairs_over_before"],
                      "re-solved [#]": result["pairs_resolved"], "over budget after [#]": result["pairs_over_after"],
                      "cells rewritten [#]": result["cells_rewritten"],
                      "of the plan's cells [1]": result["rewrites_fraction"],
                      "switch writes [#]": result["switch_writes"], "readings [#]": result["readings"]}],
                    title=f"program --update: plan written to {result['plan']} (calibration {result['calibration']})")

    emit(result, args, show)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from crossbar_ctl.engine._watch import interval_s, read_log

    every_s = interval_s(args.every)
    if args.recalibrate and args.calibration is None:
        raise ConfigError("--recalibrate needs --calibration (the plan's calibration record)", key="--calibration")
    check_output_path(args.log, "--log")
    if args.plot is not None:
        check_output_path(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise ConfigError("--plot needs matplotlib: pip install 'crossbar-ctl[plot]'", key="--plot")
    if args.recalibrate:
        check_output_path(args.out_plan, "--out-plan")
        _check_outputs(args.out_calibration, len(args.calibration), "--out-calibration", "--calibration")
    read_log(args.log)  # a log that is not ours is refused before any work
    from calibration import TcrEstimate
    from crossbar_ctl._lab import open_labs
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._plan import SwitchPlan
    from crossbar_ctl.engine._watch import plot_watch, watch_plan

    plan = SwitchPlan.load(args.plan)
    tcr = TcrEstimate.load(args.tcr) if args.tcr is not None else None
    with open_labs(args.lab) as labs:
        records = _board_records(args.calibration, labs, "--calibration") if args.recalibrate else None
        with progress_bar(args.count, "watch", enabled=_progress(args)) as bar:
            entries, new_plan, new_records = watch_plan(list(labs), plan, every_s=every_s, count=args.count,
                                                        log=args.log, record=records, tcr=tcr, progress=bar.update)
    if any(entry["action"] for entry in entries):
        for new_record, out in zip(new_records, args.out_calibration):
            new_record.save(out)
        new_plan.save(args.out_plan)
    if args.plot is not None:
        plot_watch(read_log(args.log), args.plot, title=f"drift of {args.plan.name}")

    def show(entries: list[dict[str, Any]]) -> None:
        print_table([{"sim time [h]": None if e["sim_time_s"] is None else e["sim_time_s"] / 3600,
                      "T [degC]": e["temperature_c"], "bits lost (worst layer) [bit]": max(e["bits_lost"] + [
                          part["bits_lost"] for part in e.get("board_bits_lost", [])]),
                      "over budget": e["over_budget"],
                      "action": "" if not e["action"] else
                      f"{e['action']['cells_rewritten']} cells rewritten, {e['action']['readings']} readings"}
                     for e in entries], title=f"drift probes of {args.plan} (log: {args.log})")
        if any(e["action"] for e in entries):
            print(f"updated plan: {args.out_plan}; new calibration: {', '.join(map(str, args.out_calibration))}")

    emit(entries, args, show)
    return 0


def _bench_drift(args: argparse.Namespace) -> int:
    from crossbar_ctl.engine._bench_drift import bench_drift
    from crossbar_ctl.engine._demo import progress_bar

    with progress_bar(len(args.scenarios), f"drift ({args.profile})", enabled=_progress(args)) as bar:
        rows = bench_drift(scenarios=args.scenarios, rows=args.rows, cols=args.cols, branches=args.branches,
                           samples=args.samples, profile=args.profile, drift_per_hour=args.drift_per_hour,
                           demo=args.demo, seed=args.seed, progress=bar.update)

    def show(rows: list[dict[str, Any]]) -> None:
        keys = ("scenario", "realized_bits_fresh", "realized_bits_stale", "realized_bits_after", "enob_fresh",
                "enob_stale", "enob_after", "enob_after_kept_affine", "realized_bits_reprogrammed",
                "enob_reprogrammed", "readings_fraction", "rewrites_fraction", "switch_writes_fraction",
                "guard_fresh", "guard_stale", "guard_after", "bits_lost_probe", "wall_s")
        geometry = "the demo's 64x64x8 lab, digits MLP" if args.demo else f"{args.rows}x{args.cols}x{args.branches}"
        print_table([{key: row[key] for key in keys} for row in rows],
                    title=f"drift on {geometry}, profile {args.profile}: least over layers of realized median bits "
                          "(true circuit) and enob; fresh, stale, after recalibrate + program --update")

    emit(rows, args, show)
    return 0
