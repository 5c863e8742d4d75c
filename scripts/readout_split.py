"""What the readout's own error is made of on the demo's programmed tiles (issue 12): an analysis on
the simulator's truth.

Calibrates and programs the demo (pcb, 64x64x8, digits MLP) as ``crossbar demo`` does, then for each
programmed tile of more than a row compares the plan's last measurement of the pairs (``measured_s``,
the refinement's final reading) with the truth's noiseless pair transfer (read for this analysis
only). It prints the readout error's rms and how its mean square splits, by successive least squares,
into a per-column offset, a per-column gain, a per-column common-mode leak, then the same per row, and
the rest; and the common scale (least squares against the target) of the true error, the loop's
residual and the readout error, with the realized median a common scale alone would leave.

    python scripts/readout_split.py [LAB_FILE]

``LAB_FILE`` (default: the demo's lab) lets the same analysis run with a physics override, e.g. an
exact source-meter: the demo lab plus ``[sim.physics.readout] smu_source_error = false``.
"""

from __future__ import annotations

import sys

import numpy as np

from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import pair_transfer
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, load_tile, program_plan
from crossbar_ctl.engine._workflow import array_model


def without(error: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """``error`` less its least-squares projection on ``x`` per column (axis 0) or per row (axis 1)."""
    norm = np.maximum(np.sum(x * x, axis=axis, keepdims=True), 1e-300)
    coefficient = np.sum(error * x, axis=axis, keepdims=True) / norm
    return error - coefficient * x


def common_scale(error: np.ndarray, target: np.ndarray) -> float:
    return float(np.sum(error * target) / np.sum(target**2))


def main() -> None:
    network = load_network(DIGITS_NETWORK)
    with demo_lab(sys.argv[1] if len(sys.argv) > 1 else str(DEMO_LAB)) as lab:
        model = array_model(calibrate(lab))
        plan = program_plan(lab, make_plan(network, model, options=PlanOptions()), model, options=ProgramOptions())
        for t, record in enumerate(plan.header.tiles):
            tile = record.tile
            if tile.rows < 8:
                continue
            load_tile(lab, plan.step_masks(tile.step))
            cells = np.asarray(lab.truth.transfer_s())[tile.block]
            true, target = pair_transfer(cells), plan.tile(t, "target_s")
            seen = pair_transfer(plan.tile(t, "measured_s"))
            common = cells[:, 0::2] + cells[:, 1::2]
            error = seen - true
            total, rest, shares = np.mean(error**2), error, []
            for name, x, axis in (("column offset", np.ones_like(error), 0), ("column gain", true, 0),
                                  ("column common-mode leak", common, 0), ("row offset", np.ones_like(error), 1),
                                  ("row gain", true, 1), ("row common mode", common, 1)):
                before = np.mean(rest**2)
                rest = without(rest, x, axis)
                shares.append(f"{name} {(before - np.mean(rest**2)) / total:.2f}")
            magnitude = np.abs(target).max()
            scale = common_scale(true - target, target)
            print(f"tile {t} ({tile.rows}x{tile.pairs}): readout error {np.sqrt(total):.2e} S rms "
                  f"(median |.| {np.median(np.abs(error)):.2e}); its mean square: {', '.join(shares)}, "
                  f"rest {np.mean(rest**2) / total:.2f}")
            print(f"    common scale of the true error {scale:+.2e}, of the loop's residual "
                  f"{common_scale(seen - target, target):+.2e}, of the readout error "
                  f"{common_scale(error, target):+.2e};"
                  f" realized median {np.median(-np.log2(np.abs(true - target) / magnitude)):.2f} bits, the common"
                  f" scale alone {np.median(-np.log2(np.abs(scale * target) / magnitude)):.2f}")


if __name__ == "__main__":
    main()
