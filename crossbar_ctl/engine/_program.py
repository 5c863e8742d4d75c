"""Programming a plan with the hardware in the loop.

For each tile: write the masks to the board and read them back; measure the tile's transfer
matrix through the readout with one unit vector per row (column-parallel reads, repeated to
estimate the read noise); compare every pair with what the model predicted. Pairs off by more
than ``tolerance_sigma`` times their predicted uncertainty are re-solved on the measured response
(linearised with the twin's slopes, which absorbs drift and IR drop); a pair off by more than a
fraction of a branch has a model no gain explains (a resistor opened since calibration, say), so
its cells' branches are measured again one at a time first. The loop is bounded by
``max_iterations`` and keeps the best measured configuration. The plan comes back with the final
masks, the measured transfers and the residuals before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from crossbar_ctl.engine._mapping import (
    ArrayModel,
    Tile,
    masks_from_selection,
    pair_transfer,
    row_voltages,
    selection_from_masks,
)
from crossbar_ctl.engine._cost import board_counters, count_since, predict_loads, schedule_cost
from crossbar_ctl.engine._plan import ProgramRecord, SwitchPlan, utc_now
from crossbar_ctl.engine._schedule import step_masks
from crossbar_ctl.engine._solve import (
    Solver,
    array_response,
    array_transfer,
    default_solver,
    gains,
    refine_tile,
    solve_pools,
)
from crossbar_ctl.engine._refine import refine_measured
from crossbar_ctl.engine._affine import measure_affine
from crossbar_ctl.engine._twin import sensed_a
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CrossbarError, EngineError

if TYPE_CHECKING:
    from calibration import TwinParameters
    from drivers import Lab

__all__ = [
    "ProgramOptions", "dac_step_v", "in_parallel", "lab_idn", "load_tile", "measure_transfer", "per_board", "program_plan",
    "readout_limits",
    "remeasure_cells", "row_bound",
]


class ProgramOptions(StrictModel):
    """How the closed loop verifies and corrects a programmed plan."""

    max_iterations: int = Field(3, ge=0, le=20)
    """Re-solve rounds per tile after the first measurement."""
    tolerance_sigma: float = Field(4.0, gt=0)
    """A cell is off when |measured - predicted| exceeds this many predicted standard deviations."""
    verify_repeats: int = Field(2, ge=1, le=100)
    """Unit-vector reads per row (two or more estimate the read noise)."""
    remeasure_fraction: float = Field(0.25, gt=0)
    """A pair off by more than this fraction of a typical branch conductance has a wrong model
    (a fault or jump since calibration): its cells' branches are measured again, one at a time."""
    affine_vectors: int = Field(64, ge=0, le=100_000)
    """Reference vectors per tile for the affine correction measured after programming
    (:mod:`crossbar_ctl.engine._affine`; 0: none)."""
    differential: bool = True
    """Measure the affine correction, and so run ``check``, on the board's difference channels
    when it has them (``CAP?`` lists ``DIFF``)."""
    refine_rounds: int = Field(4, ge=0, le=50)
    """Closed-loop refinement after the verify loop (:mod:`crossbar_ctl.engine._refine`): measured
    re-solve rounds per tile down to the measurement noise (0: off)."""
    refine_repeats: int = Field(4, ge=2, le=1000)
    """Unit-vector reads per row in each refinement round."""
    refine_tail_rounds: int = Field(6, ge=0, le=50)
    """Refinement rounds after ``refine_rounds`` that move only the tile's worst 2 % of pairs and read
    only their rows (:func:`crossbar_ctl.engine._refine.refine_measured`). On the demo they lift the
    1st percentile of realized bits by about 0.3-0.4 bit per layer for 1.1 k more readout vectors."""
    refine_max_repeats: int = Field(4, ge=2, le=10_000)
    """Once the pairs are within the refinement's noise bound, the rows with an ambiguous pair are
    read again with four times the readings, up to this many (``refine_repeats``, the default:
    never). With the difference channels 16 gained nothing measurable on the bench's 16x16x8 pcb
    layer (4 seeds: 12.22 against 12.31 bits median) and cost the demo's programming 1.3x its CPU;
    single-ended it gains 0.4 bit there."""
    refine_differential: bool = True
    """Refine on the board's difference channels too, when it has them (``CAP?`` lists ``DIFF``):
    their noise is relative to the pair's difference, not to its two column currents."""
    residual: bool = False
    """Program the plan's measured residual on the same cells at its own scale, which ``check``
    adds (:mod:`crossbar_ctl.engine._residual`): on the demo 1.6 / 1.3 bits more realized median
    and 1.3 / 1.0 more enob per layer, for a second load and reading of every tile in each
    inference."""


