#!/usr/bin/env python3
"""Program and check the exported ONNX fixtures on a simulated lab: ``crossbar demo``'s flow.

For each model (``tests/crossbar_ctl/engine/data/<name>.onnx``, written by
``scripts/export_onnx_models.py``) this runs :func:`crossbar_ctl.engine._demo.run_demo` on the
demo lab (64x64 cells of 8 branches, a few faults; the ``pcb`` board unless ``--profile``):
calibrate, program with the hardware in the loop, and check the analog run against float64 on
the digits' held-out test set, in one process so the simulated board ages once. Prints one JSON
line per model: accuracies, agreement, per-layer enob (variance convention) and realized weight
bits from the simulator's truth, and the time of each stage::

    python3 scripts/check_onnx_models.py [--profile pcb] [--samples N] [lenet_digits resmlp_digits]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from crossbar_ctl.engine._demo import run_demo
from crossbar_ctl.engine._network import load_dataset, load_network

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "crossbar_ctl" / "engine" / "data"
DIGITS = ROOT / "crossbar_ctl" / "data" / "digits_mlp.npz"  # its test set: the 360 held-out digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["lenet_digits", "resmlp_digits"])
    parser.add_argument("--profile", choices=("ideal", "pcb", "harsh"), default="pcb")
    parser.add_argument("--samples", type=int, default=None, help="the first N test digits (default: all 360)")
    args = parser.parse_args()
    x, y = load_dataset(DIGITS)
    for name in args.models:
        network = dataclasses.replace(load_network(MODELS / f"{name}.onnx"), test_x=x, test_y=y)
        result = run_demo(profile=args.profile, network=network, samples=args.samples, show_progress=False)
        print(json.dumps({
            "model": name, "profile": result["profile"], "samples": result["samples"],
            "digital_accuracy": result["digital_accuracy"], "analog_accuracy": result["analog_accuracy"],
            "agreement": result["agreement"], "enob": [round(layer["enob"], 2) for layer in result["layers"]],
            "realized_bits_median": [round(layer["realized_bits"]["median"], 2) if layer["realized_bits"] else None
                                     for layer in result["layers"]],
            "timings_s": {k: round(v, 1) for k, v in result["timings_s"].items()},
            "load_average": [round(v, 1) for v in os.getloadavg()],
        }), flush=True)


if __name__ == "__main__":
    main()
