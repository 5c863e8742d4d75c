"""Closed-loop tile refinement: measure what a programmed tile does, re-solve what is off, again.

The verify loop of :mod:`crossbar_ctl.engine._program` stops once every pair is within its
predicted uncertainty, which is mostly the calibration's. The measured transfer itself is known
better than that after a few readings, so the pairs can go on: each round measures the tile's
transfer (unit vectors, ``repeats`` each, minus the all-zero vector's reading: the channels'
offsets), keeps for every pair the selection with the smallest measured error so far, and re-solves
the pairs still off by more than ``tolerance_sigma`` times their measurement noise on the measured
outputs, linearised with the twin's slopes (:func:`crossbar_ctl.engine._solve.refine_tile`: any
branch count, a rotating window above ``WINDOW_BRANCHES``, ``max_closed`` kept). A move only has to
be right to the uncertainty of the few branches it toggles, and the next round measures what it did:
later branches cancel the errors of earlier ones (multi-device compensation, Song et al., Science
383:903, 2024). The floor is the measurement's noise and the subset sums' spacing near the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.engine._mapping import (
    ArrayModel,
    Tile,
    masks_from_selection,
    pair_transfer,
    row_voltages,
)
from crossbar_ctl.engine._solve import array_response, refine_tile
from crossbar_ctl.engine._twin import sensed_a

if TYPE_CHECKING:
    from calibration import TwinParameters
    from drivers import Lab

__all__ = ["Refined", "measure_tile", "refine_measured"]


@dataclass(frozen=True)
class Refined:
    """A tile after closed-loop refinement.

    Attributes
    ----------
    selection : ndarray (cells, 2 n) of bool
    cell_s, measured_s : ndarray (tile.rows, 2 tile.pairs)
        Predicted cell conductances and the measured transfer of the selection kept.
    residual_s : ndarray (cells,)
        Measured pair transfer minus target, siemens.
    rounds : int
        Measure / re-solve rounds run.
    noise_s : float
        Standard uncertainty of one element of ``measured_s``.
    readings : int
        Readout vectors read.
    pairs_moved : int
        Pair re-solves tried, over all rounds.
    """

    selection: np.ndarray
    cell_s: np.ndarray
    measured_s: np.ndarray
    residual_s: np.ndarray
    noise_s: float
    rounds: int
    readings: int
    pairs_moved: int


def measure_tile(lab: Lab, model: ArrayModel, tile: Tile, selection: np.ndarray, context: np.ndarray, *,
                 repeats: int, limits: dict[str, float], twin: TwinParameters | None,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Load a tile's selection beside ``context`` and measure its transfer, offsets removed.

    ``repeats`` unit vectors per row, less the mean of ``repeats`` all-zero vectors (the channels'
    offsets, and the DACs' output at code 0 on the rows not driven).

    Parameters
    ----------
    rows : ndarray of int, optional
        Only these rows of the tile (default all); the others come back as 0.

    Returns
    -------
    cell_s, transfer_s : ndarray (tile.rows, 2 tile.pairs)
    noise_s : float
        Standard uncertainty of one element of ``transfer_s``.
    readings : int
        Readout vectors read.
    """
    from crossbar_ctl.engine._program import load_tile, row_bound

    masks = masks_from_selection(selection, tile.rows, tile.pairs)
    full = np.zeros(model.geometry[:2], dtype=np.uint64)
    full[tile.block] = masks
    load_tile(lab, context | full)
    cell = model.cell_conductance_s(masks, tile)
    bound = row_bound(lab, tile.block[0].stop)  # the rows up to the tile's last
    bound = None if bound is None else bound[tile.block[0]]
    probe, volts = row_voltages(np.eye(tile.rows), cell, row_bound_s=bound, **limits)
    probe[volts == 0] = 0.0
    rows = np.arange(tile.rows) if rows is None else np.asarray(rows)
    voltage = np.zeros(((rows.size + 1) * repeats, lab.readout.rows))
    voltage[repeats:, tile.block[0]] = np.tile(probe[rows], (repeats, 1))  # first: all zero
    current = sensed_a(twin, lab.readout.mvm(voltage))[:, tile.block[1]]
    offset = current[:repeats].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        each = np.where(volts[None, rows, None] > 0, (current[repeats:].reshape(repeats, rows.size, -1) - offset)
                        / volts[None, rows, None], 0.0)
    noise = float(np.sqrt(np.mean(np.var(each, axis=0, ddof=1)) / repeats)) if repeats > 1 else 0.0
    transfer = np.zeros_like(cell)
    transfer[rows] = each.mean(axis=0)
    return cell, transfer, noise, len(voltage)