def remeasure_cells(lab: Lab, model: ArrayModel, cells: np.ndarray, *, repeats: int,
                    limits: dict[str, float], tile: Tile | None = None) -> tuple[ArrayModel, int]:
    """Measure the branches of some cells again, one branch at a time, and update the model.

    Every listed cell closes branch ``k`` alone (everything else open) for ``k = 0 .. n-1``; the
    unit-vector reads, divided by what the twin predicts for the calibrated conductance, scale
    each branch's conductance. A branch that no longer conducts, or conducts five times more, is
    marked unusable.

    Parameters
    ----------
    cells : ndarray (rows, cols) of bool
        The cells to measure: a tile's block (at its placement; ``tile=None``: the top-left).

    Returns
    -------
    model : ArrayModel
        A copy with new conductances (and usable flags) for those cells.
    found : int
        Branches newly found open or shorted.
    """
    block = tile.block if tile is not None else (slice(0, cells.shape[0]), slice(0, cells.shape[1]))
    g = model.conductance_s.copy()
    usable = model.usable.copy()
    found = 0
    for k in range(model.geometry[2]):
        probe = np.where(cells & usable[block + (k,)], np.uint64(1 << k), np.uint64(0))
        if not probe.any():
            continue
        full = np.zeros(model.geometry[:2], dtype=np.uint64)
        full[block] = probe
        load_tile(lab, full)
        cell_s = model.cell_conductance_s(probe, tile)
        measured, _ = measure_transfer(lab, cell_s, repeats=repeats, limits=limits, block=block,
                                       twin=model.twin)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(probe > 0, measured / array_transfer(model, model.twin, cell_s, tile), 1.0)
        broken = (probe > 0) & ((ratio < 0.2) | (ratio > 5.0))  # opened, or shorted
        found += int(broken.sum())
        g[block + (k,)] *= np.maximum(ratio, 0.0)
        usable[block + (k,)] &= ~broken
    return replace(model, conductance_s=g, usable=usable), found


def readout_limits(lab: Lab) -> dict[str, float]:
    """Voltage and current bounds for row voltages: the lab limits, the DACs and the ADC range."""
    limits = lab.limits
    voltage, current = limits.max_voltage_v, limits.max_current_a
    board = lab.board
    if "MVM" in board.capabilities():
        voltage = min(voltage, float(board.dac_max_v()))
        current = min(current, float(board.adc_range_a()))
    return {"max_voltage_v": voltage, "max_current_a": current,
            "max_total_current_a": limits.max_total_current_a}


def dac_step_v(lab: Lab) -> float | None:
    """The row DACs' step (``DACBITS?``), V; None: a board without readout or one that does not
    quantize (``check`` then scales inputs freely)."""
    board = lab.board
    if "MVM" not in board.capabilities() or not hasattr(board, "dac_lsb_v"):
        return None
    return board.dac_lsb_v()


def row_bound(lab: Lab, rows: int | slice) -> np.ndarray | None:
    """The drivers' bound on each row's conductance for the masks now loaded (total-current check),
    of the first ``rows`` rows or of a slice of them (a tile's)."""
    bound = getattr(lab.board, "conductance_bound_s", None)
    return None if bound is None else np.asarray(bound())[rows if isinstance(rows, slice) else slice(0, rows)]


