"""The engine's digital twin of the array: its transfer matrix under the fitted wire parameters.

The twin is the calibration's :class:`calibration.TwinParameters` (row and column wire resistance
per segment, sense resistance), solved exactly by :mod:`crossbar_ctl.core.circuit`, the nodal solver
the calibration fitted the parameters with. The transfer matrix ``T`` ``(rows, cols)`` holds the
current into column ``j`` per volt on row ``i`` with every other row at 0 V; the array is linear, so
``I = V @ T`` for any row voltages ``V (batch, rows)``.
"""

from __future__ import annotations

import numpy as np

from calibration import TwinParameters
from calibration import network_col_current_a

__all__ = ["is_ideal", "sensed_a", "twin_transfer"]


def is_ideal(twin: TwinParameters | None) -> bool:
    """True when the twin has no wire, sense or driver resistance (``None`` counts as ideal)."""
    return twin is None or max(twin.row_wire_resistance_ohm, twin.col_wire_resistance_ohm,
                               twin.sense_resistance_ohm, twin.driver_resistance_ohm) == 0.0


def sensed_a(twin: TwinParameters | None, current_a: np.ndarray) -> np.ndarray:
    """Board readings ``(batch, cols)`` of the whole array, each column divided by its channel's
    gain (``twin.column_gain``, measured against the source-meter); as they are without one."""
    current = np.asarray(current_a, dtype=np.float64)
    if twin is None or twin.column_gain is None:
        return current
    return current / np.asarray(twin.column_gain)


def twin_transfer(twin: TwinParameters | None, conductance_s: np.ndarray) -> np.ndarray:
    """Transfer matrix ``(rows, cols)``, siemens, of cells with conductances ``(rows, cols)``."""
    g = np.array(conductance_s, dtype=np.float64)
    if is_ideal(twin):
        return g
    return network_col_current_a(g, np.eye(g.shape[0]), twin)
