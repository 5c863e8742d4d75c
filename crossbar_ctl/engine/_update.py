"""Keeping a programmed plan within its budget: recalibrate for it, then rewrite only what is off.

- :func:`recalibrate_plan`: the drift probe (:func:`crossbar_ctl.engine._guard.probe_plan`) finds
  the plan's pairs to rewrite (:func:`choose_pairs`); ``calibration.recalibrate`` re-measures their
  rows first, worst first, then what its sample found moved, within its share of a full
  calibration's readings.
- :func:`update_plan` (``crossbar program --update``): every tile is measured as programmed, the
  way the programming's refinement measures it (:func:`crossbar_ctl.engine._refine.measure_tile`:
  channel offsets removed); per layer only the pairs :func:`choose_pairs` picks against what the
  guard's probe read right after programming (the fewest, worst first, that bring the layer's
  median error and its rms back within ``UPDATE_GOAL_BITS`` of it, and any pair over
  ``PAIR_FACTOR`` times the budget) are re-solved, by the
  programming's own refinement (:func:`crossbar_ctl.engine._refine.refine_measured`) restricted to
  them, on the new record; picked again on the last measurement (a rewrite moves its row-mates).
  Every other cell keeps its switches; when any cell was rewritten, the plan's affine correction
  (:mod:`crossbar_ctl.engine._affine`) is measured again, as programming measured it. A plan's
  residual plan (:mod:`crossbar_ctl.engine._residual`) is programmed again from the new
  measurement, and the correction measured again with it.

The updated plan names the new record; its budget stays the one the plan was first programmed to
(``tile{t}.probe_fresh_s``), so updates cannot loosen it. A plan on several boards takes one lab
and one record per board, in order; each board is probed, recalibrated and rewritten on its own,
each layer's pairs chosen per board (:func:`crossbar_ctl.engine._guard.board_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._cost import (
    board_counters,
    count_since,
    predict_loads,
    schedule_cost,
)
from crossbar_ctl.engine._affine import reads_differences
from crossbar_ctl.engine._guard import (
    DEFAULT_SLACK_BITS,
    HALF_NORMAL_MEDIAN,
    PAIR_FACTOR,
    ProbeErrors,
    board_groups,
    layer_residual_s,
    median_allowance_bits,
    median_scale,
    pooled_noise_var,
    probe_plan,
    programmed_residual_s,
)
from crossbar_ctl.engine._mapping import masks_from_selection, pair_transfer
from crossbar_ctl.engine._plan import ProgramRecord, SwitchPlan, utc_now
from crossbar_ctl.engine._program import (
    ProgramOptions,
    _full_masks,
    _selection,
    in_parallel,
    lab_idn,
    load_tile,
    per_board,
    readout_limits,
)
from crossbar_ctl.engine._residual import program_residual
from crossbar_ctl.engine._refine import (
    DifferenceChannels,
    measure_tile,
    refine_measured,
)
from crossbar_ctl.engine._schedule import step_masks
from crossbar_ctl.engine._solve import array_transfer

if TYPE_CHECKING:
    from calibration import CalibrationRecord, RecalibrationReport, TcrEstimate
    from drivers import Lab

__all__ = ["UPDATE_GOAL_BITS", "UpdateReport", "choose_pairs", "recalibrate_plan", "remeasure_affine", "update_plan"]

UPDATE_GOAL_BITS = 0.1
"""``program --update`` rewrites until each layer's measured median error is within this of the
fresh plan's (as the guard's probe read it right after programming) and its rms within this of
what the programming's refinement left (``residual_after_s``). The issue's recovery target is 0.3
bit of the fresh plan; aimed at 0.2 with the rms against the probe's fresh rms, the update rewrote
fewer pairs but came back 0.45 / 1.03 bit short after 31 d at 1.6e-5 / 1e-4 (16x16x8 pcb, seed 0;
0.19 short / 0.07 over with this rule): a rewritten pair comes back near the refinement's noise
bound, not to its fresh error."""

class UpdateReport(StrictModel):
    """What ``crossbar program --update`` rewrote."""

    pairs: int
    pairs_over_before: int
    """Pairs over the budget as measured before the update."""
    pairs_over_after: int
    pairs_resolved: int
    """Pairs re-solved (over budget in some round)."""
    cells: int
    """Cells of the plan's tiles (what a full program writes)."""
    cells_rewritten: int
    """Cells whose switches changed."""
    rewrites_fraction: float
    """``cells_rewritten / cells``."""
    readings: int
    """Readout vectors the update measured (its affine correction's: the plan's ``affine.readings``)."""
    switch_writes: int
    """Branch switches the update changed, counted from the board's driver (its trials included;
    compare with the plan's ``program.cost.switch_writes``)."""