def load_tile(lab: Lab, masks: np.ndarray) -> None:
    """Write masks ``uint64 (rows, cols)`` to the board and check what it reports as set."""
    lab.board.load_masks(masks)
    back = np.asarray(lab.board.read_masks(), dtype=np.uint64)
    if back.shape != masks.shape or np.any(back != masks):
        bad = np.argwhere(back != masks) if back.shape == masks.shape else [("shape", back.shape)]
        raise EngineError(f"the board read back other masks than were written (first at {tuple(bad[0])}); "
                          "check the board link and rerun")


def measure_transfer(lab: Lab, cell_s: np.ndarray, *, repeats: int, limits: dict[str, float],
                     block: tuple[slice, slice] | None = None,
                     twin: TwinParameters | None = None) -> tuple[np.ndarray, float]:
    """Measure a tile's transfer matrix with one unit vector per row.

    Parameters
    ----------
    cell_s : ndarray (rows, cols_used)
        Predicted cell conductances (set the probe voltage of each row).
    block : (slice, slice), optional
        The tile's rows and columns on the array (``Tile.block``); default the top-left.
    twin : TwinParameters, optional
        The calibration's twin: its column gains divide the readings (``_twin.sensed_a``).

    Returns
    -------
    transfer_s : ndarray (rows, cols_used)
        Mean column current per volt.
    noise_s : float
        Standard uncertainty of one element of ``transfer_s`` (pooled over repeats; 0 with one).
    """
    rows, used = cell_s.shape
    row_block, col_block = block or (slice(0, rows), slice(0, used))
    probe, volts = row_voltages(np.eye(rows), cell_s, row_bound_s=row_bound(lab, row_block), **limits)
    probe[volts == 0] = 0.0
    array_rows = lab.readout.rows
    voltage = np.zeros((repeats * rows, array_rows))
    voltage[:, row_block] = np.tile(probe, (repeats, 1))
    current = sensed_a(twin, lab.readout.mvm(voltage))[:, col_block].reshape(repeats, rows, used)
    with np.errstate(divide="ignore", invalid="ignore"):
        transfer = np.where(volts[None, :, None] > 0, current / volts[None, :, None], 0.0)
    noise = float(np.sqrt(np.mean(np.var(transfer, axis=0, ddof=1)) / repeats)) if repeats > 1 else 0.0
    return transfer.mean(axis=0), noise


def _pair_sigma(model: ArrayModel, tile: Tile, selection: np.ndarray, gain: np.ndarray, noise_s: float) -> np.ndarray:
    _, sigma, _ = model.pool(tile, gain)
    calibration = np.sum(np.where(selection, sigma, 0.0) ** 2, axis=1)
    return np.sqrt(calibration + 2 * noise_s**2)


def in_parallel(run: Callable[[int], Any], boards: int) -> list:
    """``[run(b) for b in range(boards)]``, one thread per board when there are several."""
    if boards == 1:
        return [run(0)]
    with ThreadPoolExecutor(max_workers=boards) as pool:
        return list(pool.map(run, range(boards)))


def per_board(item, count: int, what: str) -> list:
    """One item per board: a single one for one board, else a sequence of ``count``."""
    items = list(item) if isinstance(item, (list, tuple)) else [item]
    if len(items) != count:
        raise EngineError(f"the plan is on {count} board(s) but {len(items)} {what} were given")
    return items


