"""Array readouts (role ``ArrayReadout``): a matrix-vector product on the analog array.

:class:`BoardReadout` drives every row from the board's DACs and senses every column with its ADCs
(one ``MVM`` line per input vector). :class:`SuperpositionReadout` has only one SMU: it drives one
row at a time with every other row grounded, senses one column at a time, and sums the
contributions digitally; exact for a linear array, since every undriven row is held at 0 V. Each
(row, column) pair is one list sweep over the whole batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from crossbar_ctl.core.errors import LimitError
from drivers._board import SwitchBoard
from drivers._routing import Routing
from drivers._safety import SafetyGuard
from drivers._smu import SourceMeter, quietly
from drivers._transport import Transport

__all__ = ["ArrayReadout", "BoardReadout", "SuperpositionReadout"]


class ArrayReadout(ABC):
    """Role: ``mvm(voltage_v (rows,) | (batch, rows)) -> current_a (batch, cols)``.

    Attributes
    ----------
    rows, cols : int
        The array's geometry.
    """

    def __init__(self, rows: int, cols: int, transports: list[Transport], guard: SafetyGuard) -> None:
        self.rows, self.cols = rows, cols
        self.guard = guard
        self._transports = transports
        self._start = self._replies()

    def _replies(self) -> int:
        return sum(transport.round_trips for transport in self._transports)

    @property
    def round_trips(self) -> int:
        """Instrument round trips (replies awaited) made through this readout's instruments since it was made."""
        return self._replies() - self._start

    def _inputs(self, voltage_v: object) -> np.ndarray:
        values = self.guard.voltages_v(voltage_v)
        batch = np.atleast_2d(values)
        if values.ndim > 2 or batch.shape[1] != self.rows:
            raise LimitError("voltage_v", np.nan, self.rows, f"expected shape (rows,) or (batch, rows) with "
                             f"rows = {self.rows}, got {values.shape}")
        return batch

    @abstractmethod
    def mvm(self, voltage_v: object) -> np.ndarray:
        """Drive the rows, return the column currents.

        Parameters
        ----------
        voltage_v : array_like, shape (rows,) or (batch, rows)
            Row voltages, volts.

        Returns
        -------
        current_a : ndarray, shape (batch, cols)
            Column currents, amperes (NaN where a reading overflowed).
        """

    @abstractmethod
    def set_nplc(self, nplc: float) -> None:
        """Integration time of every reading, power-line cycles."""

    differential = False
    """Whether :meth:`mvm_pairs` reads each pair's difference through a channel of its own."""

    def mvm_pairs(self, voltage_v: object) -> np.ndarray:
        """Drive the rows, return each column pair's difference ``I[2o] - I[2o + 1]``.

        Without difference channels (``differential`` False) it is the difference of the two
        columns' readings.

        Returns
        -------
        current_a : ndarray, shape (batch, cols // 2)
        """
        current = self.mvm(voltage_v)
        pairs = self.cols // 2
        return current[:, 0: 2 * pairs: 2] - current[:, 1: 2 * pairs: 2]


class BoardReadout(ArrayReadout):
    """The board's own DACs and ADCs: a batch in as few ``MVMB`` lines as fit on a board listing
    ``BATCH``, else one ``MVM`` line per input vector (:meth:`SwitchBoard.mvm`)."""

    def __init__(self, board: SwitchBoard) -> None:
        if not board.has_readout:
            raise LimitError("readout", 0, 1, f"the board at {board.address} has no MVM capability")
        rows, cols, _ = board.geometry()
        board.dac_max_v()  # read once, before counting round trips
        super().__init__(rows, cols, [board.transport], board.guard)
        self.board = board

    def mvm(self, voltage_v: object) -> np.ndarray:
        return self.board.mvm(self._inputs(voltage_v))  # every vector checked before the first is sent

    @property
    def differential(self) -> bool:  # type: ignore[override]
        return self.board.has_differential

    def mvm_pairs(self, voltage_v: object) -> np.ndarray:
        if not self.differential:
            return super().mvm_pairs(voltage_v)
        return self.board.mvm_pairs(self._inputs(voltage_v))

    def set_nplc(self, nplc: float) -> None:
        self.board.set_adc_nplc(nplc)


class SuperpositionReadout(ArrayReadout):
    """One SMU and the routing: ``I[:, j] = sum_i T_ij(V[:, i])``, one row and one column at a time.

    Parameters
    ----------
    source_meter : SourceMeter
    routing : Routing
        Connects HI to one row and LO to one column, every other line grounded.
    """

    def __init__(self, source_meter: SourceMeter, routing: Routing) -> None:
        super().__init__(routing.rows, routing.cols, _transports(source_meter, routing), source_meter.guard)
        self.source_meter = source_meter
        self.routing = routing

    def mvm(self, voltage_v: object) -> np.ndarray:
        batch = self._inputs(voltage_v)
        smu = self.source_meter
        current = np.zeros((batch.shape[0], self.cols))
        if smu.output_is_on:
            smu.set_source_voltage_v(0.0)  # lines are switched only at 0 V
        try:
            for row in np.flatnonzero(np.any(batch != 0, axis=0)):
                for col in range(self.cols):
                    self.routing.connect(source_rows=[int(row)], sense_cols=[col])
                    if not smu.output_is_on:
                        smu.output_on()
                    current[:, col] += smu.sweep_voltages_v(batch[:, row])
        except BaseException:
            quietly(smu.force_output_off)  # the error in flight matters more; the safe state follows
            raise
        smu.output_off()
        self.routing.ground_all()
        return current

    def set_nplc(self, nplc: float) -> None:
        self.source_meter.set_nplc(nplc)


def _transports(source_meter: SourceMeter, routing: Routing) -> list[Transport]:
    instrument = getattr(routing, "board", None) or getattr(routing, "matrix")
    return [source_meter.transport, instrument.transport]
