"""``crossbar bench circuit``: prepare and solve times of the exact circuit solver.

For each size, a :class:`PhysicalArray` with wires and ``branches`` branches per cell gets random
masks; its circuit is solved for a batch of input vectors, each route timed on a fresh circuit
with its preparation, best of a few rounds in which the routes take turns (so that on a shared
machine each sees the same load).

The reference (:data:`REFERENCE`): a plain SuperLU solve of the same nodal system, the way one
would write it with scipy alone. Assemble the sparse nodal matrix of the row and column nodes
(terminals held), ``scipy.sparse.linalg.splu`` it once with its defaults (COLAMD column order;
``ref_factor_s``, assembly included), then ``lu.solve`` the whole batch and take the column
currents (``ref_solve_s`` per vector); ``ref_batch_s`` is both. Ratios are a reference time over
ours (> 1: ours is faster).

Ours:

- ``auto`` (the headline): :meth:`CrossbarCircuit.currents` of the batch on a fresh circuit,
  the route it picks (``auto``: ``transfer`` or ``direct``) and everything it builds
  (``auto_batch_s``; ``auto_batch_ratio``). Its plan (the elimination order, one per shape and
  process, ``plan_s`` alone) is cached; ``auto_cold_s`` and ``auto_cold_ratio`` count it too
  (best of up to three, each building it again).
  ``auto_rel_diff``: the largest column current difference from the refined direct solve (the
  oracle), over the largest current; ``ref_rel_diff`` the same for the reference.
- ``direct``, the route of the previous release (:meth:`CrossbarCircuit.solve`, factored and
  refined): ``factor_s``, ``solve_s`` per vector, ``direct_batch_ratio``, and ``auto_vs_direct``
  (its batch time over ``auto``'s).
- ``transfer``: the transfer matrix alone (``transfer_prepare_s``, reduced onto the terminals
  where that applies) and its product per vector (``transfer_solve_s``).
- one vector on a fresh circuit (``fresh_single_s``: iterative where ``auto`` takes it).

Peak memory: ``peak_mib`` and ``transfer_peak_mib`` by ``tracemalloc`` in separate untimed passes
(numpy and numba allocations), ``rss_peak_mib`` the process's peak resident set so far.
With ``ours_only`` (sizes where the reference and the direct solver take minutes: 512), only
``auto``, ``plan_s``, ``plan_mib`` and the peaks are measured.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from crossbar_ctl.core._circuit_schur import _plan
from crossbar_ctl.core.circuit import CrossbarCircuit, _one_blas_thread
from crossbar_ctl.core.config import SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim._array import PhysicalArray

__all__ = ["DEFAULT_SIZES", "REFERENCE", "bench_circuit"]

DEFAULT_SIZES = (32, 64, 128, 256)
REFERENCE = ("scipy.sparse.linalg.splu (SuperLU, default options: COLAMD column order) of the "
             "assembled nodal matrix: one factorisation, then lu.solve of the whole batch")
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
    budget_s: float = 2.0, compare_sparse: bool = False, ours_only: bool = False,
) -> list[dict]:
    """Time the solver on square arrays (module docstring).

    Parameters
    ----------
    sizes : sequence of int
        Array sizes (rows = cols).
    branches : int
        Branches per cell.
    batch : int
        Input vectors per timed solve; per-vector figures divide by it.
    seed : int
        Seed of the arrays, masks and input vectors.
    budget_s : float
        Rough time per size: timings repeat (best of) while they fit in it.
    compare_sparse : bool
        Also time the general sparse LU solver on the same circuit and compare its currents.
    ours_only : bool
        Only ``auto`` (and the plan and peaks): no reference, no direct solver.

    Returns
    -------
    list of dict
        Per size: ``rows``, ``cols``, ``batch``, ``auto``, ``auto_batch_s``, ``auto_cold_s``,
        ``plan_s``, ``plan_mib`` (the reduction's peak estimate), ``transfer_peak_mib``,
        ``rss_peak_mib``; unless ``ours_only``: ``method`` (the direct solver), ``factor_s``,
        ``solve_s``, ``single_s``, ``ideal_s`` (``G^T V``, per vector), ``peak_mib``,
        ``kcl_rel`` (|sum of row currents - sum of column currents| over sum of |row
        currents|), ``reference``, ``ref_factor_s``, ``ref_solve_s``, ``ref_batch_s``,
        ``factor_ratio``, ``solve_ratio``, ``ref_rel_diff``, ``auto_batch_ratio``,
        ``auto_cold_ratio``, ``auto_rel_diff``, ``direct_batch_ratio``, ``auto_vs_direct``,
        ``transfer_prepare_s``, ``transfer_solve_s``, ``transfer_rel_diff``,
        ``transfer_batch_ratio``, ``fresh_single_s``, ``fresh_method``,
        ``fresh_single_ratio``, ``fresh_rel_diff``; with ``compare_sparse`` also
        ``sparse_factor_s``, ``sparse_solve_s`` (per vector) and ``sparse_rel_diff``.
    """
    if batch < 1 or branches < 1 or not sizes or min(sizes) < 1:
        raise ConfigError("bench circuit needs sizes >= 1, branches >= 1 and batch >= 1",
                          key="sizes")
    # Warm up (imports, compiled kernels) before any timing.
    CrossbarCircuit(np.ones((2, 2)), row_wire_resistance_ohm=1.0,
                    col_wire_resistance_ohm=1.0).currents(np.ones(2), method="transfer")
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

        def auto(v=voltage) -> CircuitRoute:
            built = build()
            currents = built.currents(v)
            return CircuitRoute(built, currents[1])

        def auto_cold() -> CircuitRoute:
            _plan.cache_clear()  # the shape's plan, built again
            return auto()

        start = time.perf_counter()
        cold = auto_cold()
        auto_cold_s = time.perf_counter() - start
        auto_cold_s = min(auto_cold_s, _best_time(auto_cold, int(np.clip(
            budget_s / 3 / auto_cold_s, 0, 2))))
        _plan.cache_clear()
        start = time.perf_counter()
        plan = _plan(size, size)
        plan_s = time.perf_counter() - start
        result = {"rows": size, "cols": size, "batch": batch,
                  "auto": "transfer" if cold.circuit.transfer_ready else "direct",
                  "auto_cold_s": auto_cold_s, "plan_s": plan_s, "plan_mib": plan.nbytes / _MIB}
        if ours_only:
            result["auto_batch_s"] = _best_time(auto, int(np.clip(budget_s / auto_cold_s, 1, 5)))
        else:
            result.update(_compare(build, auto, cold, conductance, config, voltage, budget_s,
                                   compare_sparse))
            result["auto_cold_ratio"] = result["ref_batch_s"] / auto_cold_s
        del cold
        peaks = {}
        direct = None if ours_only else lambda v=voltage: _factored(build).solve(v)
        for name, run in (("transfer_peak_mib", auto), ("peak_mib", direct)):
            if run is not None:
                tracemalloc.start()
                try:
                    run()
                    peaks[name] = tracemalloc.get_traced_memory()[1] / _MIB
                finally:
                    tracemalloc.stop()
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        results.append({**result, **peaks, "rss_peak_mib": peak_rss / _MIB})
    return results


@dataclass(frozen=True)
class CircuitRoute:
    """A fresh circuit and the column currents it gave, A."""

    circuit: CrossbarCircuit
    col_current_a: np.ndarray


def _factored(build) -> CrossbarCircuit:
    built = build()
    _ = built.method  # the direct solver, factored now (auto defers it to the first need)
    return built


def _compare(build, auto, cold: CircuitRoute, conductance: np.ndarray, config: SimArrayConfig,
             voltage: np.ndarray, budget_s: float, compare_sparse: bool) -> dict:
    """Everything but ``ours_only``'s figures for one size (see :func:`bench_circuit`)."""
    batch = voltage.shape[0]

    def prepare_reference(g=conductance, c=config) -> _SuperLUReference:
        with _one_blas_thread:  # as ours runs
            return _SuperLUReference(g, c)

    start = time.perf_counter()
    circuit = _factored(build)
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
        (first, ref_first), _best_times([lambda: _factored(build), prepare_reference],
                                        repeats - 1)))
    solution = circuit.solve(voltage)
    ref_current = solve_reference()
    solve_s, ref_solve_s, auto_batch_s = _best_times(
        [lambda: circuit.solve(voltage), solve_reference, auto], repeats)
    solve_s, ref_solve_s = solve_s / batch, ref_solve_s / batch
    single_s = _best_time(lambda: circuit.solve(voltage[0]), repeats)
    with _one_blas_thread:  # as the solver runs
        ideal_s = _best_time(lambda: voltage @ conductance, 5) / batch
    rows_a = solution.row_current_a
    kcl = abs(rows_a.sum() - solution.col_current_a.sum()) / np.abs(rows_a).sum()
    scale = np.abs(solution.col_current_a).max()

    def rel_diff(currents: np.ndarray, oracle: np.ndarray = solution.col_current_a) -> float:
        return float(np.abs(currents - oracle).max() / scale)

    ref_batch_s = ref_factor_s + batch * ref_solve_s
    direct_batch_s = factor_s + batch * solve_s
    result = {
        "method": circuit.method, "factor_s": factor_s, "solve_s": solve_s,
        "single_s": single_s, "ideal_s": ideal_s, "kcl_rel": float(kcl),
        "reference": REFERENCE, "ref_factor_s": ref_factor_s, "ref_solve_s": ref_solve_s,
        "ref_batch_s": ref_batch_s, "factor_ratio": ref_factor_s / factor_s,
        "solve_ratio": ref_solve_s / solve_s, "ref_rel_diff": rel_diff(ref_current),
        "auto_batch_s": auto_batch_s, "auto_batch_ratio": ref_batch_s / auto_batch_s,
        "auto_rel_diff": rel_diff(cold.col_current_a),
        "direct_batch_ratio": ref_batch_s / direct_batch_s,
        "auto_vs_direct": direct_batch_s / auto_batch_s,
    }
    del reference, solve_reference

    def prepare_transfer() -> CrossbarCircuit:
        built = build()
        built.currents(voltage[:1], method="transfer")
        return built

    transfer_prepare_s = _best_time(prepare_transfer, repeats)
    transfer = prepare_transfer()
    transfer_solve_s = _best_time(lambda t=transfer: t.currents(voltage, method="transfer"),
                                  repeats) / batch
    result.update({
        "transfer_prepare_s": transfer_prepare_s, "transfer_solve_s": transfer_solve_s,
        "transfer_rel_diff": rel_diff(transfer.currents(voltage, method="transfer")[1]),
        "transfer_batch_ratio": ref_batch_s / (transfer_prepare_s + batch * transfer_solve_s),
    })
    del transfer

    def fresh_single(v=voltage[:1]) -> CrossbarCircuit:
        built = build()
        built.solve(v)
        return built

    fresh_single_s = _best_time(fresh_single, repeats)
    fresh = build()
    fresh_current = fresh.solve(voltage[:1]).col_current_a
    result.update({
        "fresh_single_s": fresh_single_s,
        "fresh_method": fresh.method if fresh.factored else "iterative",
        "fresh_single_ratio": (ref_factor_s + ref_solve_s) / fresh_single_s,
        "fresh_rel_diff": rel_diff(fresh_current, solution.col_current_a[:1]),
    })
    if compare_sparse:
        start = time.perf_counter()
        sparse = _factored(lambda: build("sparse"))
        result["sparse_factor_s"] = time.perf_counter() - start
        start = time.perf_counter()
        general = sparse.solve(voltage)
        result["sparse_solve_s"] = (time.perf_counter() - start) / batch
        currents = np.concatenate([solution.row_current_a, solution.col_current_a], axis=1)
        expected = np.concatenate([general.row_current_a, general.col_current_a], axis=1)
        result["sparse_rel_diff"] = float(np.abs(currents - expected).max()
                                          / np.abs(expected).max())
    return result
