"""Exact nodal analysis of a crossbar with wire, sense and source resistances.

A leaf: it imports only numpy, scipy, threadpoolctl and :mod:`crossbar_ctl.core.errors`, so the
simulator (:mod:`sim`), calibration's wiring twin and the engine all solve the same network with
the same code.

Topology (``rows x cols`` cells)::

    row terminal i --Rd[i]--Rr[i,0]-- r(i,0) --Rr[i,1]-- r(i,1) -- ... -- r(i,cols-1)
                                        |G(i,0)            |G(i,1)
                                      c(i,0)             c(i,1)
                                        |Rc[i,0]           |Rc[i,1]
                                      c(i+1,0)            ...
    c(rows-1,j) --(Rc[rows-1,j] + Rs[j])-- column terminal j (held at col_voltage_v[j], default 0 V)

Row segment ``Rr[i,k]`` leads into cell k of row i (from the row's driver, output resistance
``Rd[i]``, for k = 0); column segment ``Rc[i,j]`` leads from cell i of column j down to the next
cell (to the sense input ``Rs[j]`` for the last). Each is one scalar for every segment (the fast
path: the twin's three parameters) or one value per segment, driver and sense input. A line that
is not connected floats: its terminal is open. Zero resistances are handled exactly by merging
the nodes they join (never a huge conductance); so is every series element (row or column wire
segment, driver or sense resistance) below ``MERGE_RATIO`` (1e-11) times the smallest cell
resistance ``1 / max(conductance_s)`` (1e-8 ohm beside 1 kOhm: no real wire; 1e-300 ohm without
a conducting cell, as injected currents still flow through the wires). A float64
factorisation of wires that much stiffer than the cells is ill-conditioned, numerically singular
below ~1e-16 (SuperLU stops). Merging errs by ~ratio * line length; solving by more as the ratio
falls, most with floating lines. At the threshold both stay below ~2e-9 of the largest current
(measured on 3x4 to 32x32 arrays with floating lines; merging 5e-9 at 64x64); well above it
the solver is exact to ~1e-16, well below it merging is. Nodes that cannot reach any held
terminal (a floating island) carry no current; their voltage is undefined (NaN). Besides the
terminal voltages, a solve may inject currents into any row or column node (ideal current
sources from ground), which gives the response of the array to a port inside it.

Three exact solvers share one front:

- ``structured`` (every wire segment > 0 and no floating island): every row line is
  eliminated exactly (tridiagonal solves), leaving a block tridiagonal system over the column
  nodes, one dense ``cols x cols`` block per array row, coupled by ``-diag(1/Rc[i])``; it is
  factored by block Cholesky (block Thomas), O(rows * cols^3) to prepare and O(rows * cols^2) per vector.
- ``sparse``: the general case, a sparse LU (SuperLU) of the merged nodal matrix.
- iterative (``auto``, where ``structured`` applies, for the first few vectors of a circuit:
  one per 48 columns): conjugate gradients preconditioned by the line blocks (each row and
  column line with its cells' diagonal, tridiagonal), refined in passes on the branch-current
  residual until the correction is below 1e-12 of the voltages; nothing is factored, so a
  circuit solved for one vector costs ~rows * cols * 35 steps instead of ~rows * cols^3. If it
  does not converge, the direct solver takes over; it is factored on the first solve past the
  rule.

The direct solvers refine their solution once (iterative refinement): a float64 factorisation of a
matrix whose wire conductances dwarf the cells' is backward stable only to ~eps * (wire
conductance) * volts of current per node, up to ~1e-11 of the cell currents with 0.01 ohm wires.
The KCL residual of the full nodal system is summed from branch currents (voltage differences
first, good to ~eps of each branch's current), solved with the same factorisation and added:
terminal currents then agree with exact rational arithmetic to ~1e-16 relative on small cases, at
about twice the cost per vector.

For terminal currents alone (no node voltages, no injections), :meth:`CrossbarCircuit.currents`
also offers the terminal transfer matrix (the Schur complement of the nodal equations onto the
terminals): built once, it turns every further batch into one dense product. Where the structured
conditions hold it is reduced directly, by nested dissection in sign-preserving arithmetic
(:mod:`crossbar_ctl.core._circuit_schur`: only sums and products of positive numbers, so exact to
~1e-15 relative with no refinement; 128 x 128 in ~20 ms, 256 x 256 ~0.15 s, 512 x 512 ~1.3 s and
411 MiB); elsewhere (merged wires, islands) from one refined unit solve per terminal. ``auto``
chooses by size and batch (:meth:`CrossbarCircuit.currents`).

Rows are driven at column index 0; columns are sensed at row index ``rows - 1``. Terminal
currents are summed from the cell currents of each line (KCL), which keeps them accurate when the
wire drops are tiny (a source segment's current is a difference of near-equal voltages); on a line
whose terminal element outweighs its cells (``R * sum of the line's conductances > 1``, large
wires) the cells' drops are the tiny ones, and the current is the terminal element's. Solves
work batch-first, ``(batch, rows, cols)``: LAPACK's column-major order for the line solves and
SuperLU. Dense work runs on one BLAS thread (see :class:`_OneBlasThread`).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

from crossbar_ctl.core.errors import ConfigError

__all__ = ["MERGE_RATIO", "CircuitSolution", "CrossbarCircuit", "merge_threshold_ohm"]

# A series element below MERGE_RATIO / max(conductance_s) ohm is ideal (its nodes merge): about
# where merging (error ~ratio * line length) and solving (error grows as the ratio falls, most with
# floating lines) err alike, worst case over 3x4 to 32x32 arrays (module docstring).
MERGE_RATIO = 1e-11
# Without a conducting cell only these merge: node injections still drive current through the
# wires, and the conductances of smaller ones, summed at a node, could overflow float64.
_NEGLIGIBLE_OHM = 1e-300

# The structured solver keeps one dense cols x cols block per row: beyond this, use sparse.
_STRUCTURED_MAX_BYTES = 2**30
# Elementwise work on a batch runs in pieces of about this many values (float64, ~cache size).
_CACHE_VALUES = 2**15
# Row lines up to this length are inverted by LAPACK pttrs, longer ones by vectorised sweeps.
_SHORT_LINE = 32
# The iterative solver (auto, before any factorisation): one vector per this many columns,
# CG to this relative preconditioned residual per pass, passes until the correction is below
# _CONVERGED of the voltages (else the direct solver).
_ITERATIVE_COLS_PER_VECTOR = 48
_CG_TOLERANCE = 1e-8
_CG_STEPS = 500
_OUTER_PASSES = 6
_CONVERGED = 1e-12
# The transfer matrix is built from unit solves in batches of about this many node values per
# array (8 MiB; a refined solve holds ~10 such arrays), at least 16 vectors.
_TRANSFER_VALUES = 2**20
# Reduction onto the terminals (_circuit_schur) up to this many cells (its peak memory: 17, 86,
# 411 MiB planned at 128^2, 256^2, 512^2 cells, ~2 GiB expected here); at once for a first
# vector up to _TRANSFER_AT_ONCE_CELLS (cheaper than one solve there; measured, currents()).
_REDUCTION_MAX_CELLS = 2**20
_TRANSFER_AT_ONCE_CELLS = 32 * 32


class _OneBlasThread:
    """Context manager: one BLAS thread while any solve runs (thread-safe, re-entrant).

    The dense blocks are small; on a shared machine, BLAS threads that spin while another process
    holds a core slow a solve down many times over. Needs ``threadpoolctl`` (else a no-op).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None

    @functools.cached_property
    def _controller(self):
        try:
            import threadpoolctl
        except ImportError:
            return None
        return threadpoolctl.ThreadpoolController()

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0 and self._controller is not None:
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_one_blas_thread = _OneBlasThread()


