"""Pre-distortion above 12 branches and with max_closed: bits through the Python API (issue 12).

A 33x40 simulated array (profile "ideal", default wires), one U(-1, 1) dense layer of 32 inputs
(+ bias) and 20 outputs, calibrated, planned, programmed in the loop and checked on 200 inputs.

    python scripts/bench_predistort.py 8 12 13 16 --max-closed 8:6 16:10
"""

from __future__ import annotations

import argparse
import json
import time


def run(branches: int, max_closed: int | None, *, rows: int, cols: int, seed: int) -> dict:
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._bench import uniform_layer
    from crossbar_ctl.engine._plan import PlanOptions
    from crossbar_ctl.engine._workflow import check_network, program_network

    network, x = uniform_layer(rows - 1, cols // 2, samples=200, seed=seed)
    config = {"name": "bench-predistort",
              "sim": {"rows": rows, "cols": cols, "branches": branches, "profile": "ideal", "seed": seed}}
    with open_lab(config) as lab:
        t0 = time.monotonic()
        record = calibrate(lab)
        t1 = time.monotonic()
        plan = program_network(lab, network, record, plan_options=PlanOptions(max_closed=max_closed))
        t2 = time.monotonic()
        report = check_network(lab, plan, x)
    layer = report.layers[0]
    return {"branches": branches, "max_closed": max_closed,
            "planned_bits_median": round(layer.planned_bits.median, 2),
            "realized_bits_median": round(layer.realized_bits.median, 2),
            "realized_bits_p01": round(layer.realized_bits.p01, 2),
            "enob": round(layer.enob, 2), "agreement": round(report.agreement, 4),
            "calibrate_s": round(t1 - t0, 1), "program_s": round(t2 - t1, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("branches", type=int, nargs="*", default=[8, 12, 13, 16])
    parser.add_argument("--max-closed", nargs="*", default=[], metavar="BRANCHES:CAP",
                        help="extra runs with PlanOptions(max_closed=CAP)")
    parser.add_argument("--rows", type=int, default=33)
    parser.add_argument("--cols", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = [(n, None) for n in args.branches]
    runs += [tuple(int(v) for v in item.split(":")) for item in args.max_closed]
    for n, cap in runs:
        print(json.dumps(run(n, cap, rows=args.rows, cols=args.cols, seed=args.seed)), flush=True)


if __name__ == "__main__":
    main()
