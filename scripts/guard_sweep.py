"""The drift guard against its budget, case by case: the sweeps of ``test_drift_guard.py`` on more
seeds, or on the demo's board.

For each board and seed a plan is programmed once; then the board is opened at each age (and
warmer) and probed. Each case prints, per layer, the truth's median weight error now against the
layer's budget (the median the guard allows, ``budget_median``), the probe's estimate of it
(``error_median``) and the verdict. A case is *beyond the budget* when some layer's true median is
above its ``budget_median``; the guard's target is to refuse each of those and never a fresh plan.
The simulator's truth is read for this analysis only.

    python scripts/guard_sweep.py [--seeds 0 1 2 3]
    python scripts/guard_sweep.py --demo          # the demo's lab and digits MLP (pcb, 64x64x8)
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "crossbar_ctl" / "engine"))

from test_drift_guard import HOUR_S, SWEEPS, lab_config, layer_true_errors

from calibration import calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK
from crossbar_ctl.engine._guard import probe_plan
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._workflow import program_network


def sweep(label: str, network, cases: list[tuple[str, dict]], tally: dict) -> None:
    """Program ``network`` on the first case's lab, then probe every case's lab."""
    with open_lab(cases[0][1]) as lab:
        plan = program_network(lab, network, calibrate(lab))
    for name, config in cases:
        with open_lab(config) as lab:
            truth = [float(np.median(np.abs(errors))) for errors in layer_true_errors(lab, plan)]
            probe = probe_plan(lab, plan)
        beyond = any(t > layer.budget_median for t, layer in zip(truth, probe.layers))
        tally["cases"] += 1
        tally["beyond"] += beyond
        tally["ratios"] += [np.log2(layer.error_median / t) for t, layer in zip(truth, probe.layers)]
        if beyond and not probe.over_budget:
            tally["missed"].append(f"{label} {name}")
        if name == "fresh" and probe.over_budget:
            tally["refused_fresh"].append(label)
        print(f"{label:40s} {name:7s} " + "  ".join(
            f"layer {layer.index}: true / budget {t / layer.budget_median:5.2f}, estimate / budget "
            f"{layer.error_median / layer.budget_median:5.2f}" for t, layer in zip(truth, probe.layers))
            + f"  {'refused' if probe.over_budget else 'passed'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--demo", action="store_true", help="the demo's board and network instead")
    args = parser.parse_args()
    tally = {"cases": 0, "beyond": 0, "ratios": [], "missed": [], "refused_fresh": []}
    if args.demo:
        demo = tomllib.loads(DEMO_LAB.read_text())

        def at(hours: float = 0.0, **sim) -> dict:
            return {**demo, "sim": {**demo["sim"], "start_time_s": hours * HOUR_S, **sim}}

        cases = ([("fresh", at())] + [(f"{h} h", at(h)) for h in (6, 24, 72, 168, 336, 744)]
                 + [(f"+{k} K", at(temperature_c=25.0 + k)) for k in (2, 5, 10)])
        sweep("demo (pcb, 64x64x8, digits MLP)", load_network(DIGITS_NETWORK), cases, tally)
    else:
        for label, (board, hours) in SWEEPS.items():
            for seed in args.seeds:
                config = {**board, "seed": seed}
                size = config.get("size", 8)
                network, _ = uniform_layer(size - 1, size // 2, samples=20, seed=seed)
                cases = ([("fresh", lab_config(**config))] + [(f"{h} h", lab_config(h, **config)) for h in hours]
                         + [("+10 K", lab_config(temperature_c=35.0, **config))])
                sweep(f"{label} seed {seed}", network, cases, tally)
    ratios = np.array(tally["ratios"])
    print(f"{tally['cases']} cases, {tally['beyond']} beyond the budget; passed: {tally['missed'] or 'none'};"
          f" fresh refused: {tally['refused_fresh'] or 'none'}; log2(estimate / truth) per layer rms"
          f" {np.sqrt(np.mean(ratios**2)):.2f}, range {ratios.min():+.2f} to {ratios.max():+.2f}")


if __name__ == "__main__":
    main()