def _check_lineage(plan: SwitchPlan, records: Sequence[CalibrationRecord]) -> None:
    """Each board's record is the plan's calibration of that board or one recalibrated from it."""
    several = plan.board_count > 1
    for board, record in enumerate(records):
        planned = plan.board_calibration(board).checksum
        mine, parent = record.checksum(), record.header.parent_checksum
        if not planned or planned in (mine, parent):
            continue
        named = f"was recalibrated from {parent}" if parent else f"is {mine}, a full calibration"
        if not several:
            raise EngineError(f"the calibration does not belong to this plan: the plan was made from calibration "
                              f"{planned} but this record {named}; recalibrate from the plan's calibration")
        other = [b for b in range(plan.board_count) if plan.board_calibration(b).checksum in (mine, parent)]
        hint = (f"it is board {other[0]}'s: give one record per board, in the boards' order" if other else
                "recalibrate from the plan's calibration of that board")
        raise EngineError(f"calibration record {board} does not belong to board {board} of this plan: the plan "
                          f"made it from calibration {planned} but this record {named}; {hint}")


def choose_pairs(error_s: np.ndarray, fresh_median_s: float, fresh_rms_s: float, noise_var_s2: float = 0.0, *,
                 goal_bits: float = UPDATE_GOAL_BITS, limit_s: float | np.ndarray = np.inf,
                 fresh_s: np.ndarray | None = None,
                 settled: np.ndarray | None = None, resolution_bits: float = 0.0) -> np.ndarray:
    """The pairs of a layer to rewrite: the fewest, worst first, whose rewriting (each back to the
    fresh plan's error) brings the layer's median error (:func:`median_scale`) and its rms within
    ``goal_bits`` of the fresh plan's, and every pair over ``limit_s``.

    The median comes back once half the pairs are within its goal: those already there and the
    rewritten ones that land there, as often as the fresh pairs did (16x16x8 pcb after 31 d at
    1.6e-5, seeds 0-3: counting every rewritten pair as within left the realized median 0.16-0.43
    bit short of fresh with 41-48 % of the cells rewritten; this count, 0.12-0.28 short on three,
    0.02 over on the fourth, with 56-65 %); worst first is what brings the rms (and the ENOB) back.

    Parameters
    ----------
    error_s : ndarray (pairs,)
        Each pair's measured error now, siemens (absolute).
    fresh_median_s, fresh_rms_s : float
        The layer's median error and rms right after programming, read noise taken out, siemens.
    noise_var_s2 : float
        Read-noise variance in each measured error, S^2.
    goal_bits : float
        Precision the layer may keep lost after the rewrites, bits.
    limit_s : float or ndarray (pairs,)
        A pair over this is rewritten whatever the layer's figures (:func:`pair_limit_s`).
    fresh_s : ndarray, optional
        The layer's pair errors as read right after programming (as ``error_s`` is read): a
        rewritten pair comes back to that error, not below it, so it counts toward the median only
        as often as they were within its goal (default: always).
    settled : ndarray (pairs,) of bool, optional
        Pairs rewritten already: they count as rewritten ones, whatever they read now (the
        refinement kept the selection it read lowest, so its reading of them is low).
    resolution_bits : float
        A group none of whose pairs is settled, none over ``limit_s``, and whose median reads within
        this of the fresh plan's is left as it is: a fresh plan reads so (the medians' own sampling
        error, :func:`crossbar_ctl.engine._guard.median_allowance_bits`); chasing that noise sent
        ``recalibrate`` to a board that had not moved (a two-board 8x8x6 plan, one board a month on
        at 1e-4: 4 of the other's 8 rows re-measured, without this rule or without
        :func:`pair_limit_s`'s own-error rule; with both, none).

    Returns
    -------
    ndarray (pairs,) of bool
    """
    n = error_s.size
    if ((settled is None or not settled.any()) and not np.any(error_s > limit_s)
            and median_scale(error_s, noise_var_s2) <= fresh_median_s * 2.0**resolution_bits):
        return np.zeros(n, bool)
    order = np.argsort(-error_s)
    goal = 2.0**goal_bits
    # the median: a pair reads within the goal below the goal's scale with the read noise put back
    threshold = HALF_NORMAL_MEDIAN * np.sqrt((fresh_median_s * goal / HALF_NORMAL_MEDIAN) ** 2 + noise_var_s2)
    back = 1.0 if fresh_s is None or not fresh_s.size else float(np.mean(np.abs(fresh_s) <= threshold))
    within = np.where(np.zeros(n, bool) if settled is None else settled, back, error_s <= threshold)
    # within the median's goal after the worst k are rewritten: the rest as they read, the k as fresh pairs
    after = within.sum() + np.concatenate([[0.0], np.cumsum(back - within[order])])
    enough = np.nonzero(after >= n / 2)[0]
    for_median = int(enough[0]) if enough.size else n
    # the rms: left[k] is the noise-free square sum of the pairs kept after the worst k rewritten
    squares = error_s[order] ** 2 - noise_var_s2
    left = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])
    mean_square = (left + np.arange(n + 1) * fresh_rms_s**2) / max(n, 1)
    reached = np.nonzero(mean_square <= (fresh_rms_s * goal) ** 2)[0]
    count = max(for_median, int(reached[0]) if reached.size else n)
    picked = np.zeros(n, bool)
    picked[order[:count]] = True
    return picked | (error_s > limit_s)


