"""``crossbar bench circuit``: prepare and solve times of the exact circuit solver.

For each size, a :class:`PhysicalArray` with wires and ``branches`` branches per cell gets random
masks; its circuit is prepared (timed: ``factor_s``) and solved for a batch of input vectors
(timed, divided by the batch: ``solve_s`` per vector), beside the ideal ``G^T V`` of the same
batch (``ideal_s`` per vector, one BLAS thread as in the solver). Peak memory is measured in a
separate, untimed pass with ``tracemalloc`` (numpy allocations included).

In the same run, the reference (:data:`REFERENCE`): a plain SuperLU solve of the same nodal
system, the way one would write it with scipy alone. Assemble the sparse nodal matrix of the row
and column nodes (terminals held), ``scipy.sparse.linalg.splu`` it once with its defaults
(``ref_factor_s``, assembly included), then ``lu.solve`` the whole batch and take the column
currents (``ref_solve_s`` per vector). Ratios are reference time over ours (> 1: ours is faster).

Each of our methods is timed beside it: ``direct`` (:meth:`CrossbarCircuit.solve`, refined),
``iterative`` (one vector on a fresh circuit, which ``auto`` solves by preconditioned conjugate
gradients without factoring where the rule allows, from 48 columns) and ``transfer``
(:meth:`CrossbarCircuit.currents`: ``rows`` refined unit solves build the transfer matrix once,
then one matrix product per batch). The batch ratios compare what the batch costs in
all, prepare included: ``ref_factor_s + batch * ref_solve_s`` over ours; ``auto`` is the method
:meth:`CrossbarCircuit.currents` picks for this batch on a fresh circuit.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from crossbar_ctl.core.circuit import CrossbarCircuit, _one_blas_thread
from crossbar_ctl.core.config import SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim._array import PhysicalArray

__all__ = ["DEFAULT_SIZES", "REFERENCE", "bench_circuit"]

DEFAULT_SIZES = (32, 64, 128, 256)
REFERENCE = ("scipy.sparse.linalg.splu (SuperLU, default options) of the assembled nodal matrix: "
             "one factorisation, then lu.solve of the whole batch")
_MIB = 2.0**20


def _best_time(function, repeats: int) -> float:
    return _best_times([function], repeats)[0]


def _best_times(functions, repeats: int) -> list[float]:
    """Best time of each function over ``repeats`` rounds in which they take turns (so that on a
    shared machine each sees the same load)."""
    best = [np.inf] * len(functions)
    for _ in range(repeats):
        for k, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


class _SuperLUReference:
    """The nodal system of the bench's array, assembled and solved with plain scipy SuperLU.

    Unknowns: row node ``(i, j)`` at ``i * cols + j``, column node ``(i, j)`` at ``n + i * cols +
    j``; the row sources (through one row segment) and the grounded sense ends (through a column
    segment and the sense resistance) are held terminals, moved to the right-hand side.
    """

    def __init__(self, conductance_s: np.ndarray, config: SimArrayConfig) -> None:
        rows, cols = conductance_s.shape
        n = rows * cols
        g_row = 1.0 / config.row_wire_resistance_ohm
        g_col = 1.0 / config.col_wire_resistance_ohm
        g_end = 1.0 / (config.col_wire_resistance_ohm + config.sense_resistance_ohm)
        grid = np.arange(n).reshape(rows, cols)
        a = [grid.ravel(), grid[:, :-1].ravel(), n + grid[:-1].ravel()]
        b = [n + grid.ravel(), grid[:, 1:].ravel(), n + grid[1:].ravel()]
        g = [conductance_s.ravel(), np.full((cols - 1) * rows, g_row),
             np.full((rows - 1) * cols, g_col)]
        a, b, g = np.concatenate(a), np.concatenate(b), np.concatenate(g)
        diagonal = np.zeros(2 * n)
        np.add.at(diagonal, a, g)
        np.add.at(diagonal, b, g)
        diagonal[grid[:, 0]] += g_row  # source segments
        diagonal[n + grid[-1]] += g_end  # column ends, sense terminals at 0 V
        matrix = sp.coo_matrix(
            (np.concatenate([diagonal, -g, -g]),
             (np.concatenate([np.arange(2 * n), a, b]), np.concatenate([np.arange(2 * n), b, a]))),
            shape=(2 * n, 2 * n),
        )
        self._lu = spla.splu(matrix.tocsc())
        self._source, self._end = grid[:, 0], n + grid[-1]
        self._g_row, self._g_end = g_row, g_end
        self._size = 2 * n

    def col_current_a(self, row_voltage_v: np.ndarray) -> np.ndarray:
        """Current out of each column into its grounded sense end, ``(batch, cols)``, A."""
        rhs = np.zeros((self._size, row_voltage_v.shape[0]))
        rhs[self._source] = self._g_row * row_voltage_v.T
        voltage = self._lu.solve(rhs)
        return (self._g_end * voltage[self._end]).T


def bench_circuit(
    sizes: Sequence[int] = DEFAULT_SIZES, *, branches: int = 8, batch: int = 64, seed: int = 0,
    budget_s: float = 2.0, compare_sparse: bool = False,
) -> list[dict]:
    """Time the solver on square arrays.

    Parameters
    ----------
    sizes : sequence of int
        Array sizes (rows = cols).
    branches : int
        Branches per cell.
    batch : int
        Input vectors per timed solve; ``solve_s`` and ``ideal_s`` are per vector.
    seed : int
        Seed of the arrays, masks and input vectors.
    budget_s : float
        Rough time per size: timings repeat (best of) while they fit in it.
    compare_sparse : bool
        Also time the general sparse LU solver on the same circuit and compare its currents.

    Returns
    -------
    list of dict
        Per size: ``rows``, ``cols``, ``method``, ``batch``, ``factor_s``, ``solve_s`` (per
        vector in a batch), ``single_s`` (one vector alone), ``ideal_s`` (per vector),
        ``peak_mib`` (prepare plus one batch solve), ``kcl_rel`` (|sum of row currents - sum of
        column currents| over sum of |row currents|, a consistency check); the reference
        (:data:`REFERENCE`, same batch): ``reference``, ``ref_factor_s``, ``ref_solve_s`` (per
        vector), ``factor_ratio`` and ``solve_ratio`` (reference time over ours) and
        ``ref_rel_diff`` (largest column current difference over the largest current); the
        transfer method: ``transfer_prepare_s`` (factor and transfer matrix), ``transfer_solve_s``
        (per vector), ``transfer_rel_diff`` (against ``direct``, as ``ref_rel_diff``),
        ``transfer_peak_mib``; one vector on a fresh circuit, prepare included: ``fresh_single_s``,
        ``fresh_method`` (``iterative`` or the direct solver ``auto`` used) and
        ``fresh_single_ratio`` (over ``ref_factor_s + ref_solve_s``), ``fresh_rel_diff``
        (against ``direct``, as ``ref_rel_diff``); the whole batch, prepare included:
        ``ref_batch_s``, ``direct_batch_ratio``, ``transfer_batch_ratio``, ``auto`` (the method
        :meth:`CrossbarCircuit.currents` picks) and ``auto_batch_ratio``; with ``compare_sparse``
        also ``sparse_factor_s``, ``sparse_solve_s`` (per vector) and ``sparse_rel_diff``.
    """
    if batch < 1 or branches < 1 or not sizes or min(sizes) < 1:
        raise ConfigError("bench circuit needs sizes >= 1, branches >= 1 and batch >= 1",
                          key="sizes")
    # Warm up (imports, caches) before any timing.
    CrossbarCircuit(np.ones((2, 2)), row_wire_resistance_ohm=1.0, col_wire_resistance_ohm=1.0)
    results = []
    for size in sizes:
        config = SimArrayConfig(rows=size, cols=size, branches=branches, seed=seed)
        array = PhysicalArray(config)
        rng = np.random.default_rng(seed)
        array.set_masks(rng.integers(0, 1 << branches, size=(size, size), dtype=np.uint64))
        conductance = array.cell_conductance_s()
        voltage = rng.uniform(-1.0, 1.0, size=(batch, size))

        def build(method="auto", g=conductance, c=config) -> CrossbarCircuit:
            return CrossbarCircuit(g, row_wire_resistance_ohm=c.row_wire_resistance_ohm,
                                   col_wire_resistance_ohm=c.col_wire_resistance_ohm,
                                   sense_resistance_ohm=c.sense_resistance_ohm, method=method)

        def prepare(method="auto") -> CrossbarCircuit:
            built = build(method)
            built.method  # the direct solver, factored now (auto defers it to the first need)
            return built

        def prepare_reference(g=conductance, c=config) -> _SuperLUReference:
            with _one_blas_thread:  # as ours runs
                return _SuperLUReference(g, c)

        start = time.perf_counter()
        circuit = prepare()
        first = time.perf_counter() - start
        start = time.perf_counter()
        reference = prepare_reference()
        ref_first = time.perf_counter() - start

        def solve_reference(r=reference, v=voltage) -> np.ndarray:
            with _one_blas_thread:
                return r.col_current_a(v)

        repeats = int(np.clip(budget_s / 3 / max(first + ref_first, 1e-6), 1, 5))
        # Ours and the reference take turns at each step, timed best of the same repeats.
        factor_s, ref_factor_s = (min(a, b) for a, b in zip(
            (first, ref_first), _best_times([prepare, prepare_reference], repeats - 1)))
        solution = circuit.solve(voltage)
        ref_current = solve_reference()
        solve_s, ref_solve_s = (t / batch for t in _best_times(
            [lambda: circuit.solve(voltage), solve_reference], repeats))
        single_s = _best_time(lambda: circuit.solve(voltage[0]), repeats)
        with _one_blas_thread:  # as the solver runs
            ideal_s = _best_time(lambda: voltage @ conductance, 5) / batch
        rows_a = solution.row_current_a
        kcl = abs(rows_a.sum() - solution.col_current_a.sum()) / np.abs(rows_a).sum()
        result = {"rows": size, "cols": size, "method": circuit.method, "batch": batch,
                  "factor_s": factor_s, "solve_s": solve_s, "single_s": single_s,
                  "ideal_s": ideal_s, "kcl_rel": float(kcl)}
        scale = np.abs(solution.col_current_a).max()
        result.update({
            "reference": REFERENCE, "ref_factor_s": ref_factor_s, "ref_solve_s": ref_solve_s,
            "factor_ratio": ref_factor_s / factor_s, "solve_ratio": ref_solve_s / solve_s,
            "ref_rel_diff": float(np.abs(ref_current - solution.col_current_a).max() / scale),
        })
        del reference, solve_reference

        def prepare_transfer() -> CrossbarCircuit:
            built = prepare()
            built.currents(voltage[:1], method="transfer")
            return built

        transfer_prepare_s = _best_time(prepare_transfer, max(1, repeats - 1))
        transfer = prepare_transfer()
        transfer_solve_s = _best_time(lambda: transfer.currents(voltage, method="transfer"),
                                      repeats) / batch
        transfer_current = transfer.currents(voltage, method="transfer")[1]
        fresh = build()
        fresh.currents(voltage)
        auto = "transfer" if fresh.transfer_ready else "direct"
        del transfer, fresh
        def fresh_single(v=voltage[:1]) -> CrossbarCircuit:
            built = build()
            built.solve(v)
            return built

        fresh_single_s = _best_time(fresh_single, repeats)
        fresh = build()
        fresh_current = fresh.solve(voltage[:1]).col_current_a
        fresh_method = fresh.method if fresh.factored else "iterative"
        result.update({
            "fresh_single_s": fresh_single_s, "fresh_method": fresh_method,
            "fresh_single_ratio": (ref_factor_s + ref_solve_s) / fresh_single_s,
            "fresh_rel_diff": float(np.abs(fresh_current - solution.col_current_a[:1]).max()
                                    / scale),
        })
        del fresh
        ref_batch_s = ref_factor_s + batch * ref_solve_s
        direct_batch_s = factor_s + batch * solve_s
        transfer_batch_s = transfer_prepare_s + batch * transfer_solve_s
        result.update({
            "transfer_prepare_s": transfer_prepare_s, "transfer_solve_s": transfer_solve_s,
            "transfer_rel_diff": float(np.abs(transfer_current - solution.col_current_a).max()
                                       / scale),
            "ref_batch_s": ref_batch_s, "direct_batch_ratio": ref_batch_s / direct_batch_s,
            "transfer_batch_ratio": ref_batch_s / transfer_batch_s, "auto": auto,
            "auto_batch_ratio": ref_batch_s / (transfer_batch_s if auto == "transfer"
                                               else direct_batch_s),
        })
        if compare_sparse:
            start = time.perf_counter()
            sparse = prepare("sparse")
            result["sparse_factor_s"] = time.perf_counter() - start
            start = time.perf_counter()
            general = sparse.solve(voltage)
            result["sparse_solve_s"] = (time.perf_counter() - start) / batch
            currents = np.concatenate([solution.row_current_a, solution.col_current_a], axis=1)
            expected = np.concatenate([general.row_current_a, general.col_current_a], axis=1)
            result["sparse_rel_diff"] = float(np.abs(currents - expected).max()
                                              / np.abs(expected).max())
            del sparse, general
        del circuit, solution
        peaks = []
        for run in (lambda: prepare().solve(voltage),
                    lambda: prepare().currents(voltage, method="transfer")):
            tracemalloc.start()
            try:
                run()
                peaks.append(tracemalloc.get_traced_memory()[1] / _MIB)
            finally:
                tracemalloc.stop()
        results.append({**result, "peak_mib": peaks[0], "transfer_peak_mib": peaks[1]})
    return results