def program_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan, model: ArrayModel | Sequence[ArrayModel], *,
                 options: ProgramOptions | None = None, solver: Solver | None = None,
                 progress: Callable[[int], None] | None = None, guard_budget: bool = True) -> SwitchPlan:
    """Program every tile of a plan, verify it by measurement and correct it.

    Each board programs its tiles in plan order, the boards in parallel (one thread each). A tile
    is loaded with the other tiles of its program step (those done as programmed, the others as
    planned), so it is measured in the configuration ``check`` loads. Each lab is left with its
    last step loaded.

    Parameters
    ----------
    lab, model : Lab and ArrayModel, or one of each per board of the plan
    guard_budget : bool
        Measure the drift guard's budget (a residual plan is guarded through its main plan's).

    Returns
    -------
    SwitchPlan
        The plan with final masks, measured transfers, residuals and a :class:`ProgramRecord`
        (its ``cost``: switch writes counted from the drivers beside the model's prediction for
        one pass without corrections, and the settling time).
    """
    options = options or ProgramOptions()
    solver = solver or default_solver(plan.header.options.common_mode_weight)
    plan = plan.with_residual(None)  # a residual measured against other masks does not carry over
    labs = per_board(lab, plan.board_count, "labs")
    models = per_board(model, plan.board_count, "calibrations")
    tiles = plan.tiles()
    arrays = dict(plan.arrays)
    mine = [[t for t, tile in enumerate(tiles) if tile.board == b] for b in range(len(labs))]
    before = [board_counters(board_lab) for board_lab in labs]
    predicted = [predict_loads((plan.step_masks(tiles[t].step) for t in mine[b]), labs[b].board.known_masks(),
                               settle_s=labs[b].board.settle_s) for b in range(len(labs))]

    def run_board(board: int) -> dict[int, dict]:
        board_lab, board_model = labs[board], models[board]
        limits = readout_limits(board_lab)
        done = {}
        for t in mine[board]:
            board_model, done[t] = _program_tile(board_lab, board_model, plan, t, arrays, options, limits,
                                                 solver=solver, twin=plan.board_twin(board))
            if progress:
                progress(1)
        return done

    results = {t: r for done in in_parallel(run_board, len(labs)) for t, r in done.items()}
    cost = schedule_cost([count_since(board_lab, b) for board_lab, b in zip(labs, before)], predicted,
                         steps=len({tile.step for tile in tiles}), tiles=len(tiles))
    # the drift guard's budget: what its own probe reads right now, so that a later probe is held
    # to a reading of the same kind (the closed loop's best-of-several residual reads lower); one
    # pass: the guard sweeps of scripts/guard_probe_passes.py kept every verdict, estimate within
    # 0.45 bit of the truth (0.72 at 2 passes), for two thirds of the probes' readings
    from crossbar_ctl.engine._guard import fresh_arrays, measure_plan  # they import this module
    from crossbar_ctl.engine._residual import program_residual

    if guard_budget:
        arrays.update(fresh_arrays(measure_plan(labs, SwitchPlan(plan.header, arrays), passes=1)))
    column = lambda key: tuple(results[t][key] for t in range(len(tiles)))  # noqa: E731
    record = ProgramRecord(
        programmed_utc=utc_now(), lab_idn=lab_idn(labs[0]), iterations=column("iterations"),
        cells_resolved=column("resolved"), residual_rms_before_s=column("before"),
        residual_rms_after_s=column("after"), max_residual_sigma_after=column("worst"),
        cells_remeasured=sum(column("remeasured")), branches_found_open=sum(column("opened")), cost=cost,
        refine_rounds=column("refine_rounds"), refine_readings=sum(column("refine_readings")),
    )
    programmed = SwitchPlan(plan.header.model_copy(update={"program": record}), arrays)
    if options.residual:
        programmed = programmed.with_residual(program_residual(labs, programmed, models, options, solver))
    if not options.affine_vectors:
        return programmed
    return measure_affine(labs, programmed, vectors=options.affine_vectors, differential=options.differential)


