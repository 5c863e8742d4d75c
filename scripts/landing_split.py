"""What a moved pair's landing error is made of, round by round, on the demo's first tile (issue 12).

Calibrates the demo's board (pcb, 64x64x8) as ``crossbar demo`` does, plans the digits MLP and
programs until the first tile's closed-loop refinement is done. In each round it splits every moved
pair's landing error (measured after the move minus the refinement's prediction) with the simulator's
truth (for this analysis only; the controller never reads it):

    landing = after-reading error - before-belief error + neighbours' moves + own step error

- after-reading error: the after measurement minus the true transfer (noise and the readout's own
  systematic error; the noise part is the measurement's stated sigma);
- before-belief error: what the refinement believed the kept state's outputs were, minus the truth
  (the last reading's noise, the twin's update for what the neighbours kept, and the selection bias
  of keeping each pair's best-ever reading);
- neighbours: the true step minus the pair's own step alone (its own change loaded with no other
  pair in its row or columns moving: the moved pairs in groups of distinct rows and columns);
- own step error: the own true step minus the prediction, split into the toggled branches' values
  (within the cell: its calibration's scale taken out, as the measured slope does) and the rest
  (the slope: twin, switch on-resistance, flatness).

Also: the neighbours' shift less the twin's prediction of it (moved and stayed pairs), the own
step's slope error with the twin's slope alone and with the measured gain squared, the solver's best
(the chosen moves' predicted error), the true error of the kept state before and of the trial after
each round, and at the end the kept tile's true median and 99th percentile.

Usage: ``python scripts/landing_split.py [--options k=v ...]`` (about 60 s CPU); options are
``ProgramOptions`` fields, e.g. ``refine_rounds=8 refine_tail_rounds=0``, or ``true=1``: the
refinement (only it) handed the simulator's true branch values, scaled to the calibration's.
"""

import sys
from dataclasses import replace

import numpy as np

import crossbar_ctl.engine._program as program
import crossbar_ctl.engine._refine as refine
from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import masks_from_selection, pair_transfer
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, load_tile, program_plan
from crossbar_ctl.engine._solve import array_response
from crossbar_ctl.engine._workflow import array_model


class Done(Exception):
    pass


state = {"rounds": []}
measure, solve, plain = refine.measure_tile, refine.refine_tile, program.refine_measured


def rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else float("nan")


def true_pairs(lab, tile, context, selection):
    """True pair transfers and cell conductances of ``selection`` loaded beside ``context``."""
    load_tile(lab, context | _full(context, tile, selection))
    transfer = np.asarray(lab.truth.transfer_s())[tile.block]
    return pair_transfer(transfer).ravel(), np.asarray(lab.truth.cell_conductance_s())[tile.block]


def logged_solve(model, tile, selection, target, cell, outputs, slope, **options):
    chosen, predicted = solve(model, tile, selection, target, cell, outputs, slope, **options)
    state["solve"] = {"model": model, "before": selection.copy(), "belief": pair_transfer(outputs).ravel(),
                      "predicted": predicted, "slope": slope, "target": target}
    return chosen, predicted


