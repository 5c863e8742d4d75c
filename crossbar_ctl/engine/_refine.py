"""Closed-loop tile refinement: measure what a programmed tile does, re-solve what is off, again.

The verify loop of :mod:`crossbar_ctl.engine._program` stops once every pair is within its
predicted uncertainty, which is mostly the calibration's. The measured transfer itself is known
better than that after a few readings, so the pairs can go on: each round measures the tile's
transfer (unit vectors, ``repeats`` each, minus the all-zero vector's reading: the channels'
offsets), keeps for every pair the selection with the smallest measured error so far, and re-solves
the pairs still off by more than ``tolerance_sigma`` times their measurement noise on the measured
outputs, linearised with the twin's slopes (:func:`crossbar_ctl.engine._solve.refine_tile`: any
branch count: every branch where the tile's subset tables fit ``WINDOW_SUMS``, else a rotating
window of at least ``WINDOW_BRANCHES``; ``max_closed`` kept). A move only has to
be right to the uncertainty of the few branches it toggles, and the next round measures what it did:
later branches cancel the errors of earlier ones (multi-device compensation, Song et al., Science
383:903, 2024).

Three things keep the rounds honest on a board the twin does not describe: a move's slope is the
twin's times each cell's measured over predicted transfer (the calibration's error common to a cell's
branches divides out); every pair's recorded output is of the configuration kept (read afresh where
its own cells are as read, moved by the twin's difference for what its neighbours kept or put back:
they share a row driver and wires), never a stale best-of-several; and the readings grow four-fold,
up to ``max_repeats``, once the pairs are within the noise bound (no chosen pair off, or the bound
above half the median error), on the rows where a pair is ambiguous. After the rounds, tail rounds
move only the tile's worst pairs (above ``TAIL_QUANTILE``) and read only their rows.

On the demo the floor is the rounds themselves (README "Realized weight precision";
``scripts/landing_split.py``): the best move within the locality penalty is 1.2e-8 S median from
its target, and moves land 7.6-9.9e-8 S rms off their prediction. Of that, the same round's
neighbours' moves are 6-9e-8 (the twin predicts them to 1e-8, so they cost tries, not knowledge),
the move's own step 3-4e-8 (the toggled branches' values 2.7e-8, the slope 2e-8), and each reading
1.5e-8 (5e-9 of it noise). Solving the moves against each other, refining rows in turn, moving fewer
pairs, or knowing the branch values exactly each buys 0.2 bit or less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.engine._affine import reads_differences
from crossbar_ctl.engine._mapping import (
    ArrayModel,
    Tile,
    masks_from_selection,
    pair_transfer,
    row_voltages,
)
from crossbar_ctl.engine._solve import array_response, array_transfer, gains, refine_tile
from crossbar_ctl.engine._twin import sensed_a

if TYPE_CHECKING:
    from calibration import TwinParameters
    from drivers import Lab

TAIL_QUANTILE = 0.98
"""The tail rounds move the pairs whose measured error is above this quantile of the tile's."""

__all__ = ["DifferenceChannels", "Refined", "measure_tile", "measured_slope", "refine_measured"]


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
                 rows: np.ndarray | None = None, channels: DifferenceChannels | None = None
                 ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Load a tile's selection beside ``context`` and measure its transfer, offsets removed.

    ``repeats`` unit vectors per row, less the mean of ``repeats`` all-zero vectors (the channels'
    offsets, and the DACs' output at code 0 on the rows not driven).

    Parameters
    ----------
    rows : ndarray of int, optional
        Only these rows of the tile (default all); the others come back as 0.
    channels : DifferenceChannels, optional
        Read the same vectors through the board's difference channels too, and set each pair's
        difference to what they read (:class:`DifferenceChannels`); ``noise_s`` is then theirs.

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
    if channels is None:
        return cell, transfer, noise, len(voltage)
    pair = lab.readout.mvm_pairs(voltage)[:, tile.block[1].start // 2:tile.block[1].stop // 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where(volts[None, rows, None] > 0, (pair[repeats:].reshape(repeats, rows.size, -1)
                                                      - pair[:repeats].mean(axis=0)) / volts[None, rows, None], 0.0)
    difference, pair_noise = channels.read(transfer[rows], diff)
    step = (difference - pair_transfer(transfer[rows])) / 2  # the pair's difference set, its sum kept
    transfer[rows, 0::2] += step
    transfer[rows, 1::2] -= step
    return cell, transfer, noise if pair_noise is None else pair_noise / np.sqrt(2.0), 2 * len(voltage)