def _program_tile(lab: Lab, model: ArrayModel, plan: SwitchPlan, t: int, arrays: dict[str, np.ndarray],
                  options: ProgramOptions, limits: dict[str, float], *, solver: Solver,
                  twin: TwinParameters | None) -> tuple[ArrayModel, dict]:
    """Program, verify and correct tile ``t``; its final arrays go into ``arrays``.

    Returns the model (branches measured again update it) and the tile's figures.
    """
    tile = plan.header.tiles[t].tile
    tiles = plan.tiles()
    context = step_masks((arrays[f"tile{u}.masks"] for u, other in enumerate(tiles) if other.step == tile.step
                          and u != t), model.geometry[:2])
    branches = model.geometry[2]
    target = plan.tile(t, "target_s").ravel()
    selection = _selection(plan.tile(t, "masks")[tile.block], tile, branches)
    predicted = pair_transfer(plan.tile(t, "predicted_s")).ravel()
    typical_branch_s = options.remeasure_fraction * float(np.median(model.conductance_s[model.usable]))
    best = None
    count = remeasured = opened = 0
    for iteration in range(options.max_iterations + 1):
        cell, measured, residual, noise = _measure(lab, model, tile, selection, target, options, limits, context)
        if iteration == 0:
            residual_before = residual
        gain = gains(measured, cell)
        sigma = _pair_sigma(model, tile, selection, gain, noise)
        miss = np.abs(pair_transfer(measured).ravel() - predicted)
        # a pair with no uncertainty (nothing closed, unprobed rows) deviates by nothing: no re-solve moves it
        deviation = np.divide(miss, sigma, out=np.zeros_like(miss), where=(miss > 0) & (sigma > 0))
        if best is None or _rms(residual) < _rms(best["residual"]):
            best = {"selection": selection, "cell": cell, "measured": measured, "residual": residual,
                    "worst": float(np.max(deviation))}
        off = deviation > options.tolerance_sigma
        if iteration == options.max_iterations or not np.any(off):
            break
        count += int(off.sum())
        gross = off & (np.abs(pair_transfer(measured).ravel() - predicted) > typical_branch_s)
        if gross.any():  # a model error no gain explains: measure those cells' branches again
            pairs = gross.reshape(tile.rows, tile.pairs)
            model, found = remeasure_cells(lab, model, np.repeat(pairs, 2, axis=1),
                                           repeats=options.verify_repeats, limits=limits, tile=tile)
            remeasured += int(pairs.sum())
            opened += found
            cell = model.cell_conductance_s(masks_from_selection(selection, tile.rows, tile.pairs), tile)
        # the cells that are off get a model that matches the measurement (drift, IR drop, a
        # late fault) and are re-solved under it
        selection, predicted = _correct(model, plan, tile, target, selection, cell, measured, gain, off,
                                        solver=solver, max_closed=plan.header.options.max_closed,
                                        round_=iteration, twin=twin)
    assert best is not None
    if best["selection"] is not selection:
        load_tile(lab, context | _full_masks(model, tile, best["selection"]))
    refined = None
    if options.refine_rounds:
        refined = refine_measured(lab, model, tile, best["selection"], target, context, twin=model.twin,
                                  limits=limits, rounds=options.refine_rounds, repeats=options.refine_repeats,
                                  locality=plan.header.options.locality, max_closed=plan.header.options.max_closed,
                                  max_repeats=options.refine_max_repeats, differential=options.refine_differential,
                                  tail_rounds=options.refine_tail_rounds)
        miss = np.abs(pair_transfer(refined.measured_s - array_transfer(model, twin, refined.cell_s, tile)).ravel())
        sigma = _pair_sigma(model, tile, refined.selection, gains(refined.measured_s, refined.cell_s), refined.noise_s)
        best = {"selection": refined.selection, "cell": refined.cell_s, "measured": refined.measured_s,
                "residual": refined.residual_s,
                "worst": float(np.max(np.divide(miss, sigma, out=np.zeros_like(miss), where=miss > 0)))}
    arrays[f"tile{t}.residual_before_s"] = residual_before.reshape(tile.rows, tile.pairs)
    arrays[f"tile{t}.masks"] = _full_masks(model, tile, best["selection"])
    arrays[f"tile{t}.cell_s"] = best["cell"]
    # the twin's transfer of the masks kept (check's error budget compares against it)
    arrays[f"tile{t}.predicted_s"] = array_transfer(model, twin, best["cell"], tile)
    arrays[f"tile{t}.measured_s"] = best["measured"]
    arrays[f"tile{t}.residual_after_s"] = best["residual"].reshape(tile.rows, tile.pairs)
    return model, {"iterations": iteration, "resolved": count, "before": _rms(residual_before),
                   "refine_rounds": refined.rounds if refined else 0,
                   "refine_readings": refined.readings if refined else 0,
                   "after": _rms(best["residual"]), "worst": best["worst"], "remeasured": remeasured,
                   "opened": opened}


