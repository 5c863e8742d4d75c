"""``crossbar bench precision|solver|peers|lottery``: the optimizer's benchmarks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crossbar_ctl.cli._main import emit, print_table


def _progress(total: int, label: str, args: argparse.Namespace):
    """A tqdm bar on stderr (silent with --json), as a callback taking a step count."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, file=sys.stderr, leave=False, disable=args.json)
    return bar, bar.update


def _precision(args: argparse.Namespace) -> int:
    from crossbar_ctl.optimizer._bench import bench_precision, plot_precision

    sizes = range(4, 25) if args.quick else range(4, 33)
    instances = 200 if args.quick else 2500
    bar, step = _progress(len(sizes), "precision", args)
    with bar:
        result = bench_precision(population=args.population, sizes=sizes, instances=instances,
                                 seed=args.seed, progress=step)
    if args.plot:
        plot_precision(result, args.plot)

    def show(r: dict[str, Any]) -> None:
        columns = ["n", "median_bits", "worst_bits", "median_bits_range", "exact_hits",
                   "signed_median_bits", "signed_worst_bits"]
        rows = [{c: "-" if r[c][i] is None else r[c][i] for c in columns} for i in range(len(r["n"]))]
        print_table(rows, title=f"bits of precision, {r['instances']} {r['population']} instances "
                                f"per n (signed up to n = {r['signed_up_to']})")
        print(f"convention: {r['convention']}")
        print(f"slope of median bits: {r['slope_median']:.3f} bits/resistor (target >= 0.98)")
        print(f"slope of worst bits (n >= {r['worst_from']}): {r['slope_worst']:.3f} bits/resistor "
              "(target >= 0.85)")
        print(f"signed pair: slope of median bits {r['slope_signed_median']:.3f}, of worst bits "
              f"(n >= {r['worst_from']}) {r['slope_signed_worst']:.3f} bits per n (2n values)")
        if args.plot:
            print(f"plot: {args.plot}")

    emit(result, args, show)
    return 0


def _solver(args: argparse.Namespace) -> int:
    from crossbar_ctl.optimizer._bench import REFERENCE, bench_solver

    sizes = (8, 16, 24, 32, 40)
    bar, step = _progress(len(sizes) + 2, "solver", args)
    with bar:
        rows = bench_solver(sizes=sizes, quick=args.quick, seed=args.seed, progress=step)

    def show(r: list[dict[str, Any]]) -> None:
        print_table(r, title="cells per second (targets: >= 200,000 at m = 16, >= 2,000 at m = 32; "
                             "exact: planted instances hit exactly)")
        print(f"reference: {REFERENCE}; vs_reference = its time / the optimizer's on the same "
              "cells; same_error: both found the same least error (to 8 ulps of the pool's sum)")
        print(f"machine: {_machine()}")

    emit(rows, args, show)
    return 0


def _machine() -> str:
    """The cores, threads and load the figures were measured with."""
    import os

    import numba

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {numba.get_num_threads()} numba threads, load {load:.2f}"


def _peers(args: argparse.Namespace) -> int:
    from crossbar_ctl.optimizer._bench import PEERS_PRECISION_REL, bench_peers

    sizes = (8, 12) if args.quick else (8, 16, 24)
    instances = 2 if args.quick else args.instances
    bar, step = _progress(len(sizes), "peers", args)
    with bar:
        result = bench_peers(sizes=sizes, instances=instances, time_limit_s=args.time_limit_s,
                             precision_rel=(PEERS_PRECISION_REL if args.precision_rel is None
                                            else args.precision_rel),
                             seed=args.seed, progress=step)

    def show(r: dict[str, Any]) -> None:
        print_table(r["rows"], title=f"mean time per target, same instances, peers limited to "
                                     f"{r['time_limit_s']:g} s per run: to the proven optimum, and to "
                                     f"within {r['precision_rel']:g} x the pool's range (sum |v|) of it")
        print("a run not proven (or not within the precision) counts its full time: its mean is a "
              "lower bound; *_vs_ours: the peer's mean over the optimizer's (proven optimum)")
        for note in r["missing"]:
            print(f"not run: {note}")
        print(f"machine: {_machine()}")

    emit(result, args, show)
    return 0


def _lottery(args: argparse.Namespace) -> int:
    from crossbar_ctl.optimizer._bench import bench_lottery

    targets = 20_000 if args.quick else 397_000
    kinds = ("network", "uniform")
    bar, step = _progress(targets * len(kinds), "lottery", args)
    with bar:
        rows = [bench_lottery(kind=kind, targets=targets, target_max=args.target_max,
                              seed=args.seed, progress=step) for kind in kinds]

    def show(r: list[dict[str, Any]]) -> None:
        print_table(r, title=f"Pensia et al. 2020, Experiment 1: {targets} targets, 21 fresh values "
                             "uniform on [-0.464, 0.541] each (target: all within 0.01 in <= 10 s); "
                             "'network': the weights of a 784-500-10 MLP at standard initialisation, "
                             f"'uniform': uniform on [-{args.target_max:g}, {args.target_max:g}]")
        print("within_<t>: targets whose optimal error is at most t; median_error: the median "
              "optimal error (the paper's 0.01 sits far above it)")

    emit(rows, args, show)
    return 0


def add_commands(commands, bench) -> None:
    """Add ``bench precision``, ``bench solver``, ``bench peers`` and ``bench lottery``."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
        parser.add_argument("--quick", action="store_true", help="a small, fast run (smoke test)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = bench.add_parser("precision", help="bits of precision against the number of resistors")
    p.add_argument("--population", choices=("uniform", "lognormal"), default="uniform",
                   help="conductances uniform on [0.5, 1.5] G0 or lognormal (sigma 0.3)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the curves (needs matplotlib)")
    common(p)
    p.set_defaults(run=_precision)

    p = bench.add_parser("solver", help="subset-sum cells per second at m = 8 ... 40")
    common(p)
    p.set_defaults(run=_solver)

    p = bench.add_parser("peers", help="the optimizer against brute force and MILP solvers")
    p.add_argument("--instances", type=int, default=5, help="targets per size (default 5)")
    p.add_argument("--time-limit-s", type=float, default=10.0,
                   help="time limit per target and run for each peer solver, seconds (default 10)")
    p.add_argument("--precision-rel", type=float, default=None,
                   help="the precision peers are timed to, relative to the pool's range sum |v| "
                        "(default 1e-4: a branch calibrated to ~1e-4)")
    common(p)
    p.set_defaults(run=_peers)

    p = bench.add_parser("lottery", help="Pensia et al. 2020 Experiment 1: 397,000 subset sums")
    p.add_argument("--target-max", type=float, default=1.0,
                   help="the uniform row's targets lie on [-TARGET_MAX, TARGET_MAX] (default 1)")
    common(p)
    p.set_defaults(run=_lottery)
