"""``crossbar study`` and ``crossbar bench scale``; the Dask options every command shares
(``--workers N`` / ``--scheduler ADDRESS``, see :func:`add_cluster_options`). Registered by
crossbar_ctl.cli._main."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crossbar_ctl.cli._main import check_output_path, emit, int_range, positive_float, positive_int, print_table
from crossbar_ctl.core.errors import ConfigError


def _number_list(kind: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """An argparse type: comma-separated values, each parsed by ``kind``."""
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r} ({exc})") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values

    return parse


def _spread(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"a spread is from 0 to below 1, got {value:g}")
    return value


def _nonnegative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {value:g}")
    return value


def _profile(text: str) -> str:
    if text not in ("ideal", "pcb", "harsh"):
        raise ValueError(f"a profile is ideal, pcb or harsh, got {text!r}")
    return text


def add_cluster_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--workers N`` (a LocalCluster) or ``--scheduler ADDRESS`` (a running cluster)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=positive_int, metavar="N",
                       help=f"{what} on a local Dask cluster of N worker processes, one thread each "
                            "(the distributed extra; default: in this process)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help=f"{what} on a running Dask scheduler, e.g. tcp://host:8786")


def _dask_logs_follow_verbosity() -> None:
    """dask's loggers log at INFO (dozens of lines per cluster); make them follow ``-v`` like ours."""
    from crossbar_ctl.engine._distributed import distributed

    distributed()  # imported first: the import sets its loggers' level
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())