class DifferenceChannels:
    """A tile's pairs read through the board's difference channels (``MVMD``), fitted as they read.

    Channel ``o`` converts ``a I+ + b I-`` (gain ``(a - b) / 2``, and ``a + b``: the common mode its
    network lets through, 1e-4 at 80 dB), offsets removed by the all-zero vectors. Its noise is
    relative to the difference, not to the column currents (about 13x the pair's signal on the
    demo's cells), so it reads a pair 5x more precisely than the two columns do; ``a`` and ``b`` are
    fitted, per channel, by least squares on the single-ended readings of the same vectors,
    accumulated over every measurement of the tile (a few hundred rows by the last round).
    """

    def __init__(self, pairs: int) -> None:
        self.xx = np.zeros((pairs, 2, 2))
        self.xy = np.zeros((pairs, 2))

    def read(self, columns_s: np.ndarray, diff_s: np.ndarray) -> tuple[np.ndarray, float]:
        """Each pair's difference from the channels' readings ``diff_s (repeats, rows, pairs)``,
        given the single-ended transfer ``columns_s (rows, 2 pairs)`` of the same rows, and the
        standard uncertainty of one of them (S; None while a channel is not fitted yet: its pairs
        keep the columns' difference and their noise)."""
        x = np.stack([columns_s[:, 0::2], columns_s[:, 1::2]], axis=-1)  # (rows, pairs, 2)
        mean = diff_s.mean(axis=0)
        self.xx += np.einsum("rpi,rpj->pij", x, x)
        self.xy += np.einsum("rpi,rp->pi", x, mean)
        # a channel whose two columns have not varied apart yet (a rank-one fit) keeps the columns'
        # difference; so does one with no sensible gain
        trace = np.trace(self.xx, axis1=1, axis2=2)
        fitted = np.linalg.det(self.xx) > 1e-6 * trace**2
        ridge = np.where(fitted, 0.0, 1.0)[:, None, None] * np.eye(2) + 1e-12 * trace[:, None, None] * np.eye(2)
        a, b = np.moveaxis(np.linalg.solve(self.xx + ridge, self.xy[..., None])[..., 0], -1, 0)
        gain, leak = (a - b) / 2, a + b
        fitted &= np.abs(gain - 1) < 0.1
        gain, leak = np.where(fitted, gain, 1.0), np.where(fitted, leak, 0.0)
        difference = np.where(fitted, (mean - leak * (x[..., 0] + x[..., 1]) / 2) / gain, x[..., 0] - x[..., 1])
        repeats = diff_s.shape[0]
        spread = np.var(diff_s / gain, axis=0, ddof=1) if repeats > 1 else np.zeros_like(mean)
        return difference, float(np.sqrt(np.mean(spread) / repeats)) if fitted.all() else None