def _full_masks(model: ArrayModel, tile: Tile, selection: np.ndarray) -> np.ndarray:
    rows, cols, _ = model.geometry
    full = np.zeros((rows, cols), dtype=np.uint64)
    full[tile.block] = masks_from_selection(selection, tile.rows, tile.pairs)
    return full


def _correct(model: ArrayModel, plan: SwitchPlan, tile: Tile, target: np.ndarray, selection: np.ndarray,
             cell: np.ndarray, measured: np.ndarray, gain: np.ndarray, off: np.ndarray, *,
             solver: Solver, max_closed: int | None, round_: int = 0,
             twin: TwinParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Re-solve the cells that are off; returns the new selection and its predicted pair outputs.

    With the plan's twin the pairs are refined on the measured outputs linearised with the twin's
    slopes (round ``round_`` of :func:`crossbar_ctl.engine._solve.refine_tile`, any branch count,
    under ``max_closed``); otherwise they are re-solved with their measured gains. ``twin``: the
    tile's board's twin (the plan's, :meth:`SwitchPlan.board_twin`).
    """
    measured_pair = pair_transfer(measured).ravel()
    if twin is not None:
        _, slope = array_response(model, twin, cell, tile)
        chosen, predicted = refine_tile(model, tile, selection, target, cell, measured, slope,
                                        locality=plan.header.options.locality, max_closed=max_closed,
                                        round_=round_)
        move = off & (np.abs(predicted - target) < np.abs(measured_pair - target))
        return np.where(move[:, None], chosen, selection), np.where(move, predicted, measured_pair)
    new = solve_pools(model, tile, target.reshape(tile.rows, tile.pairs), gain=gain, solver=solver,
                     max_closed=max_closed, cells=off, previous=selection)
    cell_new = model.cell_conductance_s(masks_from_selection(new, tile.rows, tile.pairs), tile)
    return new, pair_transfer(cell_new * gain).ravel()


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)))


def _measure(lab: Lab, model: ArrayModel, tile: Tile, selection: np.ndarray, target: np.ndarray,
             options: ProgramOptions, limits: dict[str, float], context: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Load a tile's selection (beside ``context``, the other tiles of its step) and measure it:
    cell conductances, transfer, pair residual, noise."""
    masks = masks_from_selection(selection, tile.rows, tile.pairs)
    load_tile(lab, context | _full_masks(model, tile, selection))
    cell = model.cell_conductance_s(masks, tile)
    measured, noise = measure_transfer(lab, cell, repeats=options.verify_repeats, limits=limits, block=tile.block,
                                       twin=model.twin)
    return cell, measured, pair_transfer(measured).ravel() - target, noise


def _selection(masks: np.ndarray, tile: Tile, branches: int) -> np.ndarray:
    closed = selection_from_masks(masks, branches)  # (rows, 2P, n)
    plus, minus = closed[:, 0::2], closed[:, 1::2]
    return np.concatenate([plus, minus], axis=-1).reshape(tile.rows * tile.pairs, 2 * branches)


def lab_idn(lab: Lab) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in lab.idn().items()}
    except CrossbarError:
        return {}
