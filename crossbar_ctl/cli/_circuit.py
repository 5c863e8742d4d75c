"""``crossbar bench circuit``: timings of the exact circuit solver (registered by ``cli._main``)."""

from __future__ import annotations

import argparse

from crossbar_ctl.cli._main import emit, print_table


def add_commands(commands, bench) -> None:
    """Add ``crossbar bench circuit``."""
    parser = bench.add_parser(
        "circuit",
        help="prepare and per-vector solve times of the exact circuit solver",
        description="Prepare (factor) and solve the nodal equations of square arrays with wires "
        "and random branch masks; solve times are per input vector within a batch, beside the "
        "ideal G^T V of the same batch, and the peak memory of one prepare and solve. In the "
        "same run, a reference: plain scipy SuperLU (splu of the assembled nodal matrix, one "
        "factorisation, the same batch solved at once), with the ratios of its times to ours. "
        "Each method of ours beside it: direct (refined solves), one vector on a fresh circuit "
        "(iterative where auto takes it) and transfer (the terminal "
        "transfer matrix from rows unit solves, then one product per batch); the batch ratios "
        "count the whole batch, prepare included, and auto is the method picked for it.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                        help="array sizes, rows = cols (default 32 64 128 256)")
    parser.add_argument("--branches", type=int, default=8, help="branches per cell (default 8)")
    parser.add_argument("--batch", type=int, default=64,
                        help="input vectors per solve (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of arrays and inputs")
    parser.add_argument("--compare-sparse", action="store_true",
                        help="also time the general sparse LU solver and compare its currents")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=_bench_circuit)


def _bench_circuit(args: argparse.Namespace) -> int:
    from sim._bench_circuit import DEFAULT_SIZES, REFERENCE, bench_circuit

    results = bench_circuit(args.sizes or DEFAULT_SIZES, branches=args.branches,
                            batch=args.batch, seed=args.seed, compare_sparse=args.compare_sparse)

    def show(rows: list[dict]) -> None:
        table = [
            {
                "size": f"{r['rows']}x{r['cols']}",
                "method": r["method"],
                "factor_ms": 1e3 * r["factor_s"],
                f"solve_ms/vec (batch {r['batch']})": 1e3 * r["solve_s"],
                "single_ms": 1e3 * r["single_s"],
                "ideal_us/vec": 1e6 * r["ideal_s"],
                "peak_mib": r["peak_mib"],
                "kcl_rel": r["kcl_rel"],
                "ref_factor_ms": 1e3 * r["ref_factor_s"],
                "ref_solve_ms/vec": 1e3 * r["ref_solve_s"],
                "factor_ratio": r["factor_ratio"],
                "solve_ratio": r["solve_ratio"],
                "ref_rel_diff": r["ref_rel_diff"],
                "fresh_single_ms": 1e3 * r["fresh_single_s"],
                "fresh_method": r["fresh_method"],
                "fresh_single_ratio": r["fresh_single_ratio"],
                "fresh_rel_diff": r["fresh_rel_diff"],
                "transfer_prepare_ms": 1e3 * r["transfer_prepare_s"],
                "transfer_us/vec": 1e6 * r["transfer_solve_s"],
                "transfer_rel_diff": r["transfer_rel_diff"],
                "transfer_peak_mib": r["transfer_peak_mib"],
                "direct_batch_ratio": r["direct_batch_ratio"],
                "transfer_batch_ratio": r["transfer_batch_ratio"],
                "auto": r["auto"],
                **({"sparse_factor_ms": 1e3 * r["sparse_factor_s"],
                    "sparse_solve_ms/vec": 1e3 * r["sparse_solve_s"],
                    "sparse_rel_diff": r["sparse_rel_diff"]} if "sparse_factor_s" in r else {}),
            }
            for r in rows
        ]
        print_table(table, title=f"exact circuit solve, {args.branches} branches per cell, "
                    "wires and sense resistance from the default sim config\n"
                    f"reference (ref_*; ratio = reference time / ours): {REFERENCE}")

    emit(results, args, show)
    return 0
