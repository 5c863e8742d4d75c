"""``crossbar bench circuit``: timings of the exact circuit solver (registered by ``cli._main``)."""

from __future__ import annotations

import argparse

from crossbar_ctl.cli._main import emit, print_table


def add_commands(commands, bench) -> None:
    """Add ``crossbar bench circuit``."""
    parser = bench.add_parser(
        "circuit",
        help="batch solve times of the exact circuit solver against plain SuperLU",
        description="Solve the nodal equations of square arrays with wires and random branch "
        "masks for a batch of input vectors, each route on a fresh circuit with everything it "
        "builds. In the same run, the reference: plain scipy SuperLU (splu of the assembled "
        "nodal matrix with its default COLAMD order, one factorisation, the same batch solved "
        "at once), and ratios of its times to ours (> 1: ours is faster). Ours: auto (the "
        "route CrossbarCircuit.currents picks: the transfer matrix reduced onto the terminals "
        "by nested dissection, or direct solves), its cold time (its per-shape plan built "
        "too), its largest difference from the refined direct solve; the previous route "
        "(direct: factored and refined solves) and its ratio; the transfer matrix alone; one "
        "vector on a fresh circuit (iterative where auto takes it); peak memory.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                        help="array sizes, rows = cols (default 32 64 128 256)")
    parser.add_argument("--branches", type=int, default=8, help="branches per cell (default 8)")
    parser.add_argument("--batch", type=int, default=64,
                        help="input vectors per solve (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of arrays and inputs")
    parser.add_argument("--compare-sparse", action="store_true",
                        help="also time the general sparse LU solver and compare its currents")
    parser.add_argument("--ours-only", action="store_true",
                        help="time only auto (no reference, no direct solver): for sizes where "
                        "those take minutes, such as 512")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=_bench_circuit)


def _bench_circuit(args: argparse.Namespace) -> int:
    from sim._bench_circuit import DEFAULT_SIZES, REFERENCE, bench_circuit

    results = bench_circuit(args.sizes or DEFAULT_SIZES, branches=args.branches,
                            batch=args.batch, seed=args.seed, compare_sparse=args.compare_sparse,
                            ours_only=args.ours_only)

    def milliseconds(r: dict, *keys: str) -> dict:
        return {f"{key[:-2]}_ms": 1e3 * r[key] for key in keys if key in r}

    def show(rows: list[dict]) -> None:
        table = [
            {
                "size": f"{r['rows']}x{r['cols']}",
                "batch": r["batch"],
                "auto": r["auto"],
                **milliseconds(r, "auto_batch_s", "auto_cold_s", "plan_s", "ref_batch_s"),
                **{key: r[key] for key in ("auto_batch_ratio", "auto_cold_ratio",
                                           "auto_rel_diff", "ref_rel_diff") if key in r},
                **milliseconds(r, "ref_factor_s"),
                **({"ref_solve_ms/vec": 1e3 * r["ref_solve_s"]} if "ref_solve_s" in r else {}),
                **({"method": r["method"]} if "method" in r else {}),
                **milliseconds(r, "factor_s"),
                **({"solve_ms/vec": 1e3 * r["solve_s"]} if "solve_s" in r else {}),
                **{key: r[key] for key in ("direct_batch_ratio", "auto_vs_direct") if key in r},
                **milliseconds(r, "transfer_prepare_s"),
                **({"transfer_us/vec": 1e6 * r["transfer_solve_s"]}
                   if "transfer_solve_s" in r else {}),
                **milliseconds(r, "fresh_single_s"),
                **({"fresh_method": r["fresh_method"]} if "fresh_method" in r else {}),
                **{key: r[key] for key in ("plan_mib", "transfer_peak_mib", "peak_mib",
                                           "rss_peak_mib", "kcl_rel") if key in r},
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
