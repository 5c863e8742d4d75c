"""Does a tail pair's step miss carry over to its next tail move? (issue 12, the secant idea)

Programs the demo as ``crossbar demo`` does (pcb, 64x64x8, digits MLP) and records, without changing
the refinement, every move of its tail rounds (``round_ >= refine_rounds`` in
:func:`crossbar_ctl.engine._refine.refine_measured`): the belief before (the pair transfer the solver
linearised at), the solver's prediction, the measured pair transfer after, and the conductance moved
on each side (the model's cells). The simulator's truth is read after each tail reading, for the
analysis only, to say how much of a miss is the reading's.

A secant (Broyden-like) correction pays only if what a move missed by predicts what the same pair's
next move misses by. Printed per tile: the moves, how many repeat a move from the same selection
that was read and not kept, and, over consecutive moves of one pair (repeats left out), the
correlation of the observed / predicted ratio, of the miss, and of the miss per siemens of common
mode moved; then the next move's miss rms as it is, with the last ratio applied (clipped 0.5-2),
with the last miss added, and with half of it added.

Usage: ``python scripts/tail_secant.py`` (about 40 s).
"""

import collections

import numpy as np

import crossbar_ctl.engine._refine as refine
from calibration import calibrate
from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK, demo_lab
from crossbar_ctl.engine._mapping import masks_from_selection, pair_transfer
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.engine._workflow import array_model

OPTIONS = ProgramOptions()
solves: dict = {}
moves: dict = collections.defaultdict(list)  # tile -> [(round, pair, expected, step, dG+, dG-, kept?, reading error)]


def recording_refine_tile(model, tile, selection, target_s, cell_s, transfer_s, slope, **kwargs):
    chosen, predicted = _refine_tile(model, tile, selection, target_s, cell_s, transfer_s, slope, **kwargs)
    solves[str(tile.block)] = (kwargs.get("round_", 0), selection.copy(), transfer_s.copy(), cell_s, predicted,
                               target_s)
    return chosen, predicted


def recording_measure_tile(lab, model, tile, selection, context, **kwargs):
    out = _measure_tile(lab, model, tile, selection, context, **kwargs)
    if kwargs.get("rows") is None or str(tile.block) not in solves:
        return out
    round_, before_sel, before_out, cell, predicted, target = solves.pop(str(tile.block))
    if round_ < OPTIONS.refine_rounds:
        return out
    before = pair_transfer(before_out).ravel()
    after = pair_transfer(out[1]).ravel()
    true = pair_transfer(np.asarray(lab.truth.transfer_s())[tile.block]).ravel()
    moved = np.flatnonzero(np.any(selection != before_sel, axis=1))
    dg = (model.cell_conductance_s(masks_from_selection(selection, tile.rows, tile.pairs), tile) - cell).reshape(-1, 2)
    for p in moved:
        kept = abs(after[p] - target[p]) < abs(before[p] - target[p])
        moves[(tile.rows, tile.pairs)].append((round_, int(p), predicted[p] - before[p], after[p] - before[p],
                                               dg[p, 0], dg[p, 1], kept, true[p] - after[p],
                                               before_sel[p].tobytes() + selection[p].tobytes()))
    return out


_refine_tile, _measure_tile = refine.refine_tile, refine.measure_tile
refine.refine_tile, refine.measure_tile = recording_refine_tile, recording_measure_tile


def report(name, rows):
    by_pair = collections.defaultdict(list)
    for row in rows:
        by_pair[row[1]].append(row)
    expected, step = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    cm = np.array([(r[4] + r[5]) / 2 for r in rows])
    reading = np.sqrt(np.mean([r[7] ** 2 for r in rows]))
    print(f"tile {name}: {len(rows)} tail moves of {len(by_pair)} pairs, {np.mean([r[6] for r in rows]):.2f}"
          " read better;"
          f" |predicted step| median {np.median(np.abs(expected)):.2e} S,"
          f" |miss| median {np.median(np.abs(step - expected)):.2e}, common-mode dG median {np.median(np.abs(cm)):.2e};"
          f" after reading vs truth rms {reading:.1e}")
    pairs, repeats = [], 0
    for seq in by_pair.values():
        for a, b in zip(seq, seq[1:]):
            if a[8] == b[8] and not a[6]:
                repeats += 1
            else:
                pairs.append((a, b))
    print(f"  consecutive moves of one pair: {len(pairs) + repeats}, of them {repeats} repeat a move read and not kept")
    if len(pairs) < 3:
        return
    miss = np.array([(a[3] - a[2], b[3] - b[2]) for a, b in pairs])
    ratio = np.array([(a[3] / a[2], b[3] / b[2]) for a, b in pairs])
    ok = np.all(np.abs(ratio) < 10, axis=1)
    per_cm = np.array([((a[3] - a[2]) / ((a[4] + a[5]) / 2), (b[3] - b[2]) / ((b[4] + b[5]) / 2)) for a, b in pairs
                       if min(abs(a[4] + a[5]), abs(b[4] + b[5])) > 2e-6])
    print(f"  correlation, next move against last: ratio {np.corrcoef(ratio[ok].T)[0, 1]:.2f} (n {ok.sum()}),"
          f" miss {np.corrcoef(miss.T)[0, 1]:.2f} (n {len(miss)}),"
          f" miss per common-mode dG {np.corrcoef(per_cm.T)[0, 1] if len(per_cm) > 2 else np.nan:.2f}"
          f" (n {len(per_cm)})")
    nxt_exp, nxt_step = np.array([b[2] for _, b in pairs]), np.array([b[3] for _, b in pairs])
    scaled = np.clip(ratio[:, 0], 0.5, 2.0) * nxt_exp
    rms = {"as is": nxt_step - nxt_exp, "last ratio": nxt_step - scaled, "last miss": nxt_step - nxt_exp - miss[:, 0],
           "half the last miss": nxt_step - nxt_exp - miss[:, 0] / 2}
    print("  next move's miss rms: " + ", ".join(f"{k} {np.sqrt(np.mean(v**2)):.2e}" for k, v in rms.items()))


def main():
    with demo_lab(str(DEMO_LAB)) as lab:
        model = array_model(calibrate(lab))
        program_plan(lab, make_plan(load_network(DIGITS_NETWORK), model, options=PlanOptions()), model, options=OPTIONS)
    for name, rows in moves.items():
        report(f"{name[0]}x{name[1]}", rows)


if __name__ == "__main__":
    main()