def pair_limit_s(fresh_s: np.ndarray, budget_rms_s: float, slack_bits: float = DEFAULT_SLACK_BITS) -> np.ndarray:
    """The error past which a pair is rewritten whatever its layer's figures, siemens: ``PAIR_FACTOR``
    times the layer's budget rms (the guard's pair rule), or for a pair programmed worse than that
    (a weight at its pool's edge, a fault), its own fresh error ``fresh_s`` times ``2**slack_bits``:
    rewriting it again would only come back there (a two-board 8x8x6 plan: a pair read 3.9e-6 S
    fresh, 46 times its board's median, and sent ``recalibrate`` to that board when the other moved).

    Parameters
    ----------
    fresh_s : ndarray
        The pairs' errors as read right after programming, siemens.
    budget_rms_s : float
        The layer's budget rms (:class:`crossbar_ctl.engine._guard.LayerProbe`), siemens.
    """
    return np.maximum(PAIR_FACTOR * budget_rms_s, np.abs(fresh_s) * 2.0**slack_bits)


def recalibrate_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan,
                     record: CalibrationRecord | Sequence[CalibrationRecord], *, tcr: TcrEstimate | None = None,
                     slack_bits: float = DEFAULT_SLACK_BITS, max_fraction: float = 0.15, seed: int = 0
                     ) -> tuple[CalibrationRecord | list[CalibrationRecord],
                                RecalibrationReport | list[RecalibrationReport]]:
    """``calibration.recalibrate`` for a plan: the rows of its pairs over budget come first.

    The probe's readings count in the report's ``readings`` (and its fraction): the recalibration
    gets what is left of ``max_fraction``. A plan on several boards is probed on every board (each
    layer's pairs chosen per board, :func:`crossbar_ctl.engine._guard.board_groups`) and each
    board's record recalibrated with the rows of its own pairs and its own share.

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan, in order
    plan : SwitchPlan
    record : calibration.CalibrationRecord, or one per board, in the boards' order

    Returns
    -------
    record, report
        The new record and its :class:`calibration.RecalibrationReport`; lists of them, one per
        board, when ``record`` is a sequence.

    Raises
    ------
    EngineError
        A record not the plan's (nor recalibrated from it) on its board; a TCR estimate for several
        boards.
    CalibrationError
        As ``calibration.recalibrate``.
    """
    from calibration import CalibrationRecord, recalibrate

    labs = per_board(lab, plan.board_count, "labs")
    records = per_board(record, plan.board_count, "calibration records")
    if tcr is not None and len(labs) > 1:
        raise EngineError("a TCR estimate is of one array; recalibrate a plan on several boards without --tcr")
    _check_lineage(plan, records)
    errors: list[ProbeErrors] = []
    # 2 reads a row rank the rows; the probe's readings come out of the recalibration's share (at 4,
    # on 16x16x8 pcb after 31 d at 1e-4: 0.10 of a calibration left, realized 11.31 after the update
    # against 11.84 with 2, fresh 12.34)
    probe = probe_plan(labs, plan, slack_bits=slack_bits, errors=errors, repeats=2)
    tiles = plan.tiles()
    worst: list[dict[int, float]] = [{} for _ in labs]  # per board: row -> its worst pair picked
    for (lp, _, group), layer in zip(board_groups(plan), probe.board_layers or probe.layers):
        cpw = lp.conductance_per_weight_s
        now = [np.abs(errors[0].error_s[t]) for t in group]
        picked = choose_pairs(np.concatenate([e.ravel() for e in now]), layer.programmed_median * cpw,
                              layer.programmed_rms * cpw, errors[0].noise_var(group),
                              limit_s=pair_limit_s(layer_residual_s(plan, group), layer.budget_rms * cpw, slack_bits),
                              fresh_s=layer_residual_s(plan, group), resolution_bits=median_allowance_bits(layer.pairs))
        for t, error, part in zip(group, now, np.split(picked, np.cumsum([e.size for e in now])[:-1])):
            rows, first = worst[tiles[t].board], tiles[t].block[0].start  # the tile's rows on its array
            part = part.reshape(error.shape)
            for row in np.nonzero(part.any(axis=1))[0]:
                rows[first + int(row)] = max(rows.get(first + int(row), 0.0), float(error[row][part[row]].max()))
    news, reports = [], []
    for board, (board_lab, parent) in enumerate(zip(labs, records)):
        probed = errors[0].board_readings[board]
        share = max_fraction - probed / max(parent.header.readings, 1)  # the probe's readings count too
        if share <= 0:
            raise EngineError(f"the plan's probe alone takes {probed} readings, more than max_fraction = "
                              f"{max_fraction:g} of the calibration's {parent.header.readings}; raise --max-fraction")
        rows = sorted(worst[board], key=lambda r: -worst[board][r])
        new, report = recalibrate(board_lab, parent, rows=rows, tcr=tcr, max_fraction=share,
                                  sample_fraction=min(0.03, share), seed=seed)
        readings = report.readings + probed
        news.append(CalibrationRecord(new.header.model_copy(update={"readings": new.header.readings + probed}),
                                      new.arrays))
        reports.append(report.model_copy(update={"readings": readings,
                                                 "readings_fraction": readings / max(report.parent_readings, 1)}))
    return (news, reports) if isinstance(record, (list, tuple)) else (news[0], reports[0])


