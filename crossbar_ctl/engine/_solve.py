"""Solving, the second stage of a plan: a tile's target conductances become branch selections.

:func:`solve_tile` takes one tile of a :class:`crossbar_ctl.engine._mapping.NetworkMapping` and
solves one signed subset-sum per differential pair over the measured pools (faulty branches
excluded, stuck-closed ones subtracted from the target). With wire resistance in the fitted twin it
pre-distorts, so that the twin's outputs, not just the cells, match the targets: a solve with every
cell's pool weighted by the share of its conductance that reaches its column (``T / G``), then
rounds of local pair refinement on the twin's linearised response
(:mod:`crossbar_ctl.engine._predistort`). The closed loop (:mod:`crossbar_ctl.engine._program`)
re-solves with the same functions on measured responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crossbar_ctl.engine._mapping import ArrayModel, Tile, masks_from_selection, pair_transfer
from crossbar_ctl.engine._predistort import WINDOW_SUMS, refine_pairs, subset_sums, twin_response, window
from crossbar_ctl.engine._twin import is_ideal, twin_transfer

if TYPE_CHECKING:
    from calibration import TwinParameters

__all__ = [
    "Solver", "TileSolution", "array_response", "array_transfer", "default_solver", "gains", "refine_tile",
    "solve_pools", "solve_tile",
]

Solver = Callable[..., Any]
"""``solve_subset_sum`` or a compatible function (its result has ``.mask``)."""


def default_solver(common_mode_weight: float = 0.0) -> Solver:
    """``solve_subset_sum`` with the common-mode-aware joint cost ``|error| + common_mode_weight
    (G+ + G-)`` (0: the least error alone)."""
    from functools import partial

    from crossbar_ctl.optimizer import solve_subset_sum

    return partial(solve_subset_sum, common_mode_weight=common_mode_weight) if common_mode_weight else solve_subset_sum


@dataclass(frozen=True)
class TileSolution:
    """One tile solved.

    Attributes
    ----------
    selection : ndarray (cells, 2 branches) of bool
        Closed branches per pair (plus cell's, then minus cell's).
    masks : ndarray uint64 (tile.rows, 2 tile.pairs)
    cell_s : ndarray (tile.rows, 2 tile.pairs)
        Predicted cell conductances.
    predicted_s : ndarray (tile.rows, 2 tile.pairs)
        The twin's transfer of these cells (the cells themselves without a twin).
    quantization_s : ndarray (cells,)
        The bare subset-sum error of the first solve, before pre-distortion, siemens.
    """

    selection: np.ndarray
    masks: np.ndarray
    cell_s: np.ndarray
    predicted_s: np.ndarray
    quantization_s: np.ndarray


def solve_pools(model: ArrayModel, tile: Tile, target_s: np.ndarray, *, gain: np.ndarray | None,
                solver: Solver, max_closed: int | None,
                cells: np.ndarray | None = None, previous: np.ndarray | None = None) -> np.ndarray:
    """The optimizer on a tile's pair pools; returns the selection ``bool (cells, 2 n)``.

    With ``gain`` ``(tile.rows, 2 tile.pairs)`` each cell's pool is weighted by it. With ``cells``
    (bool per cell) only those are re-solved; the rest keep ``previous``.
    """
    values, sigma, usable = model.pool(tile, gain)
    target = target_s.ravel() - model.forced_pair_s(tile, gain)
    if cells is None:
        return np.asarray(solver(values, target, sigma_s=sigma, usable=usable, max_closed=max_closed).mask)
    assert previous is not None, "re-solving some cells needs the previous selection"
    selection = previous.copy()
    if np.any(cells):
        result = solver(values[cells], target[cells], sigma_s=sigma[cells], usable=usable[cells],
                        max_closed=max_closed)
        selection[cells] = np.asarray(result.mask)
    return selection


def gains(transfer_s: np.ndarray, cell_s: np.ndarray) -> np.ndarray:
    """Share of each cell's conductance that reaches its column, ``T / G`` (column median where G = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cell_s > 0, transfer_s / cell_s, np.nan)
    fill = np.nanmedian(np.where(np.isnan(ratio).all(axis=0), 1.0, ratio), axis=0)
    return np.where(np.isnan(ratio), fill, ratio)


def _block(cell_s: np.ndarray, tile: Tile | None) -> tuple[slice, slice]:
    return tile.block if tile is not None else (slice(0, cell_s.shape[0]), slice(0, cell_s.shape[1]))


def array_conductance_s(model: ArrayModel, cell_s: np.ndarray, tile: Tile | None = None) -> np.ndarray:
    """The whole array's cells, ``(rows, cols)``: a tile's cells at its placement (``None``: the
    top-left), elsewhere only the branches that conduct whatever the masks say (stuck closed)."""
    full = model.cell_conductance_s(np.zeros(model.geometry[:2], dtype=np.uint64))
    full[_block(cell_s, tile)] = cell_s
    return full


def array_transfer(model: ArrayModel, twin: TwinParameters | None, cell_s: np.ndarray,
                   tile: Tile | None = None) -> np.ndarray:
    """The twin's transfer of a tile's cells at its placement (``None``: the top-left), ``(rows, 2 pairs)``."""
    return twin_transfer(twin, array_conductance_s(model, cell_s, tile))[_block(cell_s, tile)]