def logged_measure(lab, model, tile, selection, context, **options):
    result = measure(lab, model, tile, selection, context, **options)
    s = state.pop("solve", None)
    if s is None or "rows" not in options:
        return result
    _, measured, noise, _ = result
    before, trial, target = s["before"], selection, s["target"]
    moved = np.any(trial != before, axis=1)
    t0, c0 = true_pairs(lab, tile, context, before)
    t1, _ = true_pairs(lab, tile, context, trial)
    # each moved pair's own step: groups of moved pairs in distinct rows and pair columns
    r, p = np.divmod(np.arange(moved.size), tile.pairs)
    own, own_cell = np.zeros(moved.size), np.zeros_like(c0)
    for k in range(max(tile.rows, tile.pairs)):
        group = moved & ((r + p) % max(tile.rows, tile.pairs) == k)
        if group.any():
            tg, cg = true_pairs(lab, tile, context, np.where(group[:, None], trial, before))
            own[group] = (tg - t0)[group]
            cols = np.repeat(group.reshape(tile.rows, tile.pairs), 2, axis=1)
            own_cell[cols] = (cg - c0)[cols]
    load_tile(lab, context | _full(context, tile, trial))
    model_, slope = s["model"], s["slope"]
    cal0 = model_.cell_conductance_s(masks_from_selection(before, tile.rows, tile.pairs), tile)
    cal1 = model_.cell_conductance_s(masks_from_selection(trial, tile.rows, tile.pairs), tile)
    scale = np.where(c0 > 0, cal0 / np.where(c0 > 0, c0, 1), 1.0)  # the cell's calibration scale
    branch = pair_transfer(slope * (own_cell * scale - (cal1 - cal0))).ravel()
    own_pred = pair_transfer(slope * (cal1 - cal0)).ravel()
    after = pair_transfer(measured).ravel()
    raw = array_response(model_, model_.twin, cal0, tile)[1]
    twin_cells = raw * (cal1 - cal0)
    twin_shift = pair_transfer(refine._twin_outputs(model_, model_.twin, tile, trial)
                               - refine._twin_outputs(model_, model_.twin, tile, before) - twin_cells).ravel()
    landing = after - s["predicted"]
    row = {
        "moved": int(moved.sum()),
        "landing": rms(landing[moved]),
        "after_reading": rms((after - t1)[moved]),
        "noise_pair": noise * np.sqrt(2.0),
        "before_belief": rms((s["belief"] - t0)[moved]),
        "neighbours": rms((t1 - t0 - own)[moved]),
        "neigh_vs_twin": rms((t1 - t0 - own - twin_shift)[moved]),
        "stayed_vs_twin": rms((t1 - t0 - twin_shift)[~moved]),
        "own_step_err": rms((own - own_pred)[moved]),
        "own_branches": rms(branch[moved]),
        "own_slope": rms((own - own_pred - branch)[moved]),
        "slope_twin": rms((own - pair_transfer(raw * own_cell * scale).ravel())[moved]),
        "slope_gain2": rms((own - pair_transfer(raw * (slope / raw) ** 2 * own_cell * scale).ravel())[moved]),
        "solver_best": float(np.median(np.abs(s["predicted"] - target)[moved])),
        "true_err_before": float(np.median(np.abs(t0 - target))),
        "true_err_after": float(np.median(np.abs(t1 - target))),
        "true_err_moved_after": float(np.median(np.abs(t1 - target)[moved])),
        "true_err_moved_before": float(np.median(np.abs(t0 - target)[moved])),
        "belief_err_kept": float(np.median(np.abs(s["belief"] - target))),
        "own_gross_g": rms(np.abs(cal1 - cal0).reshape(tile.rows, tile.pairs, 2).sum(-1).ravel()[moved]),
        "improved_true": float(np.mean((np.abs(t1 - target) < np.abs(t0 - target))[moved])),
    }
    state["rounds"].append(row)
    return result


def _full(context, tile, selection):
    """The tile's masks of ``selection`` in an array of ``context``'s shape."""
    full = np.zeros(context.shape, dtype=np.uint64)
    full[tile.block] = masks_from_selection(selection, tile.rows, tile.pairs)
    return full


def first_tile_only(*args, **kwargs):
    done = plain(*args, **kwargs)
    lab, _, tile, _, target, context = args[:6]
    state["done"] = done
    true = np.abs(true_pairs(lab, tile, context, done.selection)[0] - target)
    state["kept_true"] = float(np.median(true))
    seen = np.abs(done.residual_s)
    worst = true > np.quantile(true, 0.99)
    print(f"kept, true |error|: 99th percentile {np.quantile(true, 0.99):.3g} S, seen there {np.median(seen[worst]):.3g} S "
          f"(median of the worst 1 %: true {np.median(true[worst]):.3g}); pairs seen above the true 99th percentile "
          f"{int(np.sum(seen > np.quantile(true, 0.99)))}")
    raise Done


refine.measure_tile, refine.refine_tile, program.refine_measured = logged_measure, logged_solve, first_tile_only
options = dict(a.split("=") for a in sys.argv[sys.argv.index("--options") + 1:]) if "--options" in sys.argv else {}
network = load_network(DIGITS_NETWORK)
with demo_lab(str(DEMO_LAB)) as lab:
    model = array_model(calibrate(lab))
    if options.pop("true", None):  # the refinement (only it) handed the true branch values
        true_g = np.asarray(lab.truth.branch_conductance_s())
        ok = model.usable & (true_g > 0)
        told = replace(model, conductance_s=np.where(ok, true_g * np.median((model.conductance_s / true_g)[ok]),
                                                     model.conductance_s))
        program.refine_measured = lambda lab_, model_, *a, **k: first_tile_only(lab_, replace(told, usable=model_.usable), *a, **k)
    try:
        program_plan(lab, make_plan(network, model, options=PlanOptions()), model,
                     options=ProgramOptions(**{k: type(getattr(ProgramOptions(), k))(v) for k, v in options.items()}))
    except Done:
        pass
keys = list(state["rounds"][0])
print("round " + " ".join(f"{k:>14s}" for k in keys))
for i, row in enumerate(state["rounds"]):
    print(f"{i:5d} " + " ".join(f"{row[k]:14.3g}" for k in keys))
print(f"kept: true median |error| {state['kept_true']:.3g} S; {state['done'].rounds} rounds, median |residual| seen {np.median(np.abs(state['done'].residual_s)):.3g} S")
