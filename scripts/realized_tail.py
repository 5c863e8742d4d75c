"""Which pairs make the demo's worst 1 % of realized bits (issue 12): an analysis on the simulator's truth.

Calibrates and programs the demo (pcb, 64x64x8, digits MLP, its five faults) as ``crossbar demo``
does, then, with the simulator's truth (for this analysis only; the controller never reads it),
scores every programmed pair as ``check`` does (``-log2(|realized - target| / max|w|)``) and
tabulates, per layer, how the worst 1 % differs from the rest by each candidate cause:

- a fault on the pair's row or on either of its columns (the lab file's faults), or in the pair;
- the target's place in its pool: ``|target|`` over the pool's dense reach (:func:`choose_scale`);
- the closed branches and the common mode ``G+ + G-`` (true cell conductances);
- the position on the array (row, column: far from the drivers and the sense inputs);
- the refinement's last measured residual (``residual_after_s``) and what that reading missed
  (the truth minus the loop's last measurement);
- the calibration: the stated sigma of the closed branches and their true error.

Then: the tail by ``|target|`` and what a gain per output column (fitted on the truth: an
oracle) accounts for; the refinement's rounds as each pair stood before them and where its move was
predicted to land.

Usage: ``python scripts/realized_tail.py [--save PATH] [--load PATH] [--true-branches]
[--refine-rounds N] [--tail-rounds N [--tail-share PERCENT] [--tail-locality S_PER_S]]
[--plan KEY=VALUE ...]`` (about 35 s CPU):

- ``--load``: tabulate a saved run without the lab;
- ``--true-branches``: the refinement, and only it, is handed the simulator's true branch values at
  the calibration's overall scale, to bound what the calibration's branch errors cost the tail;
- ``--tail-rounds``: after the refinement, N measured rounds more on its worst ``PERCENT`` of pairs
  (by measured residual, default 5) alone, kept by ``refine_measured``'s own end-of-rounds gate,
  with the move penalty ``--tail-locality`` (default the plan's);
- ``--refine-rounds``: the refinement's rounds (``ProgramOptions.refine_rounds``) instead of 4;
- ``--plan``: plan options (``PlanOptions`` fields), last.
"""

import sys
from dataclasses import replace
from itertools import pairwise

import numpy as np

import crossbar_ctl.engine._program as program
import crossbar_ctl.engine._refine as refine
from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import (
    pair_transfer,
    selection_from_masks,
    weight_magnitude,
)
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, load_tile, program_plan
from crossbar_ctl.engine._workflow import array_model


def pairs_of(a):
    """Per-cell values of a tile ``(rows, 2 pairs, ...)`` -> plus and minus ``(rows * pairs, ...)``."""
    return a[:, 0::2].reshape(-1, *a.shape[2:]), a[:, 1::2].reshape(-1, *a.shape[2:])


TRACE = {}  # per tile: the measured refinement's rounds, each pair's error then and its move's prediction
solve = refine.refine_tile


def traced_solve(model, tile, selection, target, cell, outputs, slope, **options):
    chosen, predicted = solve(model, tile, selection, target, cell, outputs, slope, **options)
    key = (tile.layer, tile.input_start, tile.output_start)
    TRACE.setdefault(key, []).append((np.abs(pair_transfer(outputs).ravel() - target), np.abs(predicted - target)))
    return chosen, predicted


