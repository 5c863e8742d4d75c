"""Where the demo's realized weight error comes from (issue 12): an analysis on the simulator's truth.

Calibrates and programs the demo (pcb, 64x64x8, digits MLP) as ``crossbar demo`` does, then, with the
simulator's truth (for this analysis only; the controller never reads it):

- per layer, each programmed pair's true error against what the refinement's last measurement saw
  and against the readout's own error (that measurement minus the truth), the true error split into
  a common scale, a per-column gain, a per-pair common-mode term and the rest;
- the refinement's first round on the first tile: how far its moves land from their prediction, split
  into what the calibration's branch values, the slopes and the neighbours' moves contribute.

Usage: ``python scripts/realized_split.py [--true-branches] [--locality S_PER_S]`` (about 100 s CPU). ``--true-branches``
bounds what knowing the branch values would buy: the refinement (only it) is handed the simulator's
true branch conductances, scaled to the calibration's overall scale; ``--locality``: the refinement's
move penalty instead of the plan's. Each refined tile prints its rounds, moves, noise and median
residual.
"""

import sys
from dataclasses import replace

import numpy as np

import crossbar_ctl.engine._refine as refine
from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import (
    masks_from_selection,
    pair_transfer,
    weight_magnitude,
)
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, load_tile, program_plan
from crossbar_ctl.engine._workflow import array_model


def bits(error, scale):
    return np.median(-np.log2(np.abs(error) / scale))


def split(error, target, common):
    """Shares of ``error (rows, pairs)``: a layer scale, per-column gains, per-pair common mode, rest."""
    total = np.mean(error**2)
    rest = error - np.sum(error * target) / np.sum(target**2) * target
    shares = [1 - np.mean(rest**2) / total]
    for x in (target, common):
        before = np.mean(rest**2)
        rest = rest - np.sum(rest * x, axis=0) / np.maximum(np.sum(x * x, axis=0), 1e-300) * x
        shares.append((before - np.mean(rest**2)) / total)
    return shares + [np.mean(rest**2) / total]


first = {}
measure, solve = refine.measure_tile, refine.refine_tile


def logged_solve(model, tile, selection, target, cell, outputs, slope, **options):
    chosen, predicted = solve(model, tile, selection, target, cell, outputs, slope, **options)
    first.setdefault("solve", (model, tile, selection.copy(), pair_transfer(outputs).ravel(), predicted, slope))
    return chosen, predicted


def logged_measure(lab, model, tile, selection, context, **options):
    result = measure(lab, model, tile, selection, context, **options)
    key = "before" if "before" not in first else "after" if "solve" in first and "after" not in first else None
    if key:
        truth = lab.truth
        first[key] = (
            selection.copy(), pair_transfer(result[1]).ravel(), np.asarray(truth.transfer_s())[tile.block].copy(),
            np.asarray(truth.cell_conductance_s())[tile.block].copy(), np.asarray(truth.branch_conductance_s()))
    return result


refine.measure_tile, refine.refine_tile = logged_measure, logged_solve
network = load_network(DIGITS_NETWORK)
with demo_lab(str(DEMO_LAB)) as lab:
    model = array_model(calibrate(lab))
    true_g = np.asarray(lab.truth.branch_conductance_s())
    ok = model.usable & (true_g > 0)
    within = model.conductance_s / true_g  # the calibration's error, its cell-wide part taken out
    cell_scale = np.nanmedian(np.where(ok, within, np.nan), axis=-1, keepdims=True)
    z = (model.conductance_s - cell_scale * true_g) / model.sigma_s
    print(f"calibration: branch error within a cell over its stated sigma {np.sqrt(np.mean(z[ok] ** 2)):.2f} rms; "
          f"cell scale {np.nanstd(cell_scale):.2e} rms")
    import crossbar_ctl.engine._program as program

    plain, told, extra = program.refine_measured, None, {}
    if "--true-branches" in sys.argv:
        told = replace(model, conductance_s=np.where(ok, true_g * np.median(within[ok]), model.conductance_s))
    if "--locality" in sys.argv:
        extra["locality"] = float(sys.argv[sys.argv.index("--locality") + 1])

    def refine_with(lab_, model_, *args, **options):
        done = plain(lab_, model_ if told is None else replace(told, usable=model_.usable), *args,
                     **{**options, **extra})
        error = np.abs(done.residual_s)
        print(f"refined tile: {done.rounds} rounds, {done.pairs_moved} moves, noise {done.noise_s:.1e} S, "
              f"median |residual| {np.median(error):.1e}, within 2 sqrt(2) noise {np.mean(error < 2.83 * done.noise_s):.2f}")
        return done

    program.refine_measured = refine_with
    plan = program_plan(lab, make_plan(network, model, options=PlanOptions()), model, options=ProgramOptions())
    for k, layer in enumerate(plan.header.layers):
        scale = layer.conductance_per_weight_s * weight_magnitude(network.layers[k].matrix, network.layers[k].bias)
        t = max(layer.tiles, key=lambda u: plan.header.tiles[u].tile.rows)
        tile = plan.header.tiles[t].tile
        load_tile(lab, plan.step_masks(tile.step))
        true = np.asarray(lab.truth.transfer_s())[tile.block]
        target, seen = plan.tile(t, "target_s"), pair_transfer(plan.tile(t, "measured_s"))
        error = pair_transfer(true) - target
        shares = split(error, target, true[:, 0::2] + true[:, 1::2])
        print(f"layer {k} (tile {t}): realized {bits(error, scale):.2f} bits median, the loop saw "
              f"{bits(seen - target, scale):.2f}, the readout's own error {bits(seen - pair_transfer(true), scale):.2f};"
              " shares of the true error: scale {:.2f}, column gain {:.2f}, pair common mode {:.2f}, rest {:.2f}"
              .format(*shares))

model, tile, selection, base, predicted, slope = first["solve"]
trial, measured, true_after, cell_after, branch = first["after"]
_, _, true_before, cell_before, _ = first["before"]
moved = np.any(trial != selection, axis=1)
cells = (tile.rows, tile.pairs)
calibrated = [model.cell_conductance_s(masks_from_selection(s, *cells), tile) for s in (selection, trial)]
twin = [refine._twin_outputs(model, model.twin, tile, s) for s in (selection, trial)]
step_true = pair_transfer(true_after - true_before).ravel()
step_twin = pair_transfer(twin[1] - twin[0]).ravel()
own_calibrated = pair_transfer(slope * (calibrated[1] - calibrated[0])).ravel()
own_true = pair_transfer(slope * (cell_after - cell_before)).ravel()


def rms(x):
    return float(np.sqrt(np.mean(x[moved] ** 2)))


raw = refine.measured_slope(model, model.twin, tile, calibrated[0], calibrated[0], measured_gain=False)
neighbours = step_twin - pair_transfer(raw * (calibrated[1] - calibrated[0])).ravel()
print(f"first round, first tile: {moved.sum()} pairs moved; true step - predicted {rms(step_true - (predicted - base)):.2e} S rms;"
      f" with the twin's step for the neighbours' moves {rms(step_true - own_calibrated - neighbours):.2e};"
      f" the calibration's branch values {rms(own_true - own_calibrated):.2e}; the pairs that stayed moved"
      f" {float(np.sqrt(np.mean(step_true[~moved] ** 2))):.2e}, the twin says to {float(np.sqrt(np.mean((step_true - step_twin)[~moved] ** 2))):.2e}")