def array_response(model: ArrayModel, twin: TwinParameters, cell_s: np.ndarray,
                   tile: Tile | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The twin's transfer and its slope ``dT/dG`` for a tile's cells, ``(rows, 2 pairs)`` each."""
    transfer, slope = twin_response(twin, array_conductance_s(model, cell_s, tile))
    block = _block(cell_s, tile)
    return transfer[block], slope[block]


def refine_tile(model: ArrayModel, tile: Tile, selection: np.ndarray, target_s: np.ndarray,
                cell_s: np.ndarray, transfer_s: np.ndarray, slope: np.ndarray, *, locality: float,
                max_closed: int | None = None, round_: int = 0,
                window_sums: int = WINDOW_SUMS) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's best selection under the response linearised at ``(cell_s, transfer_s, slope)``.

    The round moves the branches of :func:`crossbar_ctl.engine._predistort.window` on both sides of
    every pair (all of them where the tile's subset tables fit ``window_sums``, default
    ``WINDOW_SUMS``) and keeps the others as ``selection`` has them; ``max_closed`` caps the closed
    branches per pair.

    Parameters
    ----------
    selection : ndarray (cells, 2 n) of bool
        The present selection (plus cell's branches, then minus cell's).
    target_s : ndarray (cells,)
        Target pair outputs, siemens.
    cell_s, transfer_s, slope : ndarray (tile.rows, 2 tile.pairs)
        Where the response is linearised: cell conductances, their outputs and ``dT/dG``.

    Returns
    -------
    selection : ndarray (cells, 2 n) of bool
    predicted_s : ndarray (cells,)
        The linearised pair outputs of that selection (NaN where the cap leaves no choice).
    """
    n = model.geometry[2]
    free = window(n, round_, pairs=selection.shape[0], sums=window_sums)
    moved = np.zeros(n, dtype=bool)
    moved[free] = True
    block = tile.block
    g, usable = np.nan_to_num(model.conductance_s[block]), model.usable[block]
    forced = np.zeros(g.shape, dtype=bool) if model.forced is None else model.forced[block]
    sides = []
    for k in (0, 1):
        side_g = g[:, k::2].reshape(-1, n)
        kept = (selection[:, k * n:(k + 1) * n] & ~moved) | forced[:, k::2].reshape(-1, n)
        sums = subset_sums(side_g[:, free], usable[:, k::2].reshape(-1, n)[:, free])
        sides.append({"sums": sums + np.sum(np.where(kept, side_g, 0.0), axis=1)[:, None],
                      "g0": cell_s[:, k::2].ravel(), "t0": transfer_s[:, k::2].ravel(),
                      "slope": slope[:, k::2].ravel()})
    room = None if max_closed is None else max_closed - np.sum(selection & ~np.tile(moved, 2), axis=1)
    plus, minus, predicted = refine_pairs(target_s, sides[0], sides[1], locality=locality, room=room)
    chosen = np.array(selection, dtype=bool)
    bits = np.arange(free.size)
    chosen[:, free] = (plus[:, None] >> bits) & 1
    chosen[:, n + free] = (minus[:, None] >> bits) & 1
    return chosen, predicted


def solve_tile(model: ArrayModel, tile: Tile, target_s: np.ndarray, *, twin: TwinParameters | None,
               solver: Solver, max_closed: int | None = None, iterations: int = 12,
               locality: float = 0.001) -> TileSolution:
    """Solve a tile's pairs for their targets; with a non-ideal twin, pre-distort against its outputs.

    The optimizer solves the bare pools; with a twin, once more with each cell's pool weighted by
    its gain ``T / G`` in that configuration, then :func:`refine_tile` refines every pair on the
    twin's linearised response for up to ``iterations`` rounds, keeping the best round. Any branch
    count and ``max_closed`` are refined: above ``WINDOW_BRANCHES`` per cell a round moves a
    rotating window of the branches (the measured refinement of ``_refine``, fewer rounds where
    each counts, moves every branch that fits ``WINDOW_SUMS``).

    Parameters
    ----------
    target_s : ndarray (tile.rows, tile.pairs)
        Target pair transfers, siemens.
    twin : TwinParameters or None
        ``None`` (or an ideal twin): solve for the bare cells.
    locality : float
        Refinement penalty, siemens of output error per siemens of conductance moved.
    """
    values, _, _ = model.pool(tile)
    target = target_s.ravel()
    selection = solve_pools(model, tile, target_s, gain=None, solver=solver, max_closed=max_closed)
    quantization = np.sum(np.where(selection, values, 0.0), axis=1) + model.forced_pair_s(tile) - target
    masks = masks_from_selection(selection, tile.rows, tile.pairs)
    cell_s = model.cell_conductance_s(masks, tile)
    predicted_s = array_transfer(model, twin, cell_s, tile)
    if twin is None or is_ideal(twin):
        return TileSolution(selection, masks, cell_s, predicted_s, quantization)
    selection = solve_pools(model, tile, target_s, gain=gains(predicted_s, cell_s), solver=solver,
                            max_closed=max_closed)
    best: tuple[float, TileSolution] | None = None
    for round_ in range(iterations + 1):
        masks = masks_from_selection(selection, tile.rows, tile.pairs)
        cell_s = model.cell_conductance_s(masks, tile)
        transfer, slope = array_response(model, twin, cell_s, tile)
        residual = pair_transfer(transfer).ravel() - target
        rms = float(np.sqrt(np.mean(residual**2)))
        if best is None or rms < best[0]:
            best = (rms, TileSolution(selection, masks, cell_s, transfer, quantization))
        if round_ == iterations:
            break
        chosen, predicted = refine_tile(model, tile, selection, target, cell_s, transfer, slope,
                                        locality=locality, max_closed=max_closed, round_=round_,
                                        window_sums=0)
        move = np.abs(predicted - target) < np.abs(residual)
        selection = np.where(move[:, None], chosen, selection)
    assert best is not None
    return best[1]