def update_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan, record: CalibrationRecord | Sequence[CalibrationRecord],
                *, tcr: TcrEstimate | None = None, slack_bits: float = DEFAULT_SLACK_BITS,
                goal_bits: float = UPDATE_GOAL_BITS, options: ProgramOptions | None = None, passes: int = 2,
                affine_vectors: int | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[SwitchPlan, UpdateReport]:
    """Re-solve and rewrite only the pairs of a programmed plan that are over its error budget.

    Every tile is measured as programmed, as the programming's refinement measures it (unit
    vectors less the all-zero reading, :func:`crossbar_ctl.engine._refine.measure_tile`); per layer
    :func:`choose_pairs` picks the pairs to rewrite from those errors, and the programming's own
    refinement (:func:`crossbar_ctl.engine._refine.refine_measured`, its rounds and reads) re-solves
    only them until each is within its measurement noise, keeping each rewritten row only where the
    row (the rewritten pairs and their row-mates) measures better, in every round and at the end. A
    rewrite moves the pairs sharing its row's driver, so the pairs are picked again on the last
    measurement, for ``passes`` passes. A plan on several boards is measured and
    rewritten on each board with its own record, the boards in parallel, and each layer's pairs are
    picked per board (:func:`crossbar_ctl.engine._guard.board_groups`), as the guard holds them.

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan, in order
    plan : SwitchPlan
        A programmed plan of this lab.
    record : calibration.CalibrationRecord, or one per board, in the boards' order
        The plan's calibration (of that board) or one recalibrated from it (``header.parent_checksum``).
    tcr : calibration.TcrEstimate, optional
        Re-solve with the conductances predicted at the lab's measured temperature (one board).
    slack_bits : float
        The plan's budget: precision it may lose since programming (the guard's).
    goal_bits : float
        Precision (median error and rms) the update may leave lost against the fresh plan's.
    options : ProgramOptions, optional
        ``max_iterations + refine_rounds`` measured rounds per pass at ``refine_repeats`` reads per
        row (the programming's verify and refinement rounds together).
    passes : int
        Choose-and-refine passes (>= 1).
    affine_vectors : int, optional
        Reference vectors per tile for measuring the plan's affine correction again after the
        rewrites (:func:`remeasure_affine`); default the plan's own count, 0: keep the correction
        measured at programming.
    progress : callable, optional
        Called with 1 per tile.

    Returns
    -------
    plan : SwitchPlan
        The updated plan (new masks where rewritten, the new records' references, a new
        :class:`ProgramRecord` whose ``cost`` counts the update's switch writes).
    report : UpdateReport

    Raises
    ------
    EngineError
        A plan never programmed; a record that is not the plan's nor recalibrated from it (on its
        board); another array; a TCR estimate for several boards.
    """
    from crossbar_ctl.engine._workflow import array_model, check_fingerprint, check_lab

    if plan.header.program is None:
        raise EngineError("the plan was never programmed: program it with crossbar program")
    labs = per_board(lab, plan.board_count, "labs")
    records = per_board(record, plan.board_count, "calibration records")
    if tcr is not None and len(labs) > 1:
        raise EngineError("a TCR estimate is of one array; update a plan on several boards without --tcr")
    _check_lineage(plan, records)
    if tcr is not None:
        from calibration import record_at_temperature

        records = [record_at_temperature(records[0], tcr, labs[0].temperature_c())]
    models = [array_model(board_record) for board_record in records]
    for board_lab, model in zip(labs, models):
        check_lab(model.reference, board_lab)
        check_fingerprint(model.reference, board_lab)
    options = options or ProgramOptions()
    tiles = plan.tiles()
    mine = [[t for t, tile in enumerate(tiles) if tile.board == b] for b in range(len(labs))]
    geometry = models[0].geometry
    arrays = dict(plan.arrays)
    counters = [board_counters(board_lab) for board_lab in labs]
    predicted_loads = [predict_loads((plan.step_masks(tiles[t].step) for t in mine[b]), labs[b].board.known_masks(),
                                     settle_s=labs[b].board.settle_s) for b in range(len(labs))]
    settings = [{"twin": model.twin, "limits": readout_limits(board_lab), "repeats": options.refine_repeats}
                for board_lab, model in zip(labs, models)]

    def context(t: int) -> np.ndarray:  # the other tiles of its step, as they are now
        return step_masks((arrays[f"tile{u}.masks"] for u, other in enumerate(tiles)
                           if other.step == tiles[t].step and u != t), geometry[:2])

    # every tile measured as programmed (selection, cell, measured, pair error, noise), on its board
    state: dict[int, tuple] = {}
    readings = [0] * len(labs)

    def measure_board(b: int) -> None:
        for t in mine[b]:
            tile = tiles[t]
            selection = _selection(arrays[f"tile{t}.masks"][tile.block], tile, geometry[2])
            # through the difference channels too, as the refinement reads (and read the residual it left)
            diff = reads_differences(labs[b], tile, options.refine_differential)
            cell, measured, noise, count = measure_tile(labs[b], models[b], tile, selection, context(t),
                                                        channels=DifferenceChannels(tile.pairs) if diff else None,
                                                        **settings[b])
            state[t] = (selection, cell, measured,
                        pair_transfer(measured).ravel() - plan.tile(t, "target_s").ravel(), noise)
            readings[b] += count

    in_parallel(measure_board, len(labs))
    # per layer (on several boards: its tiles on each board, as the guard holds them) the median held
    # to the guard's reading right after programming, of the same kind as measure_tile's (its
    # repeats, the difference channels), read noise taken out; the rms to what the refinement left
    # (what a rewritten pair comes back to)
    groups = [group for _, _, group in board_groups(plan)]
    group_of = {t: g for g, group in enumerate(groups) for t in group}
    noise_var = [pooled_noise_var([2 * state[t][4] ** 2 for t in group], [state[t][3].size for t in group])
                 for group in groups]
    fresh_pairs = [layer_residual_s(plan, group) for group in groups]
    fresh = [(median_scale(pairs, noise), _rms(np.concatenate([plan.tile(t, "residual_after_s").ravel()
                                                                for t in group])))
             for group, pairs, noise in zip(groups, fresh_pairs, noise_var)]

    def limit(t: int) -> np.ndarray:  # each pair's of tile t
        return pair_limit_s(programmed_residual_s(plan, t).ravel(), fresh[group_of[t]][1] * 2.0**slack_bits, slack_bits)

    over_before = sum(int(np.sum(np.abs(state[t][3]) > limit(t))) for t in state)
    before_rms = [_rms(state[t][3]) for t in range(len(tiles))]
    resolved = {t: np.zeros(state[t][3].size, bool) for t in state}
    rounds_run = dict.fromkeys(range(len(tiles)), 0)
    chosen: dict[int, np.ndarray] = {}

    def refine_board(b: int) -> None:
        for t in mine[b]:
            if not chosen[t].any():
                continue
            refined = refine_measured(labs[b], models[b], tiles[t], state[t][0], plan.tile(t, "target_s").ravel(),
                                      context(t), rounds=options.max_iterations + options.refine_rounds,
                                      locality=plan.header.options.locality,
                                      max_closed=plan.header.options.max_closed, pairs=chosen[t],
                                      max_repeats=options.refine_max_repeats,
                                      differential=options.refine_differential, **settings[b])
            readings[b] += refined.readings
            rounds_run[t] += refined.rounds
            resolved[t] |= chosen[t]
            state[t] = (refined.selection, refined.cell_s, refined.measured_s, refined.residual_s, refined.noise_s)
            arrays[f"tile{t}.masks"] = _full_masks(models[b], tiles[t], refined.selection)

    for _ in range(max(passes, 1)):
        for g, group in enumerate(groups):
            errors = np.concatenate([np.abs(state[t][3]) for t in group])
            picked = choose_pairs(errors, *fresh[g], noise_var[g], goal_bits=goal_bits,
                                  limit_s=np.concatenate([limit(t) for t in group]),
                                  fresh_s=fresh_pairs[g], settled=np.concatenate([resolved[t] for t in group]),
                                  resolution_bits=median_allowance_bits(errors.size))
            chosen.update(zip(group, np.split(picked, np.cumsum([state[t][3].size for t in group])[:-1])))
        if not any(part.any() for part in chosen.values()):
            break
        in_parallel(refine_board, len(labs))
    pairs = cells = rewritten = 0
    for t, tile in enumerate(tiles):
        selection, cell, measured, residual, _ = state[t]
        final = masks_from_selection(selection, tile.rows, tile.pairs)
        pairs += residual.size
        cells += 2 * residual.size
        rewritten += int(np.sum(final != plan.tile(t, "masks")[tile.block]))
        arrays[f"tile{t}.probe_fresh_s"] = programmed_residual_s(plan, t)
        arrays[f"tile{t}.cell_s"] = cell
        arrays[f"tile{t}.predicted_s"] = array_transfer(models[tile.board], plan.board_twin(tile.board), cell, tile)
        arrays[f"tile{t}.measured_s"] = measured
        arrays[f"tile{t}.residual_after_s"] = residual.reshape(tile.rows, tile.pairs)
        if progress:
            progress(1)
    over_after = sum(int(np.sum(np.abs(state[t][3]) > limit(t))) for t in state)
    for b, board_lab in enumerate(labs):  # each lab is left with its last step programmed, as program_plan leaves it
        if mine[b]:
            last = tiles[mine[b][-1]].step
            load_tile(board_lab, step_masks((arrays[f"tile{u}.masks"] for u, tile in enumerate(tiles)
                                             if tile.step == last), geometry[:2]))
    cost = schedule_cost([count_since(board_lab, c) for board_lab, c in zip(labs, counters)], predicted_loads,
                         steps=len({tile.step for tile in tiles}), tiles=len(tiles))
    old = plan.header.program
    rounds = tuple(rounds_run.values())
    program = ProgramRecord(
        programmed_utc=utc_now(), lab_idn=lab_idn(labs[0]), iterations=rounds,
        cells_resolved=tuple(int(r.sum()) for r in resolved.values()), residual_rms_before_s=tuple(before_rms),
        residual_rms_after_s=tuple(_rms(state[t][3]) for t in range(len(tiles))),
        max_residual_sigma_after=tuple(float(np.max(np.abs(state[t][3])) / max(np.sqrt(2.0) * state[t][4], 1e-300))
                                       for t in range(len(tiles))),
        cells_remeasured=old.cells_remeasured, branches_found_open=old.branches_found_open,
        refine_rounds=rounds, refine_readings=sum(readings), cost=cost)
    boards = tuple(ref.model_copy(update={"calibration": model.reference or ref.calibration})
                   for ref, model in zip(plan.header.boards, models[1:]))
    header = plan.header.model_copy(update={"calibration": models[0].reference or plan.header.calibration,
                                            "boards": boards, "program": program})
    updated = SwitchPlan(header, arrays)
    if plan.residual is not None:  # programmed again from what the tiles measure now (its writes: its own record)
        updated = updated.with_residual(program_residual(labs, updated, models, options))
    if (rewritten or plan.residual is not None) and affine_vectors != 0:
        updated = remeasure_affine(labs, updated, vectors=affine_vectors)
    report = UpdateReport(pairs=pairs, pairs_over_before=over_before, pairs_over_after=over_after,
                          pairs_resolved=sum(int(r.sum()) for r in resolved.values()), cells=cells,
                          cells_rewritten=rewritten, rewrites_fraction=rewritten / max(cells, 1),
                          readings=sum(readings), switch_writes=cost.switch_writes)
    return updated, report


def remeasure_affine(lab: Lab | Sequence[Lab], plan: SwitchPlan, *, vectors: int | None = None) -> SwitchPlan:
    """The plan with its affine correction measured again, as it was first measured (difference
    channels, ranges, seed), ``vectors`` reference vectors per tile (default: as many as then).

    The correction fits each output's gain and offset, which absorb the common mode and the pairs'
    own errors of the tiles as they were programmed; rewritten pairs change both (demo, 64x64x8 pcb,
    31 days at 1e-4 with 63 % of the cells rewritten: enob 8.10 / 8.35 with the old correction, 8.86
    / 9.37 measured again, fresh 9.02 / 9.90). On the seed-0 16x16x8 board of ``bench drift`` the
    new fit checks up to 0.4 bit worse than that board's old one (``enob_after_kept_affine``; held-out
    reference vectors read it better); over seeds 0-3 the two were level. A plan without one is
    returned as it is.
    """
    from crossbar_ctl.engine._affine import measure_affine

    affine = plan.header.affine
    if affine is None:
        return plan
    return measure_affine(lab, plan, vectors=vectors or affine.vectors, seed=affine.seed,
                          differential=affine.differential, ranged=affine.ranged)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0