def refine_measured(lab: Lab, model: ArrayModel, tile: Tile, selection: np.ndarray, target_s: np.ndarray,
                    context: np.ndarray, *, twin: TwinParameters | None, limits: dict[str, float],
                    rounds: int, repeats: int, tolerance_sigma: float = 2.0, locality: float = 0.001,
                    max_closed: int | None = None, pairs: np.ndarray | None = None) -> Refined:
    """Refine a programmed tile on its measured transfer until its pairs are within the noise.

    Parameters
    ----------
    selection : ndarray (cells, 2 n) of bool
        The tile's programmed selection.
    target_s : ndarray (cells,)
        Target pair transfers, siemens.
    context : ndarray uint64 (rows, cols)
        The other tiles' masks loaded beside it.
    twin : TwinParameters or None
        Slopes for the linearisation (``None``: each cell's output moves with its conductance) and
        the column gains of the readings.
    rounds : int
        Most re-solve rounds; each is measured.
    repeats : int
        Unit-vector readings per row per round.
    tolerance_sigma : float
        A pair is off when its measured error exceeds this many times its measurement noise.
    pairs : ndarray (cells,) of bool, optional
        Only these pairs may be re-solved (``crossbar program --update``: those over budget);
        default every pair.
    """
    measure = {"repeats": repeats, "limits": limits, "twin": twin}
    cell, measured, noise, readings = measure_tile(lab, model, tile, selection, context, **measure)
    error = pair_transfer(measured).ravel() - target_s
    kept = (_rms(error), selection, cell, measured, error, noise)
    best = {"selection": selection.copy(), "error": np.abs(error), "outputs": measured.copy()}
    moved = done = 0
    for round_ in range(rounds):
        off = best["error"] > tolerance_sigma * np.sqrt(2.0) * noise
        if pairs is not None:
            off &= pairs
        if not off.any():
            break
        cell = model.cell_conductance_s(masks_from_selection(best["selection"], tile.rows, tile.pairs), tile)
        slope = np.ones_like(cell) if twin is None else array_response(model, twin, cell, tile)[1]
        chosen, predicted = refine_tile(model, tile, best["selection"], target_s, cell, best["outputs"], slope,
                                        locality=locality, max_closed=max_closed, round_=round_)
        move = off & (np.abs(predicted - target_s) < best["error"])
        if not move.any():
            break
        moved += int(move.sum())
        # only the rows that moved are read again (the others' cells are as they were measured)
        rows = np.flatnonzero(move.reshape(tile.rows, tile.pairs).any(axis=1))
        trial = np.where(move[:, None], chosen, best["selection"])
        _, measured, noise, count = measure_tile(lab, model, tile, trial, context, rows=rows, **measure)
        readings += count
        done = round_ + 1
        error = np.abs(pair_transfer(measured).ravel() - target_s)
        read = np.zeros(tile.rows, dtype=bool)
        read[rows] = True
        better = np.repeat(read, tile.pairs) & (error < best["error"])
        cells = np.repeat(better.reshape(tile.rows, tile.pairs), 2, axis=1)  # plus and minus columns
        best["outputs"] = np.where(cells, measured, best["outputs"])
        best["selection"] = np.where(better[:, None], trial, best["selection"])
        best["error"] = np.where(better, error, best["error"])
    if done:  # every pair's best, measured together; kept only if the whole tile is better
        cell, measured, noise, count = measure_tile(lab, model, tile, best["selection"], context, **measure)
        readings += count
        error = pair_transfer(measured).ravel() - target_s
        if _rms(error) < kept[0]:
            kept = (_rms(error), best["selection"], cell, measured, error, noise)
    _, selection, cell, measured, error, noise = kept
    rows, cols, _ = model.geometry
    from crossbar_ctl.engine._program import load_tile

    full = np.zeros((rows, cols), dtype=np.uint64)
    full[tile.block] = masks_from_selection(selection, tile.rows, tile.pairs)
    load_tile(lab, context | full)
    return Refined(selection, cell, measured, error, noise, done, readings, moved)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))
