"""Placement and schedule: which board each tile goes to, in which program step, at which cells.

A **program step** is one configuration of one board's switches. It holds one or more tiles at
disjoint row blocks *and* disjoint column blocks (block diagonal), so a tile's inputs drive only
its own rows and its outputs read only its own columns; the cells between tiles stay open (their
switches' leakage is all that couples them). Tiles are packed next-fit in programming order (layer
by layer, as :func:`crossbar_ctl.engine._mapping.plan_tiles` orders them): a tile goes below and
to the right of the step's last tile when it fits there, otherwise it opens a new step. Small
tiles (a small layer, a layer's remainder, the next layer's first tiles) so share one
configuration; tiles that fill the array get a step each.

Steps are split among the boards round robin, so each layer's steps spread over every board. A
board runs its steps in increasing order, and step indices never go back a layer, so ``check``
loads every step once: a step holding the last tiles of one layer and the first of the next is
still loaded when the next layer starts (:func:`step_order`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from crossbar_ctl.engine._mapping import Tile

__all__ = ["place_tiles", "step_masks", "step_order", "steps_of"]


def place_tiles(tiles: Sequence[Tile], rows: int, cols: int, *, boards: int = 1, pack: bool = True) -> list[Tile]:
    """Give every tile a board, a program step and its array offsets.

    Parameters
    ----------
    tiles : sequence of Tile
        In programming order; each at most ``rows x cols`` (``2 * pairs`` columns).
    rows, cols : int
        The array of every board.
    boards : int
        Boards (arrays of the same geometry) used in parallel.
    pack : bool
        Pack several tiles into one step where they fit; False: one tile per step, at the top-left.

    Returns
    -------
    list of Tile
        The same tiles, placed; steps numbered from 0 in order, step ``s`` on board ``s % boards``.
    """
    placed: list[Tile] = []
    step, corner = -1, (rows, cols)  # the open step and its free corner (below-right of its last tile)
    for tile in tiles:
        width = 2 * tile.pairs
        if not pack or corner[0] + tile.rows > rows or corner[1] + width > cols:
            step, corner = step + 1, (0, 0)
        placed.append(dataclasses.replace(tile, board=step % boards, step=step, row_offset=corner[0],
                                          col_offset=corner[1]))
        corner = (corner[0] + tile.rows, corner[1] + width)
    return placed


def steps_of(tiles: Sequence[Tile]) -> dict[int, list[int]]:
    """Tile indices of every step, ``{step: [tile, ...]}``, steps and tiles in increasing order."""
    steps: dict[int, list[int]] = {}
    for index, tile in enumerate(tiles):
        steps.setdefault(tile.step, []).append(index)
    return dict(sorted(steps.items()))


def step_order(tiles: Sequence[Tile], boards: int) -> list[list[int]]:
    """The steps each board loads in one pass over the network, ``[[step, ...] per board]``."""
    order: list[list[int]] = [[] for _ in range(boards)]
    for step, members in steps_of(tiles).items():
        order[tiles[members[0]].board].append(step)
    return order


def step_masks(tile_masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A configuration of tiles together: their masks ``uint64 (rows, cols)`` (each zero outside its
    own cells, the cells of a step's tiles disjoint) OR-ed; none: every switch open."""
    config = np.zeros(shape, dtype=np.uint64)
    for masks in tile_masks:
        config |= np.asarray(masks, dtype=np.uint64)
    return config
