"""Keeping a programmed plan within its budget: recalibrate for it, then rewrite only what is off.

- :func:`recalibrate_plan`: the drift probe (:func:`crossbar_ctl.engine._guard.probe_plan`) finds
  the plan's pairs to rewrite (:func:`choose_pairs`); ``calibration.recalibrate`` re-measures their
  rows first, worst first, then what its sample found moved, within its share of a full
  calibration's readings.
- :func:`update_plan` (``crossbar program --update``): every tile is measured as programmed; per
  layer only the pairs :func:`choose_pairs` picks (the fewest, worst first, that bring the layer's
  rms back within half the budget's slack, and any pair over ``PAIR_FACTOR`` times the budget) are
  re-solved on the new record, on their measured outputs linearised with the twin's slopes (the
  closed loop's own correction, :func:`crossbar_ctl.engine._program._correct`), rewritten and
  measured again until they are within their measurement noise, for a bounded number of rounds;
  the best measured tile is kept. Every other cell keeps its switches, and the plan its affine
  correction (:mod:`crossbar_ctl.engine._affine`) as measured when it was programmed.

The updated plan names the new record; its budget stays the one the plan was first programmed to
(``tile{t}.residual_programmed_s``), so updates cannot loosen it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._guard import (
    DEFAULT_SLACK_BITS,
    PAIR_FACTOR,
    ProbeErrors,
    probe_plan,
    programmed_residual_s,
)
from crossbar_ctl.engine._mapping import masks_from_selection
from crossbar_ctl.engine._plan import ProgramRecord, SwitchPlan, utc_now
from crossbar_ctl.engine._program import (
    ProgramOptions,
    _correct,
    _full_masks,
    _measure,
    _selection,
    lab_idn,
    load_tile,
    readout_limits,
)
from crossbar_ctl.engine._solve import Solver, array_transfer, default_solver, gains

if TYPE_CHECKING:
    from calibration import CalibrationRecord, RecalibrationReport, TcrEstimate
    from drivers import Lab

__all__ = ["UpdateReport", "choose_pairs", "recalibrate_plan", "update_plan"]

_TOLERANCE_SIGMA = 2.0
"""A rewritten pair is done when its measured error is within this many times its noise."""


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
    """Readout vectors the update measured."""


def _check_lineage(plan: SwitchPlan, record: CalibrationRecord) -> None:
    planned = plan.header.calibration.checksum
    mine, parent = record.checksum(), record.header.parent_checksum
    if planned and planned not in (mine, parent):
        named = f"was recalibrated from {parent}" if parent else f"is {mine}, a full calibration"
        raise EngineError(f"the calibration does not belong to this plan: the plan was made from calibration "
                          f"{planned} but this record {named}; recalibrate from the plan's calibration")


def choose_pairs(error_s: np.ndarray, programmed_s: float, slack_bits: float, noise_var_s2: float = 0.0
                 ) -> np.ndarray:
    """The pairs of a layer to rewrite: the fewest, worst first, whose rewriting (each back to the
    programmed precision) brings the layer's rms error within half its slack of where it was
    programmed, and every pair over ``PAIR_FACTOR`` times the budget.

    Parameters
    ----------
    error_s : ndarray (pairs,)
        Each pair's measured error now, siemens (absolute).
    programmed_s : float
        The layer's rms error when programmed, siemens.
    slack_bits : float
        The budget's slack (the goal is ``programmed_s * 2**(slack_bits / 2)``).
    noise_var_s2 : float
        Read-noise variance in each measured error, taken out of the rms.

    Returns
    -------
    ndarray (pairs,) of bool
    """
    n = error_s.size
    order = np.argsort(-error_s)
    squares = error_s[order] ** 2 - noise_var_s2
    left = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])  # left[k]: the pairs kept after k rewritten
    k = np.arange(n + 1)
    mean_square = (left + k * programmed_s**2) / max(n, 1)
    reached = np.nonzero(mean_square <= (programmed_s * 2.0 ** (slack_bits / 2)) ** 2)[0]
    count = int(reached[0]) if reached.size else n
    picked = np.zeros(n, bool)
    picked[order[:count]] = True
    return picked | (error_s > PAIR_FACTOR * programmed_s * 2.0**slack_bits)


def recalibrate_plan(lab: Lab, plan: SwitchPlan, record: CalibrationRecord, *, tcr: TcrEstimate | None = None,
                     slack_bits: float = DEFAULT_SLACK_BITS, max_fraction: float = 0.15,
                     seed: int = 0) -> tuple[CalibrationRecord, RecalibrationReport]:
    """``calibration.recalibrate`` for a plan: the rows of its pairs over budget come first.

    The probe's readings count in the report's ``readings`` (and its fraction): the recalibration
    gets what is left of ``max_fraction``.

    Raises
    ------
    EngineError
        The plan was not made from ``record`` (nor from its parent).
    CalibrationError
        As ``calibration.recalibrate``.
    """
    from calibration import CalibrationRecord, recalibrate

    _check_lineage(plan, record)
    errors: list[ProbeErrors] = []
    probe = probe_plan(lab, plan, slack_bits=slack_bits, errors=errors)
    worst: dict[int, float] = {}
    for lp, layer in zip(plan.header.layers, probe.layers):
        cpw = lp.conductance_per_weight_s
        now = [np.abs(errors[0].error_s[t]) for t in lp.tiles]
        picked = choose_pairs(np.concatenate([e.ravel() for e in now]), layer.programmed_rms * cpw, slack_bits)
        for t, error, part in zip(lp.tiles, now, np.split(picked, np.cumsum([e.size for e in now])[:-1])):
            first = plan.header.tiles[t].tile.block[0].start  # the tile's rows on the array
            part = part.reshape(error.shape)
            for row in np.nonzero(part.any(axis=1))[0]:
                worst[first + int(row)] = max(worst.get(first + int(row), 0.0), float(error[row][part[row]].max()))
    rows = sorted(worst, key=lambda r: -worst[r])
    share = max_fraction - probe.readings / max(record.header.readings, 1)  # the probe's readings count too
    if share <= 0:
        raise EngineError(f"the plan's probe alone takes {probe.readings} readings, more than max_fraction = "
                          f"{max_fraction:g} of the calibration's {record.header.readings}; raise --max-fraction")
    new, report = recalibrate(lab, record, rows=rows, tcr=tcr, max_fraction=share,
                              sample_fraction=min(0.03, share), seed=seed)
    readings = report.readings + probe.readings
    new = CalibrationRecord(new.header.model_copy(update={"readings": new.header.readings + probe.readings}),
                            new.arrays)
    return new, report.model_copy(update={"readings": readings,
                                          "readings_fraction": readings / max(report.parent_readings, 1)})


def update_plan(lab: Lab, plan: SwitchPlan, record: CalibrationRecord, *, tcr: TcrEstimate | None = None,
                slack_bits: float = DEFAULT_SLACK_BITS, options: ProgramOptions | None = None,
                refine_rounds: int = 5, repeats: int = 8, solver: Solver | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[SwitchPlan, UpdateReport]:
    """Re-solve and rewrite only the pairs of a programmed plan that are over its error budget.

    Parameters
    ----------
    lab : drivers.Lab
    plan : SwitchPlan
        A programmed plan of this lab.
    record : calibration.CalibrationRecord
        The plan's calibration or one recalibrated from it (``header.parent_checksum``).
    tcr : calibration.TcrEstimate, optional
        Re-solve with the conductances predicted at the lab's measured temperature.
    slack_bits : float
        The plan's budget: precision it may lose since programming (the guard's).
    options : ProgramOptions, optional
        ``max_iterations`` rounds and ``verify_repeats`` reads per row.
    refine_rounds : int
        Further rounds for the pairs chosen, until each is within ``_TOLERANCE_SIGMA`` times its
        measurement noise.
    repeats : int
        Unit-vector reads per row in every round (the programming's refinement reads as many: a
        rewritten pair is measured as precisely as it was programmed).
    progress : callable, optional
        Called with 1 per tile.

    Returns
    -------
    plan : SwitchPlan
        The updated plan (new masks where rewritten, the new record's reference, a new
        :class:`ProgramRecord`).
    report : UpdateReport

    Raises
    ------
    EngineError
        A plan never programmed; a record that is not the plan's nor recalibrated from it; another
        array.
    """
    from crossbar_ctl.engine._workflow import array_model, check_fingerprint, check_lab

    if plan.header.program is None:
        raise EngineError("the plan was never programmed: program it with crossbar program")
    tiles = plan.tiles()
    if any(tile.board for tile in tiles):
        raise EngineError("program --update rewrites plans on one board; this plan spans several: "
                          "program it again with crossbar program")
    _check_lineage(plan, record)
    if tcr is not None:
        from calibration import record_at_temperature

        record = record_at_temperature(record, tcr, lab.temperature_c())
    model = array_model(record)
    check_lab(model.reference, lab)
    check_fingerprint(model.reference, lab)
    options = (options or ProgramOptions()).model_copy(update={"verify_repeats": repeats})
    solver = solver or default_solver()
    limits = readout_limits(lab)
    branches = model.geometry[2]
    arrays = dict(plan.arrays)
    iterations, resolved_per_tile, before_rms, after_rms, worst = [], [], [], [], []
    pairs = over_before = over_after = resolved_total = cells = rewritten = readings = 0
    # every tile measured as programmed, then per layer the pairs to rewrite
    first: dict[int, tuple] = {}
    for t, tile in enumerate(tiles):
        context = np.zeros(model.geometry[:2], dtype=np.uint64)  # the other tiles of its step
        for u, other in enumerate(tiles):
            if other.step == tile.step and u != t:
                context |= arrays[f"tile{u}.masks"]
        selection = _selection(plan.tile(t, "masks")[tile.block], tile, branches)
        first[t] = (selection, context, *_measure(lab, model, tile, selection, plan.tile(t, "target_s").ravel(),
                                                  options, limits, context))
        readings += options.verify_repeats * tile.rows
    chosen: dict[int, np.ndarray] = {}
    layer_rms: dict[int, float] = {}
    for lp in plan.header.layers:
        programmed = float(np.sqrt(np.mean(np.concatenate([programmed_residual_s(plan, t).ravel()
                                                           for t in lp.tiles]) ** 2)))
        errors = np.concatenate([np.abs(first[t][4]) for t in lp.tiles])
        noise_var = float(np.mean([2 * first[t][5] ** 2 for t in lp.tiles]))
        picked = choose_pairs(errors, programmed, slack_bits, noise_var)
        for t, part in zip(lp.tiles, np.split(picked, np.cumsum([first[t][4].size for t in lp.tiles])[:-1])):
            chosen[t], layer_rms[t] = part, programmed
    for t, tile in enumerate(tiles):
        selection, context, cell, measured, residual, noise = first[t]
        target = plan.tile(t, "target_s").ravel()
        original = plan.tile(t, "masks")[tile.block]
        twin = plan.board_twin(tile.board)
        limit = PAIR_FACTOR * layer_rms[t] * 2.0**slack_bits
        over_before += int(np.sum(np.abs(residual) > limit))
        before_rms.append(float(np.sqrt(np.mean(residual**2))))
        best = (float(np.mean(residual**2)), selection, cell, measured, residual, noise)
        ever = np.zeros(len(target), bool)
        rounds = 0
        max_rounds = options.max_iterations + refine_rounds
        for rounds in range(max_rounds + 1):
            if rounds:
                cell, measured, residual, noise = _measure(lab, model, tile, selection, target, options, limits,
                                                           context)
                readings += options.verify_repeats * tile.rows
                if np.mean(residual**2) < best[0]:  # the whole tile as measured: rewrites move their neighbours
                    best = (float(np.mean(residual**2)), selection, cell, measured, residual, noise)
                # a rewrite moves the pairs that share its row's driver and wires: pick again on what is measured
                chosen[t] |= choose_pairs(np.abs(residual), layer_rms[t], slack_bits, 2 * noise**2)
            # a chosen pair is refined until it is within its measurement noise, as programming left it
            off = chosen[t] & (np.abs(residual) > _TOLERANCE_SIGMA * np.sqrt(2.0) * noise)
            if rounds == max_rounds or not off.any():
                break
            ever |= off
            selection, _ = _correct(model, plan, tile, target, selection, cell, measured, gains(measured, cell),
                                    off, solver=solver, max_closed=plan.header.options.max_closed,
                                    round_=rounds, twin=twin)
        _, best_sel, cell, measured, residual, noise = best  # never worse than the plan as it was
        if best_sel is not selection:
            load_tile(lab, context | _full_masks(model, tile, best_sel))
        final = masks_from_selection(best_sel, tile.rows, tile.pairs)
        over_after += int(np.sum(np.abs(residual) > limit))
        pairs += len(target)
        cells += 2 * len(target)
        rewritten += int(np.sum(final != original))
        resolved_total += int(ever.sum())
        iterations.append(rounds)
        resolved_per_tile.append(int(ever.sum()))
        after_rms.append(float(np.sqrt(np.mean(residual**2))))
        sigma = max(noise, 1e-300)
        worst.append(float(np.max(np.abs(residual)) / sigma))
        arrays[f"tile{t}.residual_programmed_s"] = programmed_residual_s(plan, t)
        arrays[f"tile{t}.masks"] = _full_masks(model, tile, best_sel)
        arrays[f"tile{t}.cell_s"] = cell
        arrays[f"tile{t}.predicted_s"] = array_transfer(model, twin, cell, tile)
        arrays[f"tile{t}.measured_s"] = measured
        arrays[f"tile{t}.residual_after_s"] = residual.reshape(tile.rows, tile.pairs)
        if progress:
            progress(1)
    last = tiles[-1].step  # the lab is left with the last step programmed, as program_plan leaves it
    load_tile(lab, np.bitwise_or.reduce([arrays[f"tile{u}.masks"] for u, tile in enumerate(tiles)
                                         if tile.step == last]))
    old = plan.header.program
    program = ProgramRecord(
        programmed_utc=utc_now(), lab_idn=lab_idn(lab), iterations=tuple(iterations),
        cells_resolved=tuple(resolved_per_tile), residual_rms_before_s=tuple(before_rms),
        residual_rms_after_s=tuple(after_rms), max_residual_sigma_after=tuple(worst),
        cells_remeasured=old.cells_remeasured, branches_found_open=old.branches_found_open)
    header = plan.header.model_copy(update={"calibration": model.reference or plan.header.calibration,
                                            "program": program})
    # the affine correction measured at programming is kept: measured again after an update it fitted
    # the rewrites' residual errors into the outputs' gains (16x16x8 pcb, 31 days: enob 8.87 against
    # 9.26 kept, the fresh plan's 9.26)
    updated = SwitchPlan(header, arrays)
    report = UpdateReport(pairs=pairs, pairs_over_before=over_before, pairs_over_after=over_after,
                          pairs_resolved=resolved_total, cells=cells, cells_rewritten=rewritten,
                          rewrites_fraction=rewritten / max(cells, 1), readings=readings)
    return updated, report
