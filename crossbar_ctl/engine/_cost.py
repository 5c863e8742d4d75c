"""The cost of a schedule on the boards: switch writes and settling, predicted and counted.

Loading a configuration sends only the rows that differ from what the board holds
(``SwitchBoard.load_masks``), and a load that sent anything waits for the switches to settle once
(``WAIT`` of ``SETTLE_TIME_CONSTANTS`` times the board's ``SETTLE?``, docs/switchboard-protocol.md).
:func:`predict_loads` computes, from the configurations a schedule loads and the state the board
holds before, the rows sent, the branch switches that change state and the settling waits;
:func:`count_since` reads the same three from the driver's own counters (what it actually sent).
A board's settling time is ``settle_waits * settle_s`` of that board; boards run in parallel, so
the schedule's ``settle_s_estimate`` is the largest over the boards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.core.config import StrictModel

if TYPE_CHECKING:
    from drivers import Lab

__all__ = ["BoardLoads", "ScheduleCost", "board_counters", "count_since", "predict_loads", "schedule_cost"]


class BoardLoads(StrictModel):
    """Switch writes and settling on one board."""

    row_writes: int
    """Rows of masks sent (``LOAD``)."""
    switch_writes: int
    """Branch switches whose state the writes change."""
    settle_waits: int
    """Settling waits (one per load that sent anything)."""
    settle_s: float
    """``settle_waits`` times the board's wait per write, s."""


class ScheduleCost(StrictModel):
    """What a schedule costs on the boards: counted from the drivers and predicted by the model."""

    boards: int
    steps: int
    """Program steps (configurations) in the schedule."""
    tiles: int
    switch_writes: int
    """Counted from what the drivers sent, every board."""
    switch_writes_predicted: int
    """Predicted from the configurations loaded and the boards' state before. For ``program`` this is
    one pass of the schedule: the closed loop's own loads (the verify loop's re-solves, the
    refinement's trial configurations) are in ``switch_writes`` alone (the demo at 2e88727: 92,214
    counted against 33,448 predicted), so the two differ by what the closed loop wrote."""
    row_writes: int
    row_writes_predicted: int
    """Rows sent, counted and predicted as the switch writes are."""
    settle_waits: int
    settle_s_estimate: float
    """Predicted settling time, s: the largest over the boards (they run in parallel)."""
    per_board: tuple[BoardLoads, ...]
    """Counted, per board."""


def predict_loads(configs: Iterable[np.ndarray], initial: np.ndarray, *, settle_s: float) -> BoardLoads:
    """Rows sent, switches changed and settling waits of loading ``configs`` in turn on one board.

    Parameters
    ----------
    configs : iterable of ndarray uint64 (rows, cols)
        The masks loaded, in order.
    initial : ndarray uint64 (rows, cols)
        What the board holds before the first.
    settle_s : float
        The board's wait after a write, s (``SwitchBoard.settle_s``; 0 for a board that needs none).
    """
    held = np.asarray(initial, dtype=np.uint64)
    rows = switches = waits = 0
    for config in configs:
        config = np.asarray(config, dtype=np.uint64)
        changed = np.any(config != held, axis=1)
        rows += int(changed.sum())
        switches += int(np.bitwise_count(np.bitwise_xor(config[changed], held[changed])).sum())
        waits += int(bool(changed.any()) and settle_s > 0)
        held = config
    return BoardLoads(row_writes=rows, switch_writes=switches, settle_waits=waits, settle_s=waits * settle_s)


def board_counters(lab: Lab) -> tuple[int, int, int]:
    """The driver's ``(row_writes, switch_writes, settle_waits)`` so far."""
    board = lab.board
    return board.row_writes, board.switch_writes, board.settle_waits


def count_since(lab: Lab, before: tuple[int, int, int]) -> BoardLoads:
    """What the board's driver sent since ``before`` (:func:`board_counters`)."""
    rows, switches, waits = (now - then for now, then in zip(board_counters(lab), before))
    return BoardLoads(row_writes=rows, switch_writes=switches, settle_waits=waits,
                      settle_s=waits * lab.board.settle_s)


def schedule_cost(counted: Sequence[BoardLoads], predicted: Sequence[BoardLoads], *, steps: int,
                  tiles: int) -> ScheduleCost:
    """The schedule's :class:`ScheduleCost` from each board's counted and predicted loads."""
    return ScheduleCost(
        boards=len(counted), steps=steps, tiles=tiles,
        switch_writes=sum(c.switch_writes for c in counted),
        switch_writes_predicted=sum(p.switch_writes for p in predicted),
        row_writes=sum(c.row_writes for c in counted),
        row_writes_predicted=sum(p.row_writes for p in predicted),
        settle_waits=sum(c.settle_waits for c in counted),
        settle_s_estimate=max((p.settle_s for p in predicted), default=0.0),
        per_board=tuple(counted),
    )