def refine_measured(lab: Lab, model: ArrayModel, tile: Tile, selection: np.ndarray, target_s: np.ndarray,
                    context: np.ndarray, *, twin: TwinParameters | None, limits: dict[str, float],
                    rounds: int, repeats: int, tolerance_sigma: float = 2.0, locality: float = 0.001,
                    max_closed: int | None = None, pairs: np.ndarray | None = None,
                    measured_gain: bool = True, max_repeats: int | None = None,
                    differential: bool = True, tail_rounds: int = 0) -> Refined:
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
    tail_rounds : int
        Further rounds in which only the pairs above the ``TAIL_QUANTILE`` of the measured errors
        move, and only their rows are read: more tries, at a fraction of a round's readings, for
        the few pairs whose moves land worst (1e-7 S off their prediction on the demo's first
        tile, 3-4e-8 for the others).
    repeats : int
        Unit-vector readings per row per round.
    tolerance_sigma : float
        A pair is off when its measured error exceeds this many times its measurement noise.
    pairs : ndarray (cells,) of bool, optional
        Only these pairs may be re-solved (``crossbar program --update``: those over budget);
        default every pair. Then every keep or put-back is judged per row, on the row's pairs (the
        movers and their row-mates, which a move shifts through the row's driver and which may not
        move to follow): a round's moves in a row are kept only if the row reads better as a whole,
        and at the end each rewritten row only if it reads better than at the start
        (:func:`_row_gate`), instead of the whole tile's rms, which is mostly the noise of the rows
        that could not move.
    measured_gain : bool
        Scale the twin's slopes by each cell's measured over predicted transfer
        (:func:`measured_slope`); False: the twin's slopes alone.
    max_repeats : int, optional
        When no pair is off at the present noise, the rows where one could be off at half that
        noise are read again with four times the readings, up to this many per row (default
        ``repeats``: never).
    differential : bool
        Read the pairs through the board's difference channels too, when it has them
        (:class:`DifferenceChannels`).
    """
    channels = DifferenceChannels(tile.pairs) if reads_differences(lab, tile, differential) else None
    measure = {"limits": limits, "twin": twin, "channels": channels}
    cell, measured, noise, readings = measure_tile(lab, model, tile, selection, context, repeats=repeats, **measure)
    error = pair_transfer(measured).ravel() - target_s
    kept = (_rms(error), selection, cell, measured, error, noise)
    best = {"selection": selection.copy(), "error": np.abs(error), "outputs": measured.copy()}
    row_noise = np.full(tile.rows, noise)  # each row's last reading's noise
    reads = repeats
    moved = done = 0
    for round_ in range(rounds + tail_rounds):
        bound = tolerance_sigma * np.sqrt(2.0) * np.repeat(row_noise, tile.pairs)  # a pair's noise: two cells
        off = best["error"] > bound
        if pairs is not None:
            off &= pairs
        if round_ >= rounds:  # the tail's rounds: only the worst pairs move, only their rows are read
            off &= best["error"] > np.quantile(best["error"], TAIL_QUANTILE)
        cell = model.cell_conductance_s(masks_from_selection(best["selection"], tile.rows, tile.pairs), tile)
        chosen, predicted = refine_tile(model, tile, best["selection"], target_s, cell, best["outputs"],
                                        measured_slope(model, twin, tile, cell, best["outputs"],
                                                       measured_gain=measured_gain),
                                        locality=locality, max_closed=max_closed, round_=round_)
        move = off & (np.abs(predicted - target_s) < best["error"])
        # longer readings as the pairs close in: the noise bound at most half the median error
        # (four times the readings at a time, up to ``max_repeats``); a round with nothing to move
        # reads again, longer, the rows where a pair would be off at half the bound (ambiguous)
        longer = reads
        while longer * 4 <= (max_repeats or repeats) and np.median(bound) * np.sqrt(reads / longer) > np.median(best["error"]) / 2:
            longer *= 4
        if move.any():
            rows = np.flatnonzero(move.reshape(tile.rows, tile.pairs).any(axis=1))
        else:
            ambiguous = (best["error"] > bound / 2) & (True if pairs is None else pairs)
            rows = np.flatnonzero(ambiguous.reshape(tile.rows, tile.pairs).any(axis=1))
            longer = max(longer, reads * 4)
            if longer > (max_repeats or repeats) or rows.size == 0:
                break
        reads = longer
        trial = np.where(move[:, None], chosen, best["selection"])
        moved += int(move.sum())
        _, measured, noise, count = measure_tile(lab, model, tile, trial, context, rows=rows, repeats=reads,
                                                 **measure)
        readings += count
        done = round_ + 1
        row_noise[rows] = noise
        error = np.abs(pair_transfer(measured).ravel() - target_s)
        read = np.repeat(np.isin(np.arange(tile.rows), rows), tile.pairs)
        better = read & (error < best["error"])
        if pairs is not None:  # only some pairs may move: a row keeps its moves only if the row reads better
            # as a whole (its row-mates too, which the moves shift through the row's driver and cannot follow)
            now = np.where(read & (better | ~move), error, best["error"])
            worse = (_row_sq(now, tile) >= _row_sq(best["error"], tile)) & (
                (better & move).reshape(tile.rows, tile.pairs).any(axis=1))
            better &= ~np.repeat(worse, tile.pairs)
        kept_now = np.where(better[:, None], trial, best["selection"])
        # the outputs of what is kept: read afresh where the pair's own cells are as read (it kept
        # its move, or did not move), else as before (:func:`_kept_outputs`)
        fresh = np.repeat((read & (better | ~move)).reshape(tile.rows, tile.pairs), 2, axis=1)
        best["outputs"] = _kept_outputs(model, twin, tile, kept_now, fresh, measured, trial,
                                        best["outputs"], best["selection"])
        best["selection"] = kept_now
        best["error"] = np.abs(pair_transfer(best["outputs"]).ravel() - target_s)
    if done:  # every pair's best, measured together; kept only if the whole tile is better
        cell, measured, noise, count = measure_tile(lab, model, tile, best["selection"], context, repeats=repeats,
                                                    **measure)
        readings += count
        error = pair_transfer(measured).ravel() - target_s
        if pairs is not None:  # only some pairs could move: judged per row (:func:`_row_gate`)
            kept = _row_gate(model, twin, tile, target_s, kept, (best["selection"], cell, measured, error, noise))
        elif _rms(error) < kept[0]:
            kept = (_rms(error), best["selection"], cell, measured, error, noise)
    _, selection, cell, measured, error, noise = kept
    rows, cols, _ = model.geometry
    from crossbar_ctl.engine._program import load_tile

    full = np.zeros((rows, cols), dtype=np.uint64)
    full[tile.block] = masks_from_selection(selection, tile.rows, tile.pairs)
    load_tile(lab, context | full)
    return Refined(selection, cell, measured, error, noise, done, readings, moved)


def measured_slope(model: ArrayModel, twin: TwinParameters | None, tile: Tile, cell_s: np.ndarray,
                   measured_s: np.ndarray, *, measured_gain: bool = True) -> np.ndarray:
    """``dT/dG`` of a tile's cells for a move, ``(tile.rows, 2 tile.pairs)``.

    The twin's slope, times each cell's measured transfer over the twin's prediction for it: a move
    of the calibrated conductance ``dG`` then changes the output by what the readout would read, with
    the cell's calibration scale (6.6e-4 rms on pcb, 4.6 times its within-cell spread) and the twin's
    wire error divided out. Cells below a tenth of the median (no branch closed, leakage only) take their column's median ratio.
    ``twin`` None: 1 (the output moves with the conductance), times that ratio.
    """
    if twin is None:
        predicted, slope = array_transfer(model, twin, cell_s, tile), np.ones_like(cell_s)
    else:
        predicted, slope = array_response(model, twin, cell_s, tile)
    if not measured_gain:
        return slope
    small = predicted < 0.1 * np.median(predicted[predicted > 0]) if np.any(predicted > 0) else True
    return slope * gains(measured_s, np.where(small, 0.0, predicted))


def _twin_outputs(model: ArrayModel, twin: TwinParameters | None, tile: Tile, selection: np.ndarray) -> np.ndarray:
    """The twin's transfer of a tile's selection, ``(tile.rows, 2 tile.pairs)``."""
    cell = model.cell_conductance_s(masks_from_selection(selection, tile.rows, tile.pairs), tile)
    return array_transfer(model, twin, cell, tile)


def _kept_outputs(model: ArrayModel, twin: TwinParameters | None, tile: Tile, kept: np.ndarray, fresh: np.ndarray,
                  read: np.ndarray, read_selection: np.ndarray, old: np.ndarray, old_selection: np.ndarray
                  ) -> np.ndarray:
    """The outputs of the selection ``kept``: the reading ``read`` (taken at ``read_selection``)
    where ``fresh`` (cells whose own pair is as read), else ``old`` (at ``old_selection``); either
    moved by the twin's difference between ``kept`` and what was there (the others' moves reach a
    pair through the row's driver and the wires)."""
    twin_kept = _twin_outputs(model, twin, tile, kept)
    return np.where(fresh, read + twin_kept - _twin_outputs(model, twin, tile, read_selection),
                    old + twin_kept - _twin_outputs(model, twin, tile, old_selection))


