"""The digital twin of the array's wiring: predict readings, correct them, fit the wire parameters.

Topology (docs/internals.md): row ``i`` is driven at column index 0 through ``j + 1`` row
segments to cell ``(i, j)``; column ``j`` is sensed at row index ``rows - 1``, cell ``(i, j)``
reaching the sense end through ``rows - i`` column segments and the sense resistance. Lines not
driven are held at 0 V at the same ends.

Only the closed cells matter (open ones leak picosiemens, part of the measured baseline), so the
network solved here keeps two nodes per closed cell and merges the wire between consecutive
closed cells of a line into one resistor: a row step (one row's cells closed) is a few hundred
nodes, solved exactly. A row step with nothing else closed also has a closed form
(:func:`row_step_conductance`), which is what corrects the bulk of the readings.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares
from scipy.sparse.linalg import spsolve

from calibration._record import TwinParameters

__all__ = ["Network", "fit_twin", "network_col_current_a", "row_step_conductance", "solve_row_step"]

_MIN_RESISTANCE_OHM = 1e-6  # a zero wire is solved as a very good conductor


def _wires(twin: TwinParameters) -> tuple[float, float, float]:
    return (max(twin.row_wire_resistance_ohm, _MIN_RESISTANCE_OHM),
            max(twin.col_wire_resistance_ohm, _MIN_RESISTANCE_OHM),
            twin.sense_resistance_ohm)


def row_step_conductance(current_a: np.ndarray, voltage_v: float, row: np.ndarray | int,
                         twin: TwinParameters, rows: int) -> np.ndarray:
    """Cell conductances of one driven row from its column currents, exactly (closed form).

    Valid when only the driven row's cells are closed (every other cell open): the current of
    cell ``j`` is the current sensed at column ``j``; row segment ``s`` carries the currents of
    cells ``s..cols-1``; the cell's column node sits at ``I_j * ((rows - i) r_col + R_sense)``.

    Parameters
    ----------
    current_a : ndarray (..., cols)
        Sensed column currents, A.
    voltage_v : float
        Voltage at the driven row's terminal, V.
    row : int or ndarray broadcastable to ``current_a.shape[:-1]``
        Index of the driven row.
    twin : TwinParameters
    rows : int
        Rows of the array.

    Returns
    -------
    ndarray (..., cols)
        Cell conductances, S.
    """
    current = np.asarray(current_a, dtype=np.float64)
    segment_a = np.cumsum(current[..., ::-1], axis=-1)[..., ::-1]  # current in row segment j
    node_v = voltage_v - twin.row_wire_resistance_ohm * np.cumsum(segment_a, axis=-1)
    col_ohm = (rows - np.asarray(row))[..., None] * twin.col_wire_resistance_ohm \
        + twin.sense_resistance_ohm
    return current / (node_v - current * col_ohm)


class Network:
    """The nodal equations of the closed cells of an array, for any of their conductances.

    Two nodes per closed cell (its row node and its column node); the wire between consecutive
    closed cells of a line is one resistor. Solving for a batch of conductance sets stacks their
    systems block-diagonally into one sparse solve.

    Parameters
    ----------
    closed : ndarray bool (rows, cols)
        The cells in the network.
    twin : TwinParameters
    row_connected, col_connected : ndarray of bool, optional
        Lines whose terminal is connected (default all); the others float.
    """

    def __init__(self, closed: np.ndarray, twin: TwinParameters, *,
                 row_connected: np.ndarray | None = None, col_connected: np.ndarray | None = None) -> None:
        rows, cols = closed.shape
        self.rows, self.cols = rows, cols
        ci, cj = np.nonzero(closed)
        self.ci, self.cj = ci, cj
        n = self.cells = ci.size
        r_row, r_col, r_sense = _wires(twin)
        row_ok = np.ones(rows, bool) if row_connected is None else np.asarray(row_connected, bool)
        col_ok = np.ones(cols, bool) if col_connected is None else np.asarray(col_connected, bool)
        same_row = ci[1:] == ci[:-1]  # nonzero() sorts by (row, col)
        a = np.nonzero(same_row)[0]
        wa, wb, wg = [a], [a + 1], [1.0 / ((cj[a + 1] - cj[a]) * r_row)]
        first = np.nonzero(np.r_[True, ~same_row])[0] if n else np.zeros(0, int)
        first = first[row_ok[ci[first]]]
        self.first, self.term_g = first, 1.0 / ((cj[first] + 1) * r_row)
        order = np.lexsort((ci, cj))
        oi, oj = ci[order], cj[order]
        same_col = oj[1:] == oj[:-1]
        a = np.nonzero(same_col)[0]
        wa.append(order[a] + n)
        wb.append(order[a + 1] + n)
        wg.append(1.0 / ((oi[a + 1] - oi[a]) * r_col))
        last = np.nonzero(np.r_[~same_col, True])[0] if n else np.zeros(0, int)
        last = last[col_ok[oj[last]]]
        self.sense_node, self.sense_col = order[last] + n, oj[last]
        self.sense_g = 1.0 / ((rows - oi[last]) * r_col + r_sense)
        self.wire = tuple(np.concatenate(x) for x in (wa, wb, wg))

    def col_current_a(self, cell_s: np.ndarray, row_voltage_v: np.ndarray) -> np.ndarray:
        """Sensed column currents ``(batch, cols)``.

        Parameters
        ----------
        cell_s : ndarray (batch, cells) or (cells,)
            Conductance of each closed cell (in ``np.nonzero(closed)`` order), S.
        row_voltage_v : ndarray (batch, rows) or (rows,)
            Row terminal voltages, V; with one ``cell_s`` row, any batch of voltages.
        """
        g = np.atleast_2d(np.asarray(cell_s, dtype=np.float64))
        volts = np.atleast_2d(np.asarray(row_voltage_v, dtype=np.float64))
        out = np.zeros((max(g.shape[0], volts.shape[0]), self.cols))
        if self.cells == 0:
            return out
        n, copies = 2 * self.cells, g.shape[0]
        wa, wb, wg = self.wire
        cell_a, cell_b = np.arange(self.cells), np.arange(self.cells) + self.cells
        shift = (np.arange(copies) * n)[:, None]
        ea = np.concatenate([(wa + shift).ravel(), (cell_a + shift).ravel()])
        eb = np.concatenate([(wb + shift).ravel(), (cell_b + shift).ravel()])
        eg = np.concatenate([np.tile(wg, copies), g.ravel()])
        diag = np.zeros(copies * n)
        np.add.at(diag, (self.first + shift).ravel(), np.tile(self.term_g, copies))
        np.add.at(diag, (self.sense_node + shift).ravel(), np.tile(self.sense_g, copies))
        size = copies * n
        lap = sp.csc_matrix((np.r_[-eg, -eg, eg, eg, diag + 1e-18],
                             (np.r_[ea, eb, ea, eb, np.arange(size)],
                              np.r_[eb, ea, ea, eb, np.arange(size)])), shape=(size, size))
        drive = volts[:, self.ci[self.first]] * self.term_g  # (nv, first)
        if copies == 1:  # one network, every voltage vector a right-hand side
            rhs = np.zeros((n, volts.shape[0]))
            rhs[self.first] = drive.T
            node_v = spsolve(lap, rhs).reshape(n, -1).T  # (nv, n)
            out[:, self.sense_col] = node_v[:, self.sense_node] * self.sense_g
            return out
        rhs = np.zeros((copies, n))
        rhs[:, self.first] = np.broadcast_to(drive, (copies, drive.shape[1]))
        node_v = spsolve(lap, rhs.ravel()).reshape(copies, n)
        out[:, self.sense_col] = node_v[:, self.sense_node] * self.sense_g
        return out


def network_col_current_a(conductance_s: np.ndarray, row_voltage_v: np.ndarray,
                          twin: TwinParameters, *, row_connected: np.ndarray | None = None,
                          col_connected: np.ndarray | None = None) -> np.ndarray:
    """Sensed column currents of the array with the given closed cells, by nodal analysis.

    Parameters
    ----------
    conductance_s : ndarray (rows, cols)
        Conductance of every cell, S; cells at 0 are open (not part of the network).
    row_voltage_v : ndarray (rows,) or (batch, rows)
        Voltages at the row terminals, V (0 for grounded rows).
    twin : TwinParameters
    row_connected, col_connected : ndarray of bool, optional
        Lines whose terminal is connected (default all); the others float.

    Returns
    -------
    ndarray (batch, cols)
        Current out of each column's sense end, A.
    """
    g = np.asarray(conductance_s, dtype=np.float64)
    network = Network(g > 0, twin, row_connected=row_connected, col_connected=col_connected)
    return network.col_current_a(g[network.ci, network.cj], row_voltage_v)


def solve_row_step(current_a: np.ndarray, row: int, voltage_v: float, twin: TwinParameters,
                   others_s: np.ndarray, start_s: np.ndarray, *, closed: np.ndarray | None = None,
                   tolerance: float = 1e-9, iterations: int = 20) -> np.ndarray:
    """Cell conductances of a driven row when other cells of the array are closed too.

    Fixed point: scale each cell's conductance by measured over predicted current until the
    network reproduces the readings (every step of the row solved at once).

    Parameters
    ----------
    current_a : ndarray (steps, cols)
        Sensed currents of several steps of the same row, A.
    row : int
    voltage_v : float
    twin : TwinParameters
    others_s : ndarray (rows, cols)
        Conductance of the other closed cells (zero where open); in row ``row`` only the cells
        outside ``closed`` count.
    start_s : ndarray (steps, cols)
        First guess (the closed-form estimate).
    closed : ndarray bool (cols,), optional
        Cells of the row closed in the steps (default all; one cell for reads through the SMU).

    Returns
    -------
    ndarray (steps, cols)
    """
    current = np.atleast_2d(current_a)
    rows, cols = others_s.shape
    closed = np.ones(cols, bool) if closed is None else np.asarray(closed, bool)
    g = np.array(np.atleast_2d(start_s), dtype=np.float64)
    layout = others_s > 0
    layout[row] = (others_s[row] > 0) | closed
    network = Network(layout, twin)
    in_row = network.ci == row
    mine = in_row & closed[network.cj]
    cells = np.broadcast_to(others_s[network.ci, network.cj], (current.shape[0], network.cells)).copy()
    estimate = np.clip(np.nan_to_num(g[:, closed]), 1e-30, None)
    volts = np.zeros(rows)
    volts[row] = voltage_v
    measured = current[:, network.cj[mine]]
    for _ in range(iterations):
        cells[:, mine] = estimate
        predicted = network.col_current_a(cells, volts)[:, network.cj[mine]]
        ratio = np.divide(measured, predicted, out=np.ones_like(predicted), where=predicted > 0)
        estimate = estimate * ratio
        if np.max(np.abs(ratio - 1.0)) < tolerance:
            break
    g[:, network.cj[mine]] = estimate
    return g


def fit_twin(residuals, start: TwinParameters) -> tuple[TwinParameters, np.ndarray]:
    """Fit the wire and sense resistances by least squares.

    Parameters
    ----------
    residuals : callable
        ``residuals(twin) -> ndarray``: normalised residuals (reading minus prediction over its
        sigma) of the fit readings for a candidate twin.
    start : TwinParameters

    Returns
    -------
    twin : TwinParameters
        With ``fit_rel_rms`` left to the caller.
    covariance : ndarray (3, 3)
        Covariance of ``(row, col, sense)`` resistances, ohm^2.
    """

    def make(p: np.ndarray) -> TwinParameters:
        return TwinParameters(row_wire_resistance_ohm=float(p[0]), col_wire_resistance_ohm=float(p[1]),
                              sense_resistance_ohm=float(p[2]))

    p0 = np.array([start.row_wire_resistance_ohm, start.col_wire_resistance_ohm,
                   start.sense_resistance_ohm])
    result = least_squares(lambda p: residuals(make(p)), p0, bounds=(0.0, np.inf),
                           x_scale=np.maximum(p0, 0.1), diff_step=1e-3)
    jac = result.jac
    dof = max(result.fun.size - 3, 1)
    scale = max(float(result.fun @ result.fun) / dof, 1.0)
    covariance = np.linalg.pinv(jac.T @ jac) * scale
    return make(result.x), covariance
