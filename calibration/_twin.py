"""The digital twin of the array's wiring: predict readings, correct them, fit the wire parameters.

Topology (docs/internals.md): row ``i`` is driven at column index 0 through ``j + 1`` row
segments to cell ``(i, j)``; column ``j`` is sensed at row index ``rows - 1``, cell ``(i, j)``
reaching the sense end through ``rows - i`` column segments and the sense resistance. Lines not
driven are held at 0 V at the same ends. This is the network of
:class:`crossbar_ctl.core.circuit.CrossbarCircuit` (the one solver of the project, shared with the
simulator), which solves it exactly.

Only the closed cells matter (open ones leak picosiemens, part of the measured baseline): a cell
at 0 S is open. The wire beyond the closed cells carries no current, so each solve is cut down to
the rows and columns that reach a closed cell (:func:`_closed_circuit`). A row step with nothing
else closed also has a closed form (:func:`row_step_conductance`), which is what corrects the bulk
of the readings.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from calibration._record import TwinParameters
from crossbar_ctl.core.circuit import CrossbarCircuit, merge_threshold_ohm

TWIN_RESISTANCES = ("row_wire_resistance_ohm", "col_wire_resistance_ohm", "sense_resistance_ohm",
                    "driver_resistance_ohm")
"""The twin's fitted resistances, in the order of :func:`fit_twin`'s covariance."""

__all__ = ["TWIN_RESISTANCES", "fit_twin", "network_col_current_a", "row_step_conductance", "solve_row_step",
           "twin_bounds_ohm"]


def _closed_circuit(conductance_s: np.ndarray, twin: TwinParameters, *,
                    layout: np.ndarray | None = None, row_connected: np.ndarray | None = None,
                    col_connected: np.ndarray | None = None) -> tuple[CrossbarCircuit, slice, int] | None:
    """The circuit of the closed cells, cut to the wire that carries current.

    Rows above the first closed cell and columns right of the last one are dangling wire (no
    current): left out. The column segments below the last closed row are in series with every
    column's sense resistance: folded into it. Exact, and much smaller for the sparse patterns of
    calibration.

    Parameters
    ----------
    conductance_s : ndarray (rows, cols)
        Cell conductances, S; zero, negative or NaN is open.
    twin : TwinParameters
    layout : ndarray bool (rows, cols), optional
        Cells the cut must keep (default: the closed ones).
    row_connected, col_connected : ndarray of bool, optional
        Lines whose terminal is connected (default all); the others float.

    Returns
    -------
    (circuit, rows, cols) or None
        The circuit, the slice of array rows it keeps and the number of columns it keeps (from
        column 0); None when the layout is empty.
    """
    g = np.asarray(conductance_s, dtype=np.float64)
    g = np.where(g > 0, g, 0.0)
    layout = g > 0 if layout is None else np.asarray(layout, bool)
    kept_rows = np.flatnonzero(layout.any(axis=1))
    if kept_rows.size == 0:
        return None
    first, last = int(kept_rows[0]), int(kept_rows[-1])
    cols = int(np.flatnonzero(layout.any(axis=0))[-1]) + 1
    rows = slice(first, last + 1)
    below_ohm = (g.shape[0] - 1 - last) * twin.col_wire_resistance_ohm
    circuit = CrossbarCircuit(
        g[rows, :cols],
        row_wire_resistance_ohm=twin.row_wire_resistance_ohm,
        col_wire_resistance_ohm=twin.col_wire_resistance_ohm,
        sense_resistance_ohm=twin.sense_resistance_ohm + below_ohm,
        driver_resistance_ohm=twin.driver_resistance_ohm,
        row_connected=None if row_connected is None else np.asarray(row_connected, bool)[rows],
        col_connected=None if col_connected is None else np.asarray(col_connected, bool)[:cols],
    )
    return circuit, rows, cols


def row_step_conductance(current_a: np.ndarray, voltage_v: float, row: np.ndarray | int,
                         twin: TwinParameters, rows: int) -> np.ndarray:
    """Cell conductances of one driven row from its column currents, exactly (closed form).

    Valid when only the driven row's cells are closed (every other cell open): the current of
    cell ``j`` is the current sensed at column ``j``; row segment ``s`` carries the currents of
    cells ``s..cols-1`` and the driver all of them; the cell's column node sits at
    ``I_j * ((rows - i) r_col + R_sense)``.

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
    node_v = (voltage_v - twin.driver_resistance_ohm * segment_a[..., :1]
              - twin.row_wire_resistance_ohm * np.cumsum(segment_a, axis=-1))
    col_ohm = (rows - np.asarray(row))[..., None] * twin.col_wire_resistance_ohm \
        + twin.sense_resistance_ohm
    return current / (node_v - current * col_ohm)


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
    volts = np.atleast_2d(np.asarray(row_voltage_v, dtype=np.float64))
    out = np.zeros((volts.shape[0], g.shape[1]))
    cut = _closed_circuit(g, twin, row_connected=row_connected, col_connected=col_connected)
    if cut is not None:
        circuit, rows, cols = cut
        out[:, :cols] = circuit.currents(volts[:, rows])[1]  # the transfer matrix for many
    return out


