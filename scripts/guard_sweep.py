"""The drift guard against its budget, case by case: the sweeps of ``test_drift_guard.py`` on more seeds.

For each board and seed a plan is programmed once; then the board is opened at each age (and +10 K)
and probed. Each case prints the truth's median weight error now against the layer's budget (the
median the guard allows, ``budget_median``), the probe's estimate of it (``error_median``) and the
verdict. A case is *beyond the budget* when the truth's median is above ``budget_median``; the
guard's target is to refuse each of those and never a fresh plan. The simulator's truth is read for
this analysis only.

    python scripts/guard_sweep.py [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "crossbar_ctl" / "engine"))

from test_drift_guard import SWEEPS, lab_config, true_errors

from calibration import calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._guard import probe_plan
from crossbar_ctl.engine._workflow import program_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    ratios, missed, refused_fresh, cases = [], [], [], 0
    for sweep, (board, hours) in SWEEPS.items():
        for seed in args.seeds:
            config = {**board, "seed": seed}
            size = config.get("size", 8)
            network, _ = uniform_layer(size - 1, size // 2, samples=20, seed=seed)
            with open_lab(lab_config(**config)) as lab:
                plan = program_network(lab, network, calibrate(lab))
            for name, lab_file in ([("fresh", lab_config(**config))]
                                   + [(f"{h} h", lab_config(h, **config)) for h in hours]
                                   + [("+10 K", lab_config(temperature_c=35.0, **config))]):
                with open_lab(lab_file) as lab:
                    true_median = float(np.median(np.abs(true_errors(lab, plan))))
                    probe = probe_plan(lab, plan)
                layer = probe.layers[0]
                cases += 1
                ratios.append(np.log2(layer.error_median / true_median))
                if true_median > layer.budget_median and not probe.over_budget:
                    missed.append(f"{sweep} seed {seed} {name}")
                if name == "fresh" and probe.over_budget:
                    refused_fresh.append(f"{sweep} seed {seed}")
                print(f"{sweep:34s} seed {seed} {name:7s} true / budget {true_median / layer.budget_median:5.2f}"
                      f"  estimate / budget {layer.error_median / layer.budget_median:5.2f}"
                      f"  {'refused' if probe.over_budget else 'passed'}", flush=True)
    ratios = np.array(ratios)
    print(f"{cases} cases: beyond the budget and passed: {missed or 'none'}; fresh refused: {refused_fresh or 'none'};"
          f" log2(estimate / truth) rms {np.sqrt(np.mean(ratios**2)):.2f},"
          f" range {ratios.min():+.2f} to {ratios.max():+.2f}")


if __name__ == "__main__":
    main()