@dataclass(frozen=True)
class CircuitSolution:
    """Currents (and node voltages) of one batch of solves.

    Attributes
    ----------
    row_current_a : ndarray, float64 (batch, rows)
        Current into the array from each row's source terminal, A (0 for a floating row).
    col_current_a : ndarray, float64 (batch, cols)
        Current out of each column into its sense terminal, A (0 for a floating column).
    row_node_voltage_v : ndarray, float64 (batch, rows, cols)
        Voltage of row node (i, j), V (NaN on a floating island).
    col_node_voltage_v : ndarray, float64 (batch, rows, cols)
        Voltage of column node (i, j), V (NaN on a floating island).
    """

    row_current_a: np.ndarray
    col_current_a: np.ndarray
    row_node_voltage_v: np.ndarray
    col_node_voltage_v: np.ndarray


def _resistance(name: str, value, shape: tuple[int, ...], threshold_ohm: float):
    """A series resistance as solved, ohm: a float, or a read-only array of ``shape``.

    Values below ``threshold_ohm`` read 0 (merged, ideal).
    """
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        value = float(array)
        if not (np.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} = {value!r}: must be finite and >= 0", key=name)
        return value if value >= threshold_ohm else 0.0
    if array.shape != shape:
        raise ConfigError(f"{name} has shape {array.shape}, expected a scalar or {shape}",
                          key=name)
    if not (np.all(np.isfinite(array)) and np.all(array >= 0)):
        raise ConfigError(f"{name} must be finite and >= 0", key=name)
    array = np.where(array >= threshold_ohm, array, 0.0)
    array.flags.writeable = False
    return array


def _at(value, index):
    """``value[index]`` of a per-element resistance; a scalar is every element's."""
    return value if np.ndim(value) == 0 else value[index]


def _divisor(value):
    """What a branch's voltage difference is divided by to give its current: ``value``, with
    ``inf`` on merged (0-ohm) elements (their current is summed per merged group, not here);
    None when every element is merged."""
    if np.ndim(value) == 0:
        return value if value > 0 else None
    if not np.any(value > 0):
        return None
    return np.where(value > 0, value, np.inf)


def merge_threshold_ohm(conductance_s) -> float:
    """Resistance below which a series element of this array is ideal (its nodes merge), ohm.

    Parameters
    ----------
    conductance_s : array_like, float
        Cell conductances, S (or any bound on the largest one).

    Returns
    -------
    float
        ``MERGE_RATIO / max(conductance_s)``, and at least 1e-300 ohm (the only merges without
        a conducting cell: currents injected into nodes still flow through the wires).
    """
    largest_s = float(np.max(conductance_s, initial=0.0))
    return max(MERGE_RATIO / largest_s, _NEGLIGIBLE_OHM) if largest_s > 0 else _NEGLIGIBLE_OHM


def _mask(name: str, value, size: int) -> np.ndarray:
    if value is None:
        return np.ones(size, dtype=bool)
    array = np.asarray(value)
    if array.shape != (size,):
        raise ConfigError(f"{name} has shape {array.shape}, expected ({size},)", key=name)
    return array.astype(bool)