def solve_row_step(current_a: np.ndarray, row: int, voltage_v: float, twin: TwinParameters,
                   others_s: np.ndarray, start_s: np.ndarray, *, closed: np.ndarray | None = None,
                   tolerance: float = 1e-9, iterations: int = 20) -> np.ndarray:
    """Cell conductances of a driven row when other cells of the array are closed too.

    Fixed point: scale each cell's conductance by measured over predicted current until the
    network reproduces the readings (every step of the row solved at once). The predictions are
    exact: the network without the row's cells is solved once (:func:`_row_ports`), and the row's
    cells are added to it per step as a small dense system.

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
    cols = others_s.shape[1]
    closed = np.ones(cols, bool) if closed is None else np.asarray(closed, bool)
    g = np.array(np.atleast_2d(start_s), dtype=np.float64)
    mine = np.flatnonzero(closed)
    if mine.size == 0:
        return g
    base = np.where(others_s > 0, others_s, 0.0)
    base[row, mine] = 0.0
    u0, i0, z, t = _row_ports(base, row, mine, voltage_v, twin)
    estimate = np.clip(np.nan_to_num(g[:, mine]), 1e-30, None)
    measured = current[:, mine]
    identity = np.eye(mine.size)
    for _ in range(iterations):
        # Cell currents c of every step: c = X (u0 - Z c), X the step's conductances.
        cell_a = np.linalg.solve(identity + estimate[:, :, None] * z, (estimate * u0)[:, :, None])
        predicted = i0 - cell_a[:, :, 0] @ t.T
        ratio = np.divide(measured, predicted, out=np.ones_like(predicted), where=predicted > 0)
        estimate = estimate * ratio
        if np.max(np.abs(ratio - 1.0)) < tolerance:
            break
    g[:, mine] = estimate
    return g


def _row_ports(base_s: np.ndarray, row: int, cols: np.ndarray, voltage_v: float,
               twin: TwinParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The network without cells ``(row, cols)``, seen from those cells (their ports).

    Port k joins row node ``(row, cols[k])`` to column node ``(row, cols[k])``. One batched solve:
    row ``row`` at ``voltage_v`` (every other line at 0 V), then a unit current through each port
    (into its row node, out of its column node) with every terminal at 0 V.

    Returns
    -------
    u0 : ndarray (ports,)
        Port voltages with the row driven, V.
    i0 : ndarray (ports,)
        Currents sensed at columns ``cols`` with the row driven, A.
    z : ndarray (ports, ports)
        ``z[j, k]``: voltage of port j per ampere through port k, ohm.
    t : ndarray (ports, ports)
        ``t[j, k]``: current sensed at column ``cols[j]`` per ampere through port k.
    """
    layout = base_s > 0
    layout[row, cols] = True
    circuit, rows, kept = _closed_circuit(base_s, twin, layout=layout)
    local = row - rows.start
    ports = np.arange(cols.size)
    volts = np.zeros((cols.size + 1, circuit.rows))
    volts[0, local] = voltage_v
    into_row = np.zeros((cols.size + 1, circuit.rows, kept))
    into_row[1 + ports, local, cols] = 1.0
    solution = circuit.solve(volts, row_node_current_a=into_row, col_node_current_a=-into_row)
    port_v = (solution.row_node_voltage_v[:, local, cols]
              - solution.col_node_voltage_v[:, local, cols])
    sensed_a = solution.col_current_a[:, cols]
    return port_v[0], sensed_a[0], port_v[1:].T, sensed_a[1:].T