@contextmanager
def cluster(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client the options ask for (the dashboard link on stderr, its one line), or None."""
    if args.workers is None and args.scheduler is None:
        yield None
        return
    from crossbar_ctl.engine._distributed import dask_client

    _dask_logs_follow_verbosity()
    with dask_client(workers=args.workers, scheduler=args.scheduler,
                     announce=lambda line: print(line, file=sys.stderr)) as client:
        yield client


def add_commands(commands, bench) -> None:
    """Add ``crossbar study`` and ``crossbar bench scale``."""
    study = commands.add_parser(
        "study", help="Monte Carlo over simulated arrays: realized bits and yield against spread, branches, "
                      "wires, profile",
        description="Each task is one simulated array (seeded from --seed and its index): calibrated, a fixed "
                    "U(-1, 1) layer of rows - 1 inputs and cols / 2 outputs programmed and checked; its figures "
                    "come from the simulator's truth. Every finished task is kept as one JSON file in --out and "
                    "skipped on a rerun. An array yields when its realized 1st-percentile bits reach --min-bits.")
    study.add_argument("--arrays", type=positive_int, required=True, metavar="N",
                       help="simulated arrays per configuration")
    study.add_argument("--spread", type=_number_list(_spread, "spreads in [0, 1)"), default=[0.2], metavar="S,...",
                       help="resistor spreads (lognormal sigma)")
    study.add_argument("--branches", type=_number_list(int_range(1, 16), "branch counts 1..16"), default=[8],
                       metavar="N,...", help="branches per cell")
    study.add_argument("--wire-ohm", type=_number_list(_nonnegative, "resistances >= 0"), default=[0.5],
                       metavar="R,...", help="row and column wire resistance per segment, ohm")
    study.add_argument("--profile", type=_number_list(_profile, "profiles"), default=["pcb"], metavar="P,...",
                       help="simulated board profiles (ideal, pcb, harsh)")
    study.add_argument("--rows", type=int_range(2, 64), default=8, metavar="N", help="array rows")
    study.add_argument("--cols", type=int_range(2, 64), default=8, metavar="N", help="array columns")
    study.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the arrays")
    study.add_argument("--min-bits", type=positive_float, default=6.0, metavar="B",
                       help="an array yields when its realized 1st-percentile bits reach this")
    study.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory of the task files")
    study.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="realized bits and yield against spread (needs matplotlib)")
    add_cluster_options(study, "run the tasks")
    study.add_argument("--json", action="store_true", help="print the summary rows as JSON")
    study.set_defaults(run=_study)

    scale = bench.add_parser(
        "scale", help="plan solving on 1 and 2 Dask workers (784-500-10 at 8 branches), and a 200-array study",
        description="Planning: the 784-500-10 MLP trained on the digits at 28x28 (engine._zoo), mapped onto "
                    "a calibrated simulated 64x64 array, solved in this process (the reference masks) and on "
                    "local clusters of each --workers count (workers warmed up first); speedup is against the "
                    "first count. Study: --arrays arrays per spread on 2 workers, and the first two tasks "
                    "again in this process to check they agree.")
    scale.add_argument("--workers", type=positive_int, nargs="+", default=[1, 2], metavar="N",
                       help="worker counts of the planning rows")
    scale.add_argument("--hidden", type=positive_int, default=500, metavar="N", help="hidden units of the MLP")
    scale.add_argument("--branches", type=int_range(1, 16), default=8, metavar="N", help="branches per cell")
    scale.add_argument("--size", type=int_range(4, 64), default=64, metavar="N", help="the planning array, N x N")
    scale.add_argument("--arrays", type=int_range(0), default=50, metavar="N",
                       help="study arrays per spread (0: no study row)")
    scale.add_argument("--spread", type=_number_list(_spread, "spreads in [0, 1)"), default=[0.05, 0.1, 0.2, 0.3],
                       metavar="S,...", help="the study's spreads")
    scale.add_argument("--skip-in-process", action="store_true",
                       help="no in-process plan: the first worker count's masks are the reference")
    scale.add_argument("--skip-plan", action="store_true", help="no planning rows: the study row alone")
    scale.add_argument("--study-workers", type=positive_int, default=2, metavar="N", help="workers of the study")
    scale.add_argument("--json", action="store_true", help="print the rows as JSON")
    scale.set_defaults(run=_bench_scale)


def _study(args: argparse.Namespace) -> int:
    from crossbar_ctl.cli._engine import _check_plot

    check_output_path(args.out, "--out", directory=True)
    _check_plot(args.plot, "--plot")
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._study import plot_study, run_study, study_tasks, summarize

    tasks = study_tasks(arrays=args.arrays, spreads=args.spread, branches=args.branches,
                        wire_resistances_ohm=args.wire_ohm, profiles=args.profile, rows=args.rows,
                        cols=args.cols, seed=args.seed)
    with cluster(args) as client, progress_bar(len(tasks), "study", enabled=_progress(args)) as bar:
        results = run_study(tasks, args.out, client=client, progress=bar.update)
    rows = summarize(results, min_bits=args.min_bits)
    if args.plot:
        plot_study(rows, args.plot, min_bits=args.min_bits,
                   title=f"{len(results)} simulated {args.rows}x{args.cols} arrays")

    def show(rows: list[dict[str, Any]]) -> None:
        units = {"profile": "profile", "spread": "spread [1]", "branches": "branches [#]",
                 "wire_resistance_ohm": "wire [ohm]", "arrays": "arrays [#]",
                 "realized_bits_median": "realized median [bit]", "realized_bits_p01": "realized p01 [bit]",
                 "enob": "enob [bit]", "yield": "yield [1]"}
        print_table([{units[key]: value for key, value in row.items()} for row in rows],
                    title=f"study in {args.out}: medians over the arrays of each configuration; yield: arrays "
                          f"whose realized 1st-percentile bits reach {args.min_bits:g}")
        if args.plot:
            print(f"plot: {args.plot}")

    emit(rows, args, show)
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) or sys.stderr.isatty()


def _bench_scale(args: argparse.Namespace) -> int:
    from crossbar_ctl.engine._bench_scale import bench_plan_scale, bench_study_scale

    if args.skip_plan and not args.arrays:
        raise ConfigError("--skip-plan with --arrays 0 leaves nothing to measure", key="--arrays")
    _dask_logs_follow_verbosity()
    rows = [] if args.skip_plan else bench_plan_scale(
        hidden=args.hidden, branches=args.branches, size=args.size, workers=args.workers,
        in_process=not args.skip_in_process, show_progress=_progress(args))
    if args.arrays:
        rows.append(bench_study_scale(arrays=args.arrays, spreads=args.spread, workers=args.study_workers,
                                      show_progress=_progress(args)))

    def show(rows: list[dict[str, Any]]) -> None:
        print_table(rows, title="scale: plan solving on Dask workers (plan_s: wall time of the solve; speedup against "
                          "the first worker count; identical: masks equal to the in-process solve) and a study "
                          "(plan_s: its wall time; identical: its first tasks rerun in process agree)")

    emit(rows, args, show)
    return 0