def _voltages(name: str, value, size: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != size:
        raise ConfigError(
            f"{name} has shape {array.shape}, expected ({size},) or (batch, {size})", key=name
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} holds non-finite values", key=name)
    return np.atleast_2d(array)


def _injections(name: str, value, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim not in (2, 3) or array.shape[-2:] != shape:
        raise ConfigError(
            f"{name} has shape {array.shape}, expected {shape} or (batch, {shape[0]}, {shape[1]})",
            key=name,
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} holds non-finite values", key=name)
    return array.reshape((-1, *shape))


def terminal_laplacian_s(circuit: CrossbarCircuit) -> np.ndarray:
    """:func:`crossbar_ctl.core._circuit_schur.terminal_laplacian_s`, imported on first use (numba)."""
    from crossbar_ctl.core._circuit_schur import terminal_laplacian_s as reduce

    return reduce(circuit)


class CrossbarCircuit:
    """A crossbar's nodal equations, prepared once, solved for any batch of line voltages.

    Parameters
    ----------
    conductance_s : array_like, float (rows, cols)
        Conductance of each cell between its row node and its column node, S (finite, >= 0).
    row_wire_resistance_ohm : float or array_like, float (rows, cols)
        Resistance of every row segment, or of each: segment ``[i, k]`` leads into cell k of row
        i, from cell k - 1 (from the row's driver for k = 0), ohm.
    col_wire_resistance_ohm : float or array_like, float (rows, cols)
        Resistance of every column segment, or of each: segment ``[i, j]`` leads from cell i of
        column j to cell i + 1 (to the sense input for i = rows - 1), ohm.
    sense_resistance_ohm : float or array_like, float (cols,)
        Input resistance of every column's sense terminal, or of each, ohm.
    driver_resistance_ohm : float or array_like, float (rows,)
        Output resistance of every row's driver, or of each, in series before segment 0, ohm.
    row_connected, col_connected : array_like of bool (rows,) / (cols,), optional
        Whether each line's terminal is connected (default all); a disconnected line floats.
    method : {"auto", "structured", "sparse"}
        Solver; ``auto`` takes ``structured`` whenever it applies, and solves a circuit's first
        few vectors iteratively before factoring it (module docstring). ``structured`` and
        ``sparse`` factor at once.

    Attributes
    ----------
    row_wire_resistance_ohm, col_wire_resistance_ohm, sense_resistance_ohm, driver_resistance_ohm
        The resistances as solved, float or read-only array as given, ohm: 0 where the given
        value is below ``merge_threshold_ohm``.
    merge_threshold_ohm : float
        ``MERGE_RATIO / max(conductance_s)``, ohm (:func:`merge_threshold_ohm`).

    Raises
    ------
    ConfigError
        A shape, a negative or non-finite value, or ``method="structured"`` where it does not apply.
    """

    def __init__(
        self,
        conductance_s,
        *,
        row_wire_resistance_ohm: float = 0.0,
        col_wire_resistance_ohm: float = 0.0,
        sense_resistance_ohm: float = 0.0,
        driver_resistance_ohm: float = 0.0,
        row_connected=None,
        col_connected=None,
        method: str = "auto",
    ) -> None:
        g = np.array(conductance_s, dtype=np.float64)
        if g.ndim != 2 or 0 in g.shape:
            raise ConfigError(f"conductance_s has shape {g.shape}, expected (rows, cols)",
                              key="conductance_s")
        if not (np.all(np.isfinite(g)) and np.all(g >= 0)):
            raise ConfigError("conductance_s must be finite and >= 0", key="conductance_s")
        self.rows, self.cols = g.shape
        self.conductance_s = g
        self.conductance_s.flags.writeable = False
        # Every series element is either ideal (0: merged) or >= the threshold, sums included.
        self.merge_threshold_ohm = merge_threshold_ohm(g)
        threshold = self.merge_threshold_ohm
        rr = _resistance("row_wire_resistance_ohm", row_wire_resistance_ohm, g.shape, threshold)
        rc = _resistance("col_wire_resistance_ohm", col_wire_resistance_ohm, g.shape, threshold)
        self.row_wire_resistance_ohm, self.col_wire_resistance_ohm = rr, rc
        self.sense_resistance_ohm = _resistance("sense_resistance_ohm", sense_resistance_ohm,
                                                (self.cols,), threshold)
        self.driver_resistance_ohm = _resistance("driver_resistance_ohm", driver_resistance_ohm,
                                                 (self.rows,), threshold)
        # The series elements by place: terminal to cell 0 (rows,), between row nodes
        # (rows, cols - 1), between column nodes (rows - 1, cols), last cell to terminal (cols,);
        # scalars stay scalars (0.0 + rr is rr: the scalar path is unchanged).
        self._source_ohm = self.driver_resistance_ohm + _at(rr, (slice(None), 0))
        self._row_link_ohm = _at(rr, (slice(None), slice(1, None)))
        self._col_link_ohm = _at(rc, slice(None, -1))
        self._end_ohm = _at(rc, -1) + self.sense_resistance_ohm
        self.row_connected = _mask("row_connected", row_connected, self.rows)
        self.col_connected = _mask("col_connected", col_connected, self.cols)
        if method not in ("auto", "structured", "sparse"):
            raise ConfigError(f"method = {method!r}: expected auto, structured or sparse",
                              key="method")
        all_connected = bool(self.row_connected.all() and self.col_connected.all())
        wires = bool(np.all(rr > 0) and np.all(rc > 0))
        small = self.rows * self.cols * self.cols * 8 <= _STRUCTURED_MAX_BYTES
        # Every wire resistive and no floating island: the structured solver and the reduction
        # onto the terminals (the transfer matrix by nested dissection) apply.
        reducible = wires and (all_connected or not _has_island(self))
        structured_ok = reducible and small
        self._reduces = reducible and self.rows * self.cols <= _REDUCTION_MAX_CELLS
        if method == "structured" and not structured_ok:
            raise ConfigError(
                "method = 'structured' needs every wire segment > 0, no floating island and "
                f"rows * cols^2 * 8 bytes <= {_STRUCTURED_MAX_BYTES}",
                key="method",
            )
        self._method, self._structured_ok = method, structured_ok
        self._structured = self._sparse = None
        self._iterative = None
        self._direct_lock = threading.Lock()
        self._solved = 0  # vectors asked of :meth:`solve` so far (the auto rule)
        if method != "auto" or not structured_ok:
            self._direct()
        # Lines whose terminal element outweighs their cells: current from its drop (see solve).
        self._row_by_wire = self.row_connected & (self._source_ohm * g.sum(axis=1) > 1)
        self._col_by_wire = self.col_connected & (self._end_ohm * g.sum(axis=0) > 1)
        # The residual's divisors: scalars, or per element with inf on merged elements.
        self._divisors = tuple(_divisor(ohm) for ohm in (self._row_link_ohm, self._source_ohm,
                                                         self._col_link_ohm, self._end_ohm))
        # The transfer matrices, built on demand (:meth:`currents`): row-driven, column-driven.
        self._transfer_lock = threading.Lock()
        self._transfer: dict[str, np.ndarray] = {}
        self._vectors = 0  # input vectors asked of :meth:`currents` so far (the auto rule)

    @property
    def method(self) -> str:
        """The direct solver, ``"structured"`` or ``"sparse"`` (building it if ``auto`` has not
        needed it yet)."""
        return "structured" if self._direct() is self._structured else "sparse"

    @property
    def factored(self) -> bool:
        """Whether the direct solver is built (``auto`` factors on first need)."""
        return self._structured is not None or self._sparse is not None

    def _direct(self):
        """The direct solver, factored on first need (thread-safe)."""
        with self._direct_lock:
            if self._structured is None and self._sparse is None:
                if self._structured_ok and self._method != "sparse":
                    try:
                        with _one_blas_thread:
                            self._structured = _StructuredSolver(self)
                    except np.linalg.LinAlgError:
                        # Rounding left a block indefinite (lines held only by ~zero leakage).
                        if self._method == "structured":
                            raise ConfigError("method = 'structured': a block is not positive "
                                              "definite at working precision; use "
                                              "method='sparse'", key="method") from None
                if self._structured is None:
                    self._sparse = _SparseSolver(self)
            return self._structured if self._structured is not None else self._sparse

    def _iterative_solver(self, batch: int):
        """The iterative solver when ``auto`` takes it for this batch, else None (thread-safe).

        The rule: while the direct solver is not built, the structured conditions hold (every
        wire segment > 0, no floating island) and the vectors asked of :meth:`solve` (this batch
        included) are at most ``cols / _ITERATIVE_COLS_PER_VECTOR``: a factorisation (~rows *
        cols^3) costs about that many iterative solves (~rows * cols * steps): measured one
        vector 7 ms against 11 ms at 64 x 64, 21 against 65 ms at 128 x 128.
        """
        with self._direct_lock:
            self._solved += batch
            if (self._method != "auto" or not self._structured_ok
                    or self._solved * _ITERATIVE_COLS_PER_VECTOR > self.cols
                    or self._structured is not None
                    or self._sparse is not None):
                return None
            if self._iterative is None:
                try:
                    self._iterative = _IterativeSolver(self)
                except np.linalg.LinAlgError:  # a line ~not positive definite: factor instead
                    self._iterative = False
            return self._iterative or None

    def solve(self, row_voltage_v, col_voltage_v=None, *, row_node_current_a=None,
              col_node_current_a=None) -> CircuitSolution:
        """Solve for a batch of terminal voltages (and node current injections).

        Parameters
        ----------
        row_voltage_v : array_like, float (rows,) or (batch, rows)
            Source voltage of each row, V (ignored on floating rows).
        col_voltage_v : array_like, float (cols,) or (batch, cols), optional
            Voltage each column's sense terminal holds, V (default 0 V, virtual ground).
        row_node_current_a, col_node_current_a : array_like, float (rows, cols) or (batch, rows, cols), optional
            Current injected into each row node / column node from ground, A (default none).
            Injecting into a floating island (no path to a held terminal) raises. A merged
            element (below ``merge_threshold_ohm``, set by the cells) carries it without a drop.

        Returns
        -------
        CircuitSolution
            Terminal currents ``(batch, rows)`` / ``(batch, cols)`` and node voltages.
        """
        vr = _voltages("row_voltage_v", row_voltage_v, self.rows)
        vc = (np.zeros((1, self.cols)) if col_voltage_v is None
              else _voltages("col_voltage_v", col_voltage_v, self.cols))
        shape = (self.rows, self.cols)
        inputs = {"row_voltage_v": vr, "col_voltage_v": vc}
        if row_node_current_a is not None:
            inputs["row_node_current_a"] = _injections("row_node_current_a", row_node_current_a, shape)
        if col_node_current_a is not None:
            inputs["col_node_current_a"] = _injections("col_node_current_a", col_node_current_a, shape)
        batch = max(array.shape[0] for array in inputs.values())
        if any(array.shape[0] not in (1, batch) for array in inputs.values()):
            sizes = ", ".join(f"{name} {array.shape[0]}" for name, array in inputs.items())
            raise ConfigError(f"batch sizes differ: {sizes}", key=list(inputs)[-1])
        vr = np.broadcast_to(vr, (batch, self.rows))
        vc = np.broadcast_to(vc, (batch, self.cols))
        injected = None
        if len(inputs) > 2:  # node injections as (batch, rows, cols)
            zero = np.zeros((1, *shape))
            injected = tuple(
                np.broadcast_to(inputs.get(name, zero), (batch, *shape))
                for name in ("row_node_current_a", "col_node_current_a")
            )
        iterative = self._iterative_solver(batch)
        if iterative is not None:
            with _one_blas_thread:
                nodes = iterative.solve(vr, vc, injected)
            if nodes is not None:
                return self._solution(*nodes, vr, vc, injected, False)
        solver = self._direct()
        island = solver is self._sparse and self._sparse.has_island
        # Node voltages as (batch, rows, cols), then one step of iterative refinement: the
        # factorisations lose ~eps * (wire conductance) * volts of current at every node (the
        # cells' small conductances next to the wires'); the residual, summed from branch currents
        # (differences of voltages first), is good to ~eps * branch current, so the corrected
        # voltages give the terminal currents to ~eps relative.
        with _one_blas_thread:
            row_node, col_node = solver.solve(vr, vc, injected)
            row_res, col_res = self._residual(row_node, col_node, vr, vc, injected, island)
            row_fix, col_fix = solver.correct(row_res, col_res)
            row_node += row_fix
            col_node += col_fix
        return self._solution(row_node, col_node, vr, vc, injected, island)

    def _solution(self, row_node: np.ndarray, col_node: np.ndarray, vr: np.ndarray,
                  vc: np.ndarray, injected: tuple[np.ndarray, np.ndarray] | None,
                  island: bool) -> CircuitSolution:
        """The solution with its terminal currents, from converged node voltages."""
        # Terminal currents by KCL over each line's cells (and injections): accurate even when
        # the wire drop is tiny (a source segment's current is a difference of near-equal volts).
        cell = self.conductance_s * (row_node - col_node)
        if island:
            np.nan_to_num(cell, copy=False, nan=0.0)
        row_sum, col_sum = cell.sum(axis=2), cell.sum(axis=1)
        if injected is not None:
            row_sum = row_sum - injected[0].sum(axis=2)
            col_sum = col_sum + injected[1].sum(axis=1)
        row_current = np.where(self.row_connected, row_sum, 0.0)
        col_current = np.where(self.col_connected, col_sum, 0.0)
        # Large terminal elements: the cells' drops are the near-equal voltages, not the wire's.
        if self._row_by_wire.any():
            rows = self._row_by_wire
            row_current[:, rows] = ((vr[:, rows] - row_node[:, rows, 0])
                                    / _at(self._source_ohm, rows))
        if self._col_by_wire.any():
            cols = self._col_by_wire
            col_current[:, cols] = ((col_node[:, -1, cols] - vc[:, cols])
                                    / _at(self._end_ohm, cols))
        return CircuitSolution(row_current, col_current, row_node, col_node)

    def currents(self, row_voltage_v, col_voltage_v=None, *,
                 method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Terminal currents alone for a batch of terminal voltages, by the fastest exact route.

        ``direct`` solves the nodal equations (:meth:`solve`, refined). ``transfer`` uses the
        terminal transfer matrix (:meth:`transfer_matrix_s`), built once, then one dense
        ``(batch, rows + cols) @ (rows + cols, rows + cols)`` product per batch.

        ``auto`` takes ``transfer`` once it is built, and otherwise by how it would be built:

        - reduced onto the terminals (every wire segment > 0, no floating island, at most
          ``_REDUCTION_MAX_CELLS`` cells): at once for arrays of at most
          ``_TRANSFER_AT_ONCE_CELLS`` cells, else once the vectors asked of this method (this
          batch included) reach 2. Building it costs about one iterative solve (measured 64 x
          64 to 256 x 256: 1.0 to 1.3 of one), less than one direct solve on smaller arrays;
        - from unit solves (merged wires, islands): once the vectors asked reach the ``rows``
          (``+ cols`` with column voltages) unit solves that build it.

        Parameters
        ----------
        row_voltage_v, col_voltage_v : array_like, float
            As :meth:`solve`, V.
        method : {"auto", "direct", "transfer"}
            Route (see above).

        Returns
        -------
        row_current_a : ndarray, float64 (batch, rows)
            As :attr:`CircuitSolution.row_current_a`, A.
        col_current_a : ndarray, float64 (batch, cols)
            As :attr:`CircuitSolution.col_current_a`, A.
        """
        if method not in ("auto", "direct", "transfer"):
            raise ConfigError(f"method = {method!r}: expected auto, direct or transfer",
                              key="method")
        vr = _voltages("row_voltage_v", row_voltage_v, self.rows)
        vc = (np.zeros((1, self.cols)) if col_voltage_v is None
              else _voltages("col_voltage_v", col_voltage_v, self.cols))
        batch = max(vr.shape[0], vc.shape[0])
        if min(vr.shape[0], vc.shape[0]) not in (1, batch):
            raise ConfigError(f"batch sizes differ: row_voltage_v {vr.shape[0]}, col_voltage_v "
                              f"{vc.shape[0]}", key="col_voltage_v")
        # Floating lines' voltages are ignored, as by the solve.
        columns = bool(np.any(vc[:, self.col_connected]))
        with self._transfer_lock:
            self._vectors += batch
            asked = self._vectors
        if method == "auto":
            built = "row" in self._transfer and (not columns or "col" in self._transfer)
            if self._reduces:
                due = self.rows * self.cols <= _TRANSFER_AT_ONCE_CELLS or asked >= 2
            else:
                due = asked >= self.rows + (self.cols if columns else 0)
            method = "transfer" if built or due else "direct"
        if method == "direct":
            solution = self.solve(vr, vc)
            return solution.row_current_a, solution.col_current_a
        row_part = self._transfer_part("row")
        col_part = self._transfer_part("col") if columns else None
        with _one_blas_thread:
            out = np.broadcast_to(vr, (batch, self.rows)) @ row_part
            if columns:
                out += np.broadcast_to(vc, (batch, self.cols)) @ col_part
        return out[:, : self.rows], np.ascontiguousarray(out[:, self.rows:])

    @property
    def transfer_ready(self) -> bool:
        """Whether the row-driven transfer matrix is built (:meth:`currents` then multiplies)."""
        return "row" in self._transfer

    def transfer_matrix_s(self) -> np.ndarray:
        """The terminal transfer matrix: every terminal current per volt at every terminal, S.

        Row ``k`` holds the currents ``[row_current_a, col_current_a]`` (as :meth:`solve`) for
        1 V at terminal ``k`` (rows, then columns) and 0 V at every other; so the currents of
        any terminal voltages ``[vr, vc]`` are ``[vr, vc] @ Y``. It is the Schur complement of
        the nodal equations onto the terminals, built once: reduced by nested dissection where
        every wire segment is resistive and no island floats (module docstring), else each row
        from one refined solve, in batches of at least 16 unit vectors and about 8 MiB per node
        array. Both are exact to ~1e-15 relative; rows and columns of floating lines are 0.

        Returns
        -------
        ndarray, float64 (rows + cols, rows + cols)
            A new array (the circuit keeps its own).
        """
        return np.concatenate([self._transfer_part("row"), self._transfer_part("col")])

    def _transfer_part(self, part: str) -> np.ndarray:
        """Rows of :meth:`transfer_matrix_s` for the row (``"row"``) or column terminals."""
        with self._transfer_lock:
            if part not in self._transfer and self._reduces:
                try:
                    with _one_blas_thread:
                        weights = terminal_laplacian_s(self)
                except np.linalg.LinAlgError:  # ~no path left by rounding: unit solves below
                    weights = None
                if weights is not None:
                    # Current into each terminal per volt on each: the Laplacian diag(sum) - W;
                    # column currents are counted out of the array (into the sense input).
                    matrix = np.diag(weights.sum(axis=1)) - weights
                    matrix[:, self.rows:] *= -1.0
                    for name, rows in (("row", slice(None, self.rows)),
                                       ("col", slice(self.rows, None))):
                        self._transfer[name] = matrix[rows]
                        self._transfer[name].flags.writeable = False
            if part not in self._transfer:
                units = self.rows if part == "row" else self.cols
                live = self.row_connected if part == "row" else self.col_connected
                matrix = np.zeros((units, self.rows + self.cols))
                step = max(16, _TRANSFER_VALUES // (self.rows * self.cols))
                for start in np.arange(0, units, step):
                    unit = np.eye(units)[start : start + step]
                    zero = np.zeros((unit.shape[0], self.cols if part == "row" else self.rows))
                    solution = self.solve(unit, zero) if part == "row" else self.solve(zero, unit)
                    matrix[start : start + step, : self.rows] = solution.row_current_a
                    matrix[start : start + step, self.rows :] = solution.col_current_a
                matrix[~live] = 0.0  # a floating line's voltage drives nothing
                matrix.flags.writeable = False
                self._transfer[part] = matrix
            return self._transfer[part]

    def _residual(self, row_node: np.ndarray, col_node: np.ndarray, vr: np.ndarray,
                  vc: np.ndarray, injected: tuple[np.ndarray, np.ndarray] | None,
                  island: bool) -> tuple[np.ndarray, np.ndarray]:
        """KCL residual (current into each row / column node), ``(batch, rows, cols)`` each.

        Summed from branch currents ``(v_a - v_b) / R``: a wire's near-equal node voltages
        subtract exactly, so each term is good to ~eps of the current it carries (a product
        ``A @ v`` would lose ~eps * |A| * |v|, the size of the error being corrected). 0-ohm
        elements are left out: the nodes they merge share one voltage and the sparse solver sums
        their residuals per merged group. Island nodes (NaN) count as 0 V: no finite element joins
        them to a live node. Runs in cache-sized pieces of the batch.
        """
        if island:
            row_node, col_node = np.nan_to_num(row_node), np.nan_to_num(col_node)
        row_res, col_res = np.empty_like(row_node), np.empty_like(col_node)
        step = max(1, _CACHE_VALUES // (self.rows * self.cols))
        for k in range(0, row_node.shape[0], step):
            part = slice(k, k + step)
            injected_part = None if injected is None else (injected[0][part], injected[1][part])
            self._residual_part(row_node[part], col_node[part], vr[part], vc[part],
                                injected_part, row_res[part], col_res[part])
        return row_res, col_res

    def _residual_part(self, row_node, col_node, vr, vc, injected, row_res, col_res) -> None:
        """:meth:`_residual` of one piece of the batch, into ``row_res`` and ``col_res``."""
        row_link, source_ohm, col_link, end_ohm = self._divisors
        np.subtract(row_node, col_node, out=col_res)
        col_res *= self.conductance_s  # cell currents
        np.negative(col_res, out=row_res)
        if injected is not None:
            row_res += injected[0]
            col_res += injected[1]
        if row_link is not None and self.cols > 1:
            wire = row_node[:, :, :-1] - row_node[:, :, 1:]
            wire /= row_link
            row_res[:, :, :-1] -= wire
            row_res[:, :, 1:] += wire
        if source_ohm is not None:
            source = vr - row_node[:, :, 0]
            source /= source_ohm
            source[:, ~self.row_connected] = 0.0
            row_res[:, :, 0] += source
        if col_link is not None and self.rows > 1:
            wire = col_node[:, :-1] - col_node[:, 1:]
            wire /= col_link
            col_res[:, :-1] -= wire
            col_res[:, 1:] += wire
        if end_ohm is not None:
            end = col_node[:, -1] - vc
            end /= end_ohm
            end[:, ~self.col_connected] = 0.0
            col_res[:, -1] -= end


def _has_island(circuit: CrossbarCircuit) -> bool:
    """Whether some line floats without a cell path to a connected line (resistive wires)."""
    rows, cols = circuit.rows, circuit.cols
    i, j = np.nonzero(circuit.conductance_s)
    lines = sp.coo_matrix((np.ones(i.size), (i, rows + j)), shape=(rows + cols, rows + cols))
    count, component = csgraph.connected_components(lines, directed=False)
    held = np.zeros(count, dtype=bool)
    held[component[np.concatenate([circuit.row_connected, circuit.col_connected])]] = True
    return not held.all()


class _SparseSolver:
    """General nodal analysis: ideal elements merge nodes, SuperLU on the rest."""

    def __init__(self, circuit: CrossbarCircuit) -> None:
        rows, cols = circuit.rows, circuit.cols
        n = rows * cols
        self.n = n
        self.grid_shape = (rows, cols)
        grid = np.arange(n).reshape(rows, cols)
        row_node, col_node = grid, n + grid
        row_term = 2 * n + np.arange(rows)
        col_term = 2 * n + rows + np.arange(cols)
        size = 2 * n + rows + cols
        live_rows = np.flatnonzero(circuit.row_connected)
        live_cols = np.flatnonzero(circuit.col_connected)

        def ohm(value, shape, index=slice(None)):
            return np.broadcast_to(value, shape)[index].ravel()

        # Every wire element: (nodes a, nodes b, resistance in ohm), one value per element.
        wires = [
            (row_term[live_rows], row_node[live_rows, 0],
             ohm(circuit._source_ohm, (rows,), live_rows)),
            (row_node[:, :-1].ravel(), row_node[:, 1:].ravel(),
             ohm(circuit._row_link_ohm, (rows, cols - 1))),
            (col_node[:-1, :].ravel(), col_node[1:, :].ravel(),
             ohm(circuit._col_link_ohm, (rows - 1, cols))),
            (col_node[-1, live_cols], col_term[live_cols],
             ohm(circuit._end_ohm, (cols,), live_cols)),
        ]
        a_ideal = np.concatenate([a[r == 0] for a, _, r in wires])
        b_ideal = np.concatenate([b[r == 0] for _, b, r in wires])
        merge = sp.coo_matrix((np.ones(a_ideal.size), (a_ideal, b_ideal)), shape=(size, size))
        _, label = csgraph.connected_components(merge, directed=False)
        # Finite elements in merged-group space.
        a = [row_node.ravel()]
        b = [col_node.ravel()]
        g = [circuit.conductance_s.ravel()]
        for ea, eb, r in wires:
            finite = r > 0
            a.append(ea[finite])
            b.append(eb[finite])
            g.append(1.0 / r[finite])
        a, b, g = label[np.concatenate(a)], label[np.concatenate(b)], np.concatenate(g)
        keep = (a != b) & (g > 0)
        a, b, g = a[keep], b[keep], g[keep]
        groups = label.max() + 1
        lap = sp.coo_matrix(
            (np.concatenate([g, g, -g, -g]),
             (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]))),
            shape=(groups, groups),
        ).tocsr()
        # Held groups: the terminals of connected lines (each group holds at most one).
        held_row, held_col = label[row_term[live_rows]], label[col_term[live_cols]]
        held = np.zeros(groups, dtype=bool)
        held[held_row] = True
        held[held_col] = True
        # A floating island: a component of the finite-element graph with no held group.
        _, component = csgraph.connected_components(lap, directed=False)
        live_component = np.zeros(component.max() + 1, dtype=bool)
        live_component[component[held]] = True
        live = live_component[component]
        # Groups that stand for real nodes but are not reachable are islands.
        node_groups = np.unique(label[: 2 * n])
        self.has_island = bool(np.any(~live[node_groups]))
        self._island_node = ~live[label[: 2 * n]]
        unknown = np.flatnonzero(live & ~held)
        self.unknown, self.label, self.groups = unknown, label, groups
        self.live_rows, self.live_cols = live_rows, live_cols
        self._held = np.concatenate([held_row, held_col])
        coupling = lap[unknown]
        self._a_uh = coupling[:, self._held].tocsr()
        # Sums node currents into the unknown groups (ideal elements' currents cancel inside).
        position = np.full(groups, -1)
        position[unknown] = np.arange(unknown.size)
        nodes = np.flatnonzero(position[label[: 2 * n]] >= 0)
        self._gather = sp.csr_matrix(
            (np.ones(nodes.size), (position[label[nodes]], nodes)), shape=(unknown.size, 2 * n)
        )
        # Symmetric positive definite: a symmetric fill-reducing ordering.
        self._lu = (spla.splu(coupling[:, unknown].tocsc(), permc_spec="MMD_AT_PLUS_A")
                    if unknown.size else None)

    def solve(self, vr: np.ndarray, vc: np.ndarray,
              injected: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Node voltages ``(batch, rows, cols)`` (NaN on islands), batch-first throughout."""
        batch = vr.shape[0]
        v = np.full((batch, self.groups), np.nan)
        held_v = np.concatenate([vr[:, self.live_rows], vc[:, self.live_cols]], axis=1)
        v[:, self._held] = held_v
        rhs = -(self._a_uh @ held_v.T)  # (unknown, batch)
        if injected is not None:
            node_current = np.concatenate([injected[0].reshape(batch, self.n),
                                           injected[1].reshape(batch, self.n)], axis=1)
            stranded = self._island_node & np.any(node_current != 0, axis=0)
            if stranded.any():
                key = "row_node_current_a" if stranded[: self.n].any() else "col_node_current_a"
                raise ConfigError(f"{key}: current injected into a floating island (a node with "
                                  "no path to a connected terminal)", key=key)
            rhs = rhs + self._gather @ node_current.T
        if self.unknown.size:
            v[:, self.unknown] = self._lu.solve(np.asfortranarray(rhs)).reshape(-1, batch).T
        return self._nodes(v)

    def correct(self, row_res: np.ndarray, col_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node voltage corrections for node residual currents (0 on held groups and islands)."""
        batch = row_res.shape[0]
        fix = np.zeros((batch, self.groups))
        if self.unknown.size:
            residual = np.concatenate([row_res.reshape(batch, self.n),
                                       col_res.reshape(batch, self.n)], axis=1)
            rhs = np.asfortranarray(self._gather @ residual.T)
            fix[:, self.unknown] = self._lu.solve(rhs).reshape(-1, batch).T
        return self._nodes(fix)

    def _nodes(self, group_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column node values ``(batch, rows, cols)`` from ``(batch, groups)`` values."""
        node = group_v[:, self.label[: 2 * self.n]].reshape(-1, 2, *self.grid_shape)
        return np.ascontiguousarray(node[:, 0]), np.ascontiguousarray(node[:, 1])


class _IterativeSolver:
    """Conjugate gradients preconditioned by the line blocks, refined to convergence.

    The preconditioner is the nodal matrix without the cell couplings: each row line (its wire,
    its source, its cells' diagonal) and each column line (wire, end, cells' diagonal), solved
    as tridiagonal systems. Each outer pass solves ``A e = r`` for the residual ``r`` of the
    iterate, summed from branch currents (:meth:`CrossbarCircuit._residual`, good to ~eps of
    each branch's current), by CG to ``_CG_TOLERANCE`` of its preconditioned norm; passes
    repeat until the correction is below ``_CONVERGED`` of the voltages (three passes: the
    solution, a correction of ~1e-8, then one below 1e-12). Nothing to factor: 128 x 128 takes
    ~35 CG steps in all, ~15 ms a vector.
    """

    def __init__(self, circuit: CrossbarCircuit) -> None:
        rows, cols = circuit.rows, circuit.cols
        g = circuit.conductance_s
        g_r, g_c = 1.0 / circuit._row_link_ohm, 1.0 / circuit._col_link_ohm
        row_diag = g + _chain_degree(g_r, (rows, cols), axis=1)
        row_diag[:, 0] += np.where(circuit.row_connected, 1.0 / circuit._source_ohm, 0.0)
        self.row_lines = _TridiagonalLines(row_diag, -g_r)
        col_diag = g + _chain_degree(g_c, (rows, cols), axis=0)
        col_diag[-1] += np.where(circuit.col_connected, 1.0 / circuit._end_ohm, 0.0)
        col_off = np.broadcast_to(g_c, (rows - 1, cols)).T if np.ndim(g_c) else g_c
        self.col_lines = _TridiagonalLines(np.ascontiguousarray(col_diag.T),
                                           -np.ascontiguousarray(col_off))
        self.circuit = circuit

    def _precondition(self, row_res: np.ndarray, col_res: np.ndarray):
        col = np.swapaxes(col_res, 1, 2).copy()  # column lines, batch-first (solved in place)
        col = np.ascontiguousarray(np.swapaxes(self.col_lines.solve(col), 1, 2))
        return self.row_lines.solve(row_res.copy()), col

    def solve(self, vr: np.ndarray, vc: np.ndarray,
              injected: tuple[np.ndarray, np.ndarray] | None):
        """Converged node voltages ``(batch, rows, cols)``, or None if it did not converge."""
        circuit = self.circuit
        batch = vr.shape[0]
        row_node = np.zeros((batch, circuit.rows, circuit.cols))
        col_node = np.zeros_like(row_node)
        for _ in range(_OUTER_PASSES):
            row_res, col_res = circuit._residual(row_node, col_node, vr, vc, injected, False)
            row_fix, col_fix = self._cg(row_res, col_res)
            row_node += row_fix
            col_node += col_fix
            size = max(np.abs(row_node).max(), np.abs(col_node).max())
            if not np.isfinite(size):
                return None
            if max(np.abs(row_fix).max(), np.abs(col_fix).max()) <= _CONVERGED * size:
                return row_node, col_node
        return None

    def _cg(self, row_res: np.ndarray, col_res: np.ndarray):
        """``A^-1`` of node residual currents, to ``_CG_TOLERANCE``, batch-first."""
        circuit = self.circuit
        batch = row_res.shape[0]
        zero_r, zero_c = np.zeros((batch, circuit.rows)), np.zeros((batch, circuit.cols))

        def dot(a, b, c, d):
            return (np.einsum("bij,bij->b", a, b) + np.einsum("bij,bij->b", c, d))[:, None, None]

        x_r, x_c = np.zeros_like(row_res), np.zeros_like(col_res)
        r_r, r_c = row_res.copy(), col_res.copy()
        z_r, z_c = self._precondition(r_r, r_c)
        p_r, p_c = z_r.copy(), z_c.copy()
        rz = dot(r_r, z_r, r_c, z_c)
        stop = _CG_TOLERANCE**2 * rz
        active = rz > stop  # per vector; a converged one stops moving (its steps would be noise)
        for _ in range(_CG_STEPS):
            if not active.any():
                break
            # A p is minus the residual of p with every terminal at 0 V.
            q_r, q_c = circuit._residual(p_r, p_c, zero_r, zero_c, None, False)
            pq = -dot(p_r, q_r, p_c, q_c)
            alpha = np.divide(rz, pq, out=np.zeros_like(rz), where=active & (pq > 0))
            x_r += alpha * p_r
            x_c += alpha * p_c
            r_r += alpha * q_r
            r_c += alpha * q_c
            z_r, z_c = self._precondition(r_r, r_c)
            rz_next = dot(r_r, z_r, r_c, z_c)
            active &= rz_next > stop
            beta = np.divide(rz_next, rz, out=np.zeros_like(rz), where=active)
            rz = rz_next
            p_r = z_r + beta * p_r
            p_c = z_c + beta * p_c
        return x_r, x_c


class _StructuredSolver:
    """Row lines eliminated exactly, block Cholesky (block Thomas) over the column nodes.

    With ``K_i`` the tridiagonal matrix of row line i (its wire, its source, its cells ``D_i``),
    the column nodes obey a block tridiagonal system with blocks
    ``S_ii = A_i + D_i - D_i K_i^-1 D_i`` (``A_i``: the column wires at array row i) and
    ``S_i,i+1 = -I / Rc``. The prepared state is ``T_i^-1`` per array row, where
    ``T_i = S_ii - T_{i-1}^-1 / Rc^2`` (the Schur complements of block Cholesky).
    """

    def __init__(self, circuit: CrossbarCircuit) -> None:
        rows, cols = circuit.rows, circuit.cols
        g = circuit.conductance_s
        # Link conductances: scalars, or per link (rows, cols - 1) / (rows - 1, cols).
        g_r = 1.0 / circuit._row_link_ohm
        g_c = 1.0 / circuit._col_link_ohm
        # Coupling of column block i to block i + 1 (a broadcast view when it is one scalar).
        self.g_c = np.broadcast_to(g_c, (rows - 1, cols))
        self.g_source = np.where(circuit.row_connected, 1.0 / circuit._source_ohm, 0.0)
        self.g_end = np.where(circuit.col_connected, 1.0 / circuit._end_ohm, 0.0)
        # Row lines: K_i = wire chain + source + cells, factored together (LDL^T).
        k_diag = g + _chain_degree(g_r, (rows, cols), axis=1)
        k_diag[:, 0] += self.g_source
        self.row_lines = _TridiagonalLines(k_diag, -g_r)
        # Every K_i^-1 (rows, cols, cols); overwritten in place by T_i^-1 below.
        blocks = self.row_lines.inverses()
        # Source transfer: column-node injection per volt on row i.
        self.source_gain = self.g_source[:, None] * g * blocks[:, :, 0]
        self.cell = g
        col_degree = np.broadcast_to(_chain_degree(g_c, (rows, cols), axis=0), (rows, cols))
        for i in range(rows):
            block = blocks[i]
            block *= -g[i][:, None]
            block *= g[i][None, :]
            diagonal = block.reshape(-1)[:: cols + 1]
            diagonal += g[i] + col_degree[i]
            if i == rows - 1:
                diagonal += self.g_end
            if i > 0:  # - C^T T^-1 C with C = -diag(g_c[i - 1]); one scalar: g_c**2 T^-1
                link = self.g_c[i - 1]
                block -= np.multiply.outer(link, link) * blocks[i - 1]
            blocks[i] = _spd_inverse(block)
        self.t_inverse = blocks

    def solve(self, vr: np.ndarray, vc: np.ndarray,
              injected: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Node voltages ``(batch, rows, cols)``, batch-first (LAPACK's order for ``pttrs``)."""
        # Right-hand side per column block: (batch, rows, cols).
        f = self.source_gain * vr[:, :, None]
        f[:, -1] += self.g_end * vc
        if injected is not None:  # column nodes directly, row nodes through D_i K_i^-1
            f += injected[1]
            f += self.cell * self.row_lines.solve(np.array(injected[0]))
        c = self._sweep(f)
        r = self.cell * c
        r[:, :, 0] += self.g_source * vr
        if injected is not None:
            r += injected[0]
        return self.row_lines.solve(r), c

    def correct(self, row_res: np.ndarray, col_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node voltage corrections for node residual currents (terminals held at 0 V)."""
        row_fix = self.row_lines.solve(row_res.copy())  # K^-1 residual, reused below
        row_fix *= self.cell
        row_fix += col_res
        c = self._sweep(row_fix)
        r = self.cell * c
        r += row_res
        return self.row_lines.solve(r), c

    def _sweep(self, f: np.ndarray) -> np.ndarray:
        """Column node voltages for block right-hand sides ``f`` ``(batch, rows, cols)``, in place.

        Block Thomas: ``T_i^-1`` is symmetric, so each product is ``f_i @ T_i^-1`` batch-first.
        """
        rows = self.t_inverse.shape[0]
        g_c, t_inv = self.g_c, self.t_inverse
        for i in range(1, rows):
            f[:, i] += g_c[i - 1] * (f[:, i - 1] @ t_inv[i - 1])
        c = f
        c[:, -1] = f[:, -1] @ t_inv[-1]
        for i in range(rows - 2, -1, -1):
            c[:, i] = (f[:, i] + g_c[i] * c[:, i + 1]) @ t_inv[i]
        return c


def _chain_degree(link_s, shape: tuple[int, int], axis: int):
    """Sum of the link conductances at each node of lines along ``axis`` of ``shape``, S.

    ``link_s`` is one scalar (then ``(length,)`` along ``axis``, ``2 link_s`` inside a line, bit
    for bit the sum of two links) or one value per link (then ``shape``).
    """
    length = shape[axis]
    if np.ndim(link_s) == 0:
        degree = np.full(length, 2.0)
        degree[0] -= 1
        degree[-1] -= 1
        return (degree * link_s)[:, None] if axis == 0 else degree * link_s
    degree = np.zeros(shape)
    inner, outer = [slice(None)] * 2, [slice(None)] * 2
    inner[axis], outer[axis] = slice(1, None), slice(None, -1)
    degree[tuple(inner)] += link_s
    degree[tuple(outer)] += link_s
    return degree


def _spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix from its lower triangle (Cholesky)."""
    factor, info = scipy.linalg.lapack.dpotrf(matrix, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"block not positive definite (potrf info {info})")
    inverse, info = scipy.linalg.lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"block inverse failed (potri info {info})")
    # potri fills the lower triangle only: mirror it onto the upper one.
    upper, lower = _mirror_indices(inverse.shape[0])
    if not inverse.flags.c_contiguous:  # LAPACK's (Fortran) order: the flat view is transposed
        upper, lower = lower, upper
    flat = inverse.ravel(order="K")  # a view of the contiguous result
    flat[upper] = flat[lower]
    return inverse


@functools.lru_cache(maxsize=8)
def _mirror_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the strict upper triangle of an ``(n, n)`` matrix and of their mirrors."""
    i, j = np.triu_indices(n, 1)
    return i * n + j, j * n + i


class _TridiagonalLines:
    """Symmetric positive definite tridiagonal systems, one per line, with one off-diagonal value.

    The lines are stacked into one block-diagonal tridiagonal matrix (zero coupling between
    consecutive lines) and factored by LAPACK ``pttrf`` (``L D L^T``); ``pttrs`` then solves every
    line at once.

    Parameters
    ----------
    diag : ndarray, float64 (lines, n)
        Diagonal of each line's matrix.
    off : float or ndarray, float64 (lines, n - 1)
        Off-diagonal of every line's matrix (one value, or one per link).

    Raises
    ------
    numpy.linalg.LinAlgError
        A line is not positive definite at working precision.
    """

    def __init__(self, diag: np.ndarray, off: float) -> None:
        lines, n = diag.shape
        coupling = np.zeros((lines, n))  # the last node of a line is not coupled to the next
        coupling[:, :-1] = off
        self._single = lines * n == 1  # the LAPACK wrappers reject an empty off-diagonal
        if self._single:
            d, e, info = diag.ravel().copy(), None, int(not diag[0, 0] > 0)
        else:
            d, e, info = scipy.linalg.lapack.dpttrf(diag.ravel(), coupling.ravel()[:-1])
        if info != 0:
            raise np.linalg.LinAlgError(f"line not positive definite (pttrf info {info})")
        self.lines, self.n, self._d, self._e = lines, n, d, e

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solution ``(batch, lines, n)`` of every line for ``rhs`` ``(batch, lines, n)``.

        Overwrites ``rhs`` when it is C-contiguous (batch-first is LAPACK's column-major order).
        """
        if self._single:
            return rhs / self._d[0]
        batch = rhs.shape[0]
        return self._pttrs(rhs.reshape(batch, self.lines * self.n).T).T.reshape(rhs.shape)

    def _pttrs(self, b: np.ndarray) -> np.ndarray:
        """``pttrs`` on ``b`` ``(lines * n, k)`` (overwritten when Fortran-contiguous)."""
        x, info = scipy.linalg.lapack.dpttrs(self._d, self._e, b, overwrite_b=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"tridiagonal solve failed (pttrs info {info})")
        return x

    def inverses(self) -> np.ndarray:
        """Every line's inverse, ``(lines, n, n)``.

        Short lines: ``pttrs`` on the unit vectors (few calls). Long lines: the same ``L D L^T``
        sweeps, one node at a time over every line and unit vector at once, in place, which
        vectorises where ``pttrs`` (one right-hand side after another) does not.
        """
        lines, n = self.lines, self.n
        if n <= _SHORT_LINE:
            if self._single:
                return np.full((1, 1, 1), 1.0 / self._d[0])
            identity = np.zeros((lines * n, n), order="F")
            identity[np.arange(lines * n), np.tile(np.arange(n), lines)] = 1.0
            # C order: the caller updates each block's diagonal through a flat view.
            return np.ascontiguousarray(self._pttrs(identity).reshape(lines, n, n))
        out = np.zeros((lines, n, n))
        out[:, np.arange(n), np.arange(n)] = 1.0
        pivot = self._d.reshape(lines, n)
        multiplier = np.append(self._e, 0.0).reshape(lines, n)[:, :, None]
        for j in range(1, n):  # L y = b
            out[:, j] -= multiplier[:, j - 1] * out[:, j - 1]
        out /= pivot[:, :, None]  # D z = y
        for j in range(n - 2, -1, -1):  # L^T x = z
            out[:, j] -= multiplier[:, j] * out[:, j + 1]
        return out