def twin_bounds_ohm(conductance_s: np.ndarray | None) -> tuple[float, float]:
    """The physical range of each twin resistance, from the branches read through the wiring.

    Parameters
    ----------
    conductance_s : ndarray (rows, cols, branches) or None
        Apparent branch conductances (each read alone, through the ideal twin: the wiring in
        series), S; NaN or infinite ones are ignored.

    Returns
    -------
    zero_below_ohm : float
        A fitted value below this is 0: the circuit's merge threshold
        (:func:`crossbar_ctl.core.circuit.merge_threshold_ohm`) for the largest cell, every branch
        closed, so any circuit of the array merges such an element anyway.
    upper_ohm : float
        Largest physical value: the smallest apparent branch resistance, which holds at least one
        segment of each wire and the sense resistance in series with its branch.
        ``(0, inf)`` when nothing conducts (or ``conductance_s`` is None).
    """
    if conductance_s is None:
        return 0.0, np.inf
    g = np.asarray(conductance_s, dtype=np.float64)
    g = np.where(np.isfinite(g) & (g > 0), g, 0.0)
    if not g.any():
        return 0.0, np.inf
    return merge_threshold_ohm(g.sum(axis=-1)), 1.0 / g.max()


def fit_twin(residuals, start: TwinParameters, *, conductance_s: np.ndarray | None = None,
             slope_residuals=None) -> tuple[TwinParameters, np.ndarray]:
    """Fit the wire, sense and driver resistances by least squares, within their physical range.

    Parameters
    ----------
    residuals : callable
        ``residuals(twin) -> ndarray``: normalised residuals (reading minus prediction over its
        sigma) of the fit readings for a candidate twin.
    start : TwinParameters
    conductance_s : ndarray (rows, cols, branches), optional
        Apparent branch conductances, S: bound the fit (:func:`twin_bounds_ohm`); without them
        the resistances are only kept >= 0.
    slope_residuals : callable, optional
        A cheaper stand-in for ``residuals`` with the same derivatives to first order (the same
        readings, a model that leaves out a small term): the finite-difference Jacobian (the
        steps' directions and the covariance) is taken on it, the residuals themselves on
        ``residuals``, so the fit still converges on the exact model. Default: ``residuals``.

    Returns
    -------
    twin : TwinParameters
        Each resistance in ``[0, upper_ohm]``, exactly 0 below ``zero_below_ohm``; with
        ``fit_rel_rms`` left to the caller.
    covariance : ndarray (4, 4)
        Covariance of the resistances of :data:`TWIN_RESISTANCES` (row, col, sense, driver), ohm^2.
    """

    def make(p: np.ndarray) -> TwinParameters:
        return TwinParameters(**{name: float(v) for name, v in zip(TWIN_RESISTANCES, p)})

    zero_below_ohm, upper_ohm = twin_bounds_ohm(conductance_s)
    p0 = np.array([getattr(start, name) for name in TWIN_RESISTANCES])
    p0 = np.minimum(p0, 0.5 * upper_ohm)  # start inside the bounds
    last: dict = {}

    def fun(p: np.ndarray) -> np.ndarray:
        last["p"], last["f"] = p.copy(), residuals(make(p))
        return last["f"]

    def jacobian(p: np.ndarray) -> np.ndarray:
        # forward differences as least_squares takes them (diff_step 1e-3 relative, inside the bounds)
        step = 1e-3 * np.abs(p)
        step = np.where(step > 0, step, np.sqrt(np.finfo(float).eps) * np.maximum(1.0, np.abs(p)))
        step = np.where(p + step > upper_ohm, -step, step)
        if slope_residuals is None and np.array_equal(last.get("p"), p):
            at, slope = last["f"], residuals
        else:
            slope = slope_residuals or residuals
            at = slope(make(p))
        return np.stack([(slope(make(p + h * e)) - at) / h for h, e in zip(step, np.eye(p.size))], axis=1)

    result = least_squares(fun, p0, jac=jacobian, bounds=(0.0, upper_ohm),
                           x_scale=np.maximum(p0, min(0.1, 0.5 * upper_ohm)), xtol=1e-10)
    jac = result.jac
    dof = max(result.fun.size - p0.size, 1)
    scale = max(float(result.fun @ result.fun) / dof, 1.0)
    covariance = np.linalg.pinv(jac.T @ jac) * scale
    fitted = np.where(result.x < zero_below_ohm, 0.0, np.minimum(result.x, upper_ohm))
    pinned = fitted == 0.0  # on the physical bound: its spread (one-sided, often degenerate) is not
    covariance[pinned, :] = covariance[:, pinned] = 0.0  # propagated to the branches
    return make(fitted), covariance
