"""How few pairs ``program --update`` could rewrite after drift, from the simulator's truth (read
for this analysis only): the realized median comes back within ``--goal-bits`` of fresh once half
the pairs are within ``2**goal_bits`` times the fresh median. Pairs already there stay; each pair
rewritten lands there with probability ``p``: 1 for an oracle that puts it back exactly, the fresh
pairs' own rate for a rewrite that comes back to the fresh plan's error (what the refinement does).
A pair rewritten touches one or two cells, so the cells' fraction is at least half the pairs'.

    python scripts/drift_rewrite_bound.py [--days 31] [--drift-per-hour 1.6e-5] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "crossbar_ctl" / "engine"))

from test_drift_guard import true_errors

from calibration import calibrate
from crossbar_ctl._lab import advance_sim_time, open_lab
from crossbar_ctl.core.config import load_lab_config
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._workflow import program_network


def needed(stale: np.ndarray, fresh: np.ndarray, goal_bits: float, p: float) -> float:
    """Fraction of the pairs to rewrite, worst first, for half within the goal (1.0: never)."""
    threshold = np.median(np.abs(fresh)) * 2.0**goal_bits
    short = stale.size / 2 - np.sum(np.abs(stale) <= threshold)
    return 0.0 if short <= 0 else min(1.0, np.ceil(short / p) / stale.size) if p > 0 else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=31.0)
    parser.add_argument("--drift-per-hour", type=float, default=1.6e-5)
    parser.add_argument("--goal-bits", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    print("seed | lost | within goal now | pairs to rewrite: oracle / as fresh (p) | cells at least")
    for seed in args.seeds:
        network, _ = uniform_layer(args.size - 1, args.size // 2, samples=20, seed=seed)
        config = load_lab_config({"name": "bound", "sim": {"rows": args.size, "cols": args.size, "branches": 8,
                                                          "profile": "pcb", "seed": seed,
                                                          "drift_per_hour": args.drift_per_hour}})
        with open_lab(config) as lab:
            plan = program_network(lab, network, calibrate(lab))
            fresh = true_errors(lab, plan)
            advance_sim_time(lab, args.days * 86400.0)
            stale = true_errors(lab, plan)
        threshold = np.median(np.abs(fresh)) * 2.0**args.goal_bits
        p = float(np.mean(np.abs(fresh) <= threshold))
        oracle, as_fresh = needed(stale, fresh, args.goal_bits, 1.0), needed(stale, fresh, args.goal_bits, p)
        print(f"{seed} | {np.log2(np.median(np.abs(stale)) / np.median(np.abs(fresh))):.2f} | "
              f"{np.mean(np.abs(stale) <= threshold):.2f} | {oracle:.2f} / {as_fresh:.2f} ({p:.2f}) | "
              f"{oracle / 2:.2f} / {as_fresh / 2:.2f} (one cell a pair), {as_fresh:.2f} (two)")


if __name__ == "__main__":
    main()
