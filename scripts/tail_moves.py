"""The demo's worst pairs moved one at a time (issue 12): do their refinement moves land alone?

Calibrates and programs the demo (pcb, 64x64x8, digits MLP) as ``crossbar demo`` does, measures its
first tile afresh (16 readings a row), and for the pairs with the largest measured error asks the
refinement's solver (:func:`crossbar_ctl.engine._solve.refine_tile`, the plan's locality penalty, the
measured slopes) for its best move. Each move is then loaded alone, every other pair as programmed,
and its row read again; the simulator's truth (read for this analysis only, never for control)
says where it really landed. Printed per pair, in units of the layer's max|w| (its conductance):
the error before, the move (conductance moved on each side, branches toggled), the error the solver
predicted, the measured and the true error after, and how far the untouched pairs moved.

Usage: ``python scripts/tail_moves.py [--pairs N]`` (default 12; about 30 s CPU).
"""

import sys

import numpy as np

from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import (
    pair_transfer,
    selection_from_masks,
    weight_magnitude,
)
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan, readout_limits
from crossbar_ctl.engine._refine import measure_tile, measured_slope
from crossbar_ctl.engine._schedule import step_masks
from crossbar_ctl.engine._solve import refine_tile
from crossbar_ctl.engine._workflow import array_model


def selection_of(masks, tile, branches):
    """A tile's masks ``(rows, 2 pairs)`` -> the optimizer's selection ``(pairs, 2 branches)``."""
    closed = selection_from_masks(masks, branches)
    return np.concatenate([closed[:, 0::2], closed[:, 1::2]], axis=-1).reshape(tile.rows * tile.pairs, -1)


def main(count):
    network = load_network(DIGITS_NETWORK)
    with demo_lab(str(DEMO_LAB)) as lab:
        model = array_model(calibrate(lab))
        plan = program_plan(lab, make_plan(network, model, options=PlanOptions()), model, options=ProgramOptions())
        tiles = plan.tiles()
        tile = tiles[0]
        context = step_masks((plan.tile(u, "masks") for u, other in enumerate(tiles)
                              if other.step == tile.step and u != 0), model.geometry[:2])
        branches = model.geometry[2]
        selection = selection_of(plan.tile(0, "masks")[tile.block], tile, branches)
        target = plan.tile(0, "target_s").ravel()
        layer = network.layers[tile.layer]
        scale = plan.header.layers[tile.layer].conductance_per_weight_s * weight_magnitude(layer.matrix, layer.bias)
        limits = readout_limits(lab)
        cell, measured, noise, _ = measure_tile(lab, model, tile, selection, context, repeats=16, limits=limits,
                                                twin=model.twin)
        true_before = pair_transfer(np.asarray(lab.truth.transfer_s())[tile.block]).ravel()
        error = pair_transfer(measured).ravel() - target
        print(f"tile 0: noise {noise:.1e} S, measured rms error {np.sqrt(np.mean(error**2)):.2e} S, "
              f"true {np.sqrt(np.mean((true_before - target) ** 2)):.2e} S")
        chosen, predicted = refine_tile(model, tile, selection, target, cell, measured,
                                        measured_slope(model, model.twin, tile, cell, measured),
                                        locality=plan.header.options.locality)
        g = np.nan_to_num(model.conductance_s[tile.block])
        print("pair, target, error measured / true; move dG+ dG- toggles; error predicted, measured, true after;"
              " the others' true shift rms (of max|w|)")
        for p in np.argsort(-np.abs(error))[:count]:
            row, pair = divmod(int(p), tile.pairs)
            trial = selection.copy()
            trial[p] = chosen[p]
            moved = chosen[p].astype(int) - selection[p]
            plus = np.sum(moved[:branches] * g[row, 2 * pair]) / scale
            minus = np.sum(moved[branches:] * g[row, 2 * pair + 1]) / scale
            _, after, _, _ = measure_tile(lab, model, tile, trial, context, repeats=16, limits=limits,
                                          twin=model.twin, rows=np.array([row]))
            true_after = pair_transfer(np.asarray(lab.truth.transfer_s())[tile.block]).ravel()
            others = np.sqrt(np.mean(np.delete(true_after - true_before, p) ** 2)) / scale
            off = {"before": true_before[p], "predicted": predicted[p], "measured": pair_transfer(after).ravel()[p],
                   "true": true_after[p]}
            off = {key: (value - target[p]) / scale for key, value in off.items()}
            print(f"{p:5d} {target[p] / scale:+.2f}  {error[p] / scale:+.1e} / {off['before']:+.1e};"
                  f"  {plus:+.3f} {minus:+.3f} {int(np.sum(moved != 0)):2d};"
                  f"  {off['predicted']:+.1e} {off['measured']:+.1e} {off['true']:+.1e};  {others:.1e}")


if __name__ == "__main__":
    main(int(sys.argv[sys.argv.index("--pairs") + 1]) if "--pairs" in sys.argv else 12)