def _row_gate(model: ArrayModel, twin: TwinParameters | None, tile: Tile, target_s: np.ndarray, before: tuple,
              after: tuple) -> tuple:
    """The end-of-rounds gate of a refinement whose moves were restricted (``pairs``): each row whose
    selection changed keeps it only if that row's pairs (the movers and their row-mates, which a
    move shifts through the row's driver) read better in the final reading ``after`` than in the
    starting one ``before``; the others are put back. The rows that could not move do not decide it:
    with a few per cent of a tile's pairs moving, the whole tile's rms from two readings is mostly
    their noise.

    ``before`` is ``(rms, selection, cell, measured, error, noise)``, ``after`` the same without the
    rms. A row put back keeps its starting reading, and every row is moved by the twin's difference
    between what is kept and what was read (as the rounds do).
    """
    _, start, _, start_measured, start_error, start_noise = before
    selection, _, measured, error, noise = after
    changed = (selection != start).reshape(tile.rows, -1).any(axis=1)
    better = _row_sq(error, tile) < _row_sq(start_error, tile)
    keep = changed & better
    if not keep.any():
        return before
    if np.array_equal(keep, changed):
        return (_rms(error), *after)
    new = keep | ~changed  # the rows whose cells are as the final reading read them
    kept = np.where(np.repeat(new, tile.pairs)[:, None], selection, start)
    outputs = _kept_outputs(model, twin, tile, kept, new[:, None], measured, selection, start_measured, start)
    cell = model.cell_conductance_s(masks_from_selection(kept, tile.rows, tile.pairs), tile)
    kept_error = pair_transfer(outputs).ravel() - target_s
    return (_rms(kept_error), kept, cell, outputs, kept_error, max(noise, start_noise))


def _row_sq(error: np.ndarray, tile: Tile) -> np.ndarray:
    """Each row's sum of its pairs' squared errors, ``(tile.rows,)``: what a row's keep is judged on."""
    return np.sum(np.square(error.reshape(tile.rows, tile.pairs)), axis=1)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))
