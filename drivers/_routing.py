"""Routing: which array lines the SMU's HI drives and LO senses, every other line grounded.

:class:`BoardRouting` routes through the switch board's line switches, :class:`MatrixRouting`
through a switch matrix (input 1 = HI, input 2 = LO, outputs ``1..rows`` the rows and
``rows+1..rows+cols`` the columns, unused outputs grounded). Both send only what changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from crossbar_ctl.core.errors import LimitError
from drivers._board import SwitchBoard
from drivers._matrix import SwitchMatrix
from drivers._safety import check_int

__all__ = ["BoardRouting", "MatrixRouting", "Routing"]


class Routing(ABC):
    """Connect the SMU's HI to some rows and its LO to some columns; ground every other line.

    Parameters
    ----------
    rows, cols : int
        The array's geometry.
    """

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self._state: tuple[frozenset[int], frozenset[int]] | None = None  # unknown
        self._seen_version = -1

    def connect(self, *, source_rows: Iterable[int], sense_cols: Iterable[int]) -> None:
        """HI to ``source_rows``, LO to ``sense_cols``, every other line to ground.

        Raises
        ------
        LimitError
            A row or column outside the array; nothing is sent.
        """
        rows = frozenset(check_int("row", row, 0, self.rows - 1) for row in source_rows)
        cols = frozenset(check_int("col", col, 0, self.cols - 1) for col in sense_cols)
        if self._routes_version() != self._seen_version:
            self._state = None  # someone else routed lines since: send everything
        if self._state != (rows, cols):
            old, self._state = self._state, None  # unknown until the change completes
            self._apply(old, rows, cols)
            self._state = (rows, cols)
            self._seen_version = self._routes_version()

    def ground_all(self) -> None:
        """Every line to ground (nothing on HI or LO)."""
        self.connect(source_rows=(), sense_cols=())

    def forget(self) -> None:
        """The state is no longer known (after a safe state or an error): the next call sends all."""
        self._state = None

    @abstractmethod
    def _routes_version(self) -> int:
        """The instrument's count of routing changes (any caller's)."""

    @abstractmethod
    def _apply(self, old: tuple[frozenset[int], frozenset[int]] | None, rows: frozenset[int],
               cols: frozenset[int]) -> None: ...


class BoardRouting(Routing):
    """Routing through the switch board (``ROUTE ROW``/``ROUTE COL``)."""

    def __init__(self, board: SwitchBoard) -> None:
        rows, cols, _ = board.geometry()
        super().__init__(rows, cols)
        self.board = board

    def _routes_version(self) -> int:
        return self.board.route_version

    def _apply(self, old, rows, cols) -> None:
        board = self.board
        if old is None:
            board.route_row("*", "GND")
            board.route_col("*", "GND")
            old = (frozenset(), frozenset())
        for row in old[0] - rows:
            board.route_row(row, "GND")
        for col in old[1] - cols:
            board.route_col(col, "GND")
        for row in sorted(rows - old[0]):
            board.route_row(row, "SRC")
        for col in sorted(cols - old[1]):
            board.route_col(col, "SENSE")


class MatrixRouting(Routing):
    """Routing through a switch matrix, unused outputs grounded (``:ROUT:AGND``).

    Parameters
    ----------
    matrix : SwitchMatrix
    rows, cols : int
        The array's geometry; the matrix needs ``rows + cols`` outputs.
    hi_input, lo_input : int
        The matrix inputs wired to the SMU's HI and LO terminals.
    """

    def __init__(self, matrix: SwitchMatrix, rows: int, cols: int, *, hi_input: int = 1, lo_input: int = 2) -> None:
        if matrix.outputs < rows + cols:
            raise LimitError("outputs", rows + cols, matrix.outputs, "the matrix needs one output per array line")
        super().__init__(rows, cols)
        self.matrix = matrix
        self.hi_input, self.lo_input = hi_input, lo_input

    def _routes_version(self) -> int:
        return self.matrix.version

    def _channels(self, rows: Iterable[int], cols: Iterable[int]) -> set[tuple[int, int]]:
        return ({(self.hi_input, row + 1) for row in rows}
                | {(self.lo_input, self.rows + col + 1) for col in cols})

    def _apply(self, old, rows, cols) -> None:
        matrix = self.matrix
        wanted = self._channels(rows, cols)
        if old is None:
            matrix.open_all()
            matrix.set_ground_unused(True)
            current: set[tuple[int, int]] = set()
        else:
            current = self._channels(*old)
        if current - wanted:
            matrix.open_channels(sorted(current - wanted))
        if wanted - current:
            matrix.close_channels(sorted(wanted - current))
