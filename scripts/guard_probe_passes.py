"""How many reads the drift guard's probe needs: the guard sweep of ``test_drift_guard.py`` with the
fresh reference (taken right after programming) and the later probes read at fewer passes / repeats.

For each board a plan is programmed once; right after, the fresh reference is read again for each
setting ``(passes, repeats)`` (the channels' fit from scratch, as programming does). Then the board
is opened at each age (and +10 K) and every setting's probe reads it; the simulator's truth gives
the realized median bits actually lost (read for this analysis only). Prints, per setting, the
verdicts (fresh refused? stale beyond the budget passed? within it refused?) and the estimate's
error against the truth.

    python scripts/guard_probe_passes.py [--settings 2x4 1x4 2x2 1x2] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "crossbar_ctl" / "engine"))

from test_drift_guard import GRAY_BITS, SEED, bits_lost, lab_config, true_errors

from calibration import calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._guard import (
    DEFAULT_SLACK_BITS,
    fresh_arrays,
    measure_plan,
    probe_plan,
)
from crossbar_ctl.engine._plan import SwitchPlan
from crossbar_ctl.engine._workflow import program_network

BOARDS = {
    "8x8x6, 1e-4": ({"seed": SEED}, (1, 3, 6, 12, 24, 168, 744, 2160, 8760)),
    "16x16x8, 1.6e-5": ({"seed": 0, "size": 16, "branches": 8, "drift_per_hour": 1.6e-5},
                        (24, 72, 168, 336, 744, 2160, 8760)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["2x4", "1x4", "1x2"], help="PASSESxREPEATS")
    parser.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    parser.add_argument("--seed", type=int, default=None, help="another board (default: the tests' seeds)")
    args = parser.parse_args()
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings]
    out = {}
    for name in args.boards:
        board, hours = BOARDS[name]
        board = board if args.seed is None else {**board, "seed": args.seed}
        size = board.get("size", 8)
        network, _ = uniform_layer(size - 1, size // 2, samples=20, seed=board["seed"])
        variants = {}
        with open_lab(lab_config(**board)) as lab:
            plan = program_network(lab, network, calibrate(lab))
            fresh = true_errors(lab, plan)
            bare = {k: v for k, v in plan.arrays.items() if ".probe_" not in k}
            for passes, repeats in settings:
                probe = measure_plan([lab], SwitchPlan(plan.header, bare), passes=passes, repeats=repeats)
                variants[(passes, repeats)] = SwitchPlan(plan.header, {**bare, **fresh_arrays(probe)})
        rows = []
        cases = [("fresh", lab_config(**board))] + [(f"{h} h", lab_config(h, **board)) for h in hours] + [
            ("+10 K", lab_config(temperature_c=35.0, **board))]
        for case, config in cases:
            with open_lab(config) as lab:
                lost = bits_lost(true_errors(lab, plan), fresh)
                row = {"case": case, "lost": lost}
                for (passes, repeats), variant in variants.items():
                    started = time.process_time()
                    probe = probe_plan(lab, variant, repeats=repeats)
                    row[f"{passes}x{repeats}"] = (probe.layers[0].bits_lost, probe.over_budget,
                                                  time.process_time() - started)
                rows.append(row)
        out[name] = rows
        print(f"\n{name}: lost true | " + " | ".join(f"{p}x{r}: read, refused" for p, r in settings))
        for row in rows:
            print(f"  {row['case']:>7} {row['lost']:+.2f} | " + " | ".join(
                f"{row[f'{p}x{r}'][0]:+.2f} {'REFUSE' if row[f'{p}x{r}'][1] else 'pass  '}" for p, r in settings))
        for p, r in settings:
            key = f"{p}x{r}"
            fresh_refused = rows[0][key][1]
            beyond = [row for row in rows if row["lost"] > DEFAULT_SLACK_BITS + GRAY_BITS]
            within = [row for row in rows if row["lost"] < DEFAULT_SLACK_BITS - GRAY_BITS]
            misses = [row["case"] for row in beyond if not row[key][1]]
            false = [row["case"] for row in within if row[key][1]]
            error = [row[key][0] - row["lost"] for row in rows]
            print(f"  {key}: fresh refused {fresh_refused}; beyond passed {misses}; within refused {false}; "
                  f"estimate - truth mean {np.mean(error):+.2f}, max |.| {np.max(np.abs(error)):.2f}; "
                  f"probe CPU {np.mean([row[key][2] for row in rows]):.2f} s")
    print(json.dumps({name: rows for name, rows in out.items()}, default=str))


if __name__ == "__main__":
    main()