def collect(options, told=False, tail_rounds=0, tail_share=5.0):
    refine.refine_tile = traced_solve
    network = load_network(DIGITS_NETWORK)
    columns = {}
    with demo_lab(str(DEMO_LAB)) as lab:
        model = array_model(calibrate(lab))
        true_g = np.asarray(lab.truth.branch_conductance_s())
        ok = model.usable & (true_g > 0)
        scale = np.median(model.conductance_s[ok] / true_g[ok])  # the calibration's overall scale
        if told:  # the refinement (only it) handed the true branch values at the calibration's scale
            plain = program.refine_measured
            known = np.where(ok, scale * true_g, model.conductance_s)
            program.refine_measured = lambda lab_, model_, *args, **kw: plain(
                lab_, replace(model_, conductance_s=known), *args, **kw)
        if tail_rounds:  # after the rounds, rounds more on the worst pairs alone (few neighbours move)
            plain_refine = program.refine_measured

            def refine_tail(lab_, model_, tile, selection, target, context, **kw):
                done = plain_refine(lab_, model_, tile, selection, target, context, **kw)
                error = np.abs(done.residual_s)
                worst = error > np.percentile(error, 100 - tail_share)
                again = plain_refine(lab_, model_, tile, done.selection, target, context,
                                     **{**kw, "rounds": tail_rounds, "pairs": worst,
                                        "locality": option("--tail-locality", kw["locality"])})
                print(f"tail rounds on tile {tile.layer}/{tile.input_start}/{tile.output_start}: {again.pairs_moved}"
                      f" moves; those pairs' median |residual| {np.median(error[worst]):.2e} ->"
                      f" {np.median(np.abs(again.residual_s[worst])):.2e} S")
                return again  # refine_measured's own gate keeps the rounds or not

            program.refine_measured = refine_tail
        rounds = ProgramOptions(refine_rounds=option("--refine-rounds", ProgramOptions().refine_rounds, int))
        plan = program_plan(lab, make_plan(network, model, options=options), model, options=rounds)
        faults = lab.config.sim.faults
        branches = model.geometry[2]
        for k, lp in enumerate(plan.header.layers):
            layer = network.layers[k]
            magnitude = weight_magnitude(layer.matrix, layer.bias) * lp.conductance_per_weight_s
            for t in lp.tiles:
                tile = plan.header.tiles[t].tile
                load_tile(lab, plan.step_masks(tile.step))
                true = np.asarray(lab.truth.transfer_s())[tile.block]
                cell = np.asarray(lab.truth.cell_conductance_s())[tile.block]
                target = plan.tile(t, "target_s").ravel()
                closed = selection_from_masks(plan.tile(t, "masks")[tile.block], branches)
                if model.forced is not None:
                    closed = closed | model.forced[tile.block]
                calib_error = np.sum(closed * (model.conductance_s[tile.block] - scale * true_g[tile.block]), -1)
                miss = np.where(ok, model.conductance_s - scale * true_g, 0.0)[tile.block]
                worst = np.max(np.abs(miss), -1)
                calib_sigma2 = np.sum(closed * model.sigma_s[tile.block] ** 2, -1)
                values, _, usable = model.pool(tile)
                v = np.where(usable, values, 0.0)
                reach = 1.25 * 0.5 * np.sqrt(np.sum(v**2, 1)) - np.abs(0.5 * np.sum(v, 1))
                rows = np.repeat(np.arange(tile.rows) + tile.row_offset, tile.pairs)
                plus_col = np.tile(tile.col_offset + 2 * np.arange(tile.pairs), tile.rows)
                fault_row = np.array([any(f.row == r for f in faults) for r in rows])
                fault_col = np.array([any(f.col in (c, c + 1) for f in faults) for c in plus_col])
                fault_pair = np.array([any(f.row == r and f.col in (c, c + 1) for f in faults)
                                       for r, c in zip(rows, plus_col)])
                plus_u, minus_u = pairs_of(model.usable[tile.block])
                cp, cm = pairs_of(closed)
                gp, gm = pairs_of(cell)
                realized = pair_transfer(true).ravel()
                measured = pair_transfer(plan.tile(t, "measured_s")).ravel()
                data = {
                    "layer": np.full(target.size, k), "tile": np.full(target.size, t),
                    "bits": -np.log2(np.maximum(np.abs(realized - target) / magnitude, 2.0**-52)),
                    "error_lsb": (realized - target) / magnitude, "target_rel": target / magnitude,
                    "reach_rel": np.abs(target) / reach, "closed": cp.sum(1) + cm.sum(1),
                    "common_mode_rel": (gp + gm) / magnitude, "row": rows, "col": plus_col,
                    "fault_row": fault_row, "fault_col": fault_col, "fault_pair": fault_pair,
                    "flagged": (~plus_u).sum(1) + (~minus_u).sum(1),
                    "residual_rel": np.abs(plan.tile(t, "residual_after_s").ravel()) / magnitude,
                    "unseen_rel": np.abs(realized - measured) / magnitude,
                    "calib_sigma_rel": np.sqrt(pairs_of(calib_sigma2)[0] + pairs_of(calib_sigma2)[1]) / magnitude,
                    "calib_error_rel": np.abs(pair_transfer(calib_error).ravel()) / magnitude,
                    "calib_worst_rel": np.maximum(*pairs_of(worst)) / magnitude,
                }
                trace = TRACE.get((tile.layer, tile.input_start, tile.output_start), [])
                for r in range(4):
                    data[f"round{r}_error_rel"] = (trace[r][0] / magnitude if r < len(trace)
                                                   else np.full(target.size, np.nan))
                    data[f"round{r}_move_rel"] = (trace[r][1] / magnitude if r < len(trace)
                                                  else np.full(target.size, np.nan))
                for name, value in data.items():
                    columns.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def tabulate(data):
    for k in np.unique(data["layer"]):
        mine = data["layer"] == k
        bits = data["bits"][mine]
        cut = np.percentile(bits, 1)
        tail = bits <= cut
        print(f"layer {k}: {mine.sum()} pairs, median {np.median(bits):.2f}, p01 {cut:.2f}, tail {tail.sum()} pairs")
        print(f"  {'feature':<18}{'tail median':>12}{'rest median':>12}")
        for name in ("reach_rel", "target_rel", "closed", "common_mode_rel", "row", "col", "flagged",
                     "residual_rel", "unseen_rel", "calib_sigma_rel", "calib_error_rel", "calib_worst_rel"):
            if name not in data:  # a run saved before the feature was
                continue
            value = np.abs(data[name][mine]) if name == "target_rel" else data[name][mine]
            print(f"  {name:<18}{np.median(value[tail]):>12.3g}{np.median(value[~tail]):>12.3g}")
        for name in ("fault_row", "fault_col", "fault_pair"):
            value = data[name][mine]
            print(f"  {name:<18}{value[tail].mean():>12.2f}{value[~tail].mean():>12.2f}  (share)")
        # what the tail missed: the loop's last reading (residual) vs what that reading did not see
        seen = data["residual_rel"][mine][tail] >= data["unseen_rel"][mine][tail]
        print(f"  tail pairs whose measured residual exceeds the error the loop did not see: {seen.mean():.2f}")
        print("  tail pairs per refinement round: error before the round, the best move's predicted error"
              " (medians, LSB of max|w|)")
        for r in range(4):
            error, move = data[f"round{r}_error_rel"][mine], data[f"round{r}_move_rel"][mine]
            print(f"    round {r}: tail {np.nanmedian(error[tail]):.1e} -> {np.nanmedian(move[tail]):.1e},"
                  f" rest {np.nanmedian(error[~tail]):.1e} -> {np.nanmedian(move[~tail]):.1e};"
                  f" tail pairs whose move predicts no gain {np.mean(move[tail] >= error[tail]):.2f}")
        error, target = data["error_lsb"][mine], data["target_rel"][mine]
        edges = np.quantile(np.abs(target), [0, 0.5, 0.75, 0.9, 1])
        for low, high in pairwise(edges):
            inside = (np.abs(target) >= low) & (np.abs(target) <= high)
            print(f"  |target| {low:.2f}-{high:.2f} of max|w|: median {np.median(bits[inside]):.2f}, p01"
                  f" {np.percentile(bits[inside], 1):.2f}, share of the tail {tail[inside].sum() / tail.sum():.2f}")
        rest = error.copy()
        for c in np.unique(data["col"][mine]):  # an output's error along its targets: a gain per column
            on = data["col"][mine] == c
            rest[on] -= np.sum(error[on] * target[on]) / np.sum(target[on] ** 2) * target[on]
        after = -np.log2(np.maximum(np.abs(rest), 2.0**-52))
        print(f"  a gain per output column: {1 - np.mean(rest**2) / np.mean(error**2):.2f} of the error's mean square;"
              f" without it median {np.median(after):.2f}, p01 {np.percentile(after, 1):.2f}")
        order = np.argsort(bits)[: max(int(tail.sum()), 5)]
        print("  worst pairs: bits, row, col, target/max|w|, reach, closed, residual, unseen, calib err"
              " (of max|w|)")
        for i in order:
            row = {name: data[name][mine][i] for name in data}
            print(f"    {row['bits']:6.2f} {row['row']:3d} {row['col']:3d} {row['target_rel']:+.3f}"
                  f" {row['reach_rel']:.2f} {row['closed']:2d} {row['residual_rel']:.1e} {row['unseen_rel']:.1e}"
                  f" {row['calib_error_rel']:.1e}"
                  f" fault r/c/p {int(row['fault_row'])}{int(row['fault_col'])}{int(row['fault_pair'])}")


def option(name, default, kind=float):
    """The value after ``--name`` on the command line, else ``default``."""
    return kind(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


if __name__ == "__main__":
    if "--load" in sys.argv:
        with np.load(option("--load", None, str), allow_pickle=False) as saved:
            data = dict(saved)
    else:
        plan = sys.argv[sys.argv.index("--plan") + 1:] if "--plan" in sys.argv else []
        overrides = dict(item.split("=") for item in plan)
        data = collect(PlanOptions(**{key: float(value) for key, value in overrides.items()}),
                       told="--true-branches" in sys.argv, tail_rounds=option("--tail-rounds", 0, int),
                       tail_share=option("--tail-share", 5.0))
        if "--save" in sys.argv:
            np.savez(option("--save", None, str), **data)
    tabulate(data)
