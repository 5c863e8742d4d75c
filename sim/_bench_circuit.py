"""``crossbar bench circuit``: prepare and solve times of the exact circuit solver.

For each size, a :class:`PhysicalArray` with wires and ``branches`` branches per cell gets random
masks; its circuit is prepared (timed: ``factor_s``) and solved for a batch of input vectors
(timed, divided by the batch: ``solve_s`` per vector), beside the ideal ``G^T V`` of the same
batch (``ideal_s`` per vector, one BLAS thread as in the solver). Peak memory is measured in a
separate, untimed pass with ``tracemalloc`` (numpy allocations included).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Sequence

import numpy as np

from crossbar_ctl.core.config import SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim._array import PhysicalArray
from crossbar_ctl.core.circuit import CrossbarCircuit, _one_blas_thread

__all__ = ["DEFAULT_SIZES", "bench_circuit"]

DEFAULT_SIZES = (32, 64, 128, 256)
_MIB = 2.0**20


def _best_time(function, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


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
        column currents| over sum of |row currents|, a consistency check); with
        ``compare_sparse`` also ``sparse_factor_s``, ``sparse_solve_s`` (per vector) and
        ``sparse_rel_diff`` (largest current difference over the largest current).
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

        def prepare(method="auto", g=conductance, c=config) -> CrossbarCircuit:
            return CrossbarCircuit(g, row_wire_resistance_ohm=c.row_wire_resistance_ohm,
                                   col_wire_resistance_ohm=c.col_wire_resistance_ohm,
                                   sense_resistance_ohm=c.sense_resistance_ohm, method=method)

        start = time.perf_counter()
        circuit = prepare()
        first = time.perf_counter() - start
        repeats = int(np.clip(budget_s / 3 / max(first, 1e-6), 1, 5))
        factor_s = min(first, _best_time(prepare, repeats)) if repeats > 1 else first
        solution = circuit.solve(voltage)
        solve_s = _best_time(lambda: circuit.solve(voltage), repeats) / batch
        single_s = _best_time(lambda: circuit.solve(voltage[0]), repeats)
        with _one_blas_thread:  # as the solver runs
            ideal_s = _best_time(lambda: voltage @ conductance, 5) / batch
        rows_a = solution.row_current_a
        kcl = abs(rows_a.sum() - solution.col_current_a.sum()) / np.abs(rows_a).sum()
        result = {"rows": size, "cols": size, "method": circuit.method, "batch": batch,
                  "factor_s": factor_s, "solve_s": solve_s, "single_s": single_s,
                  "ideal_s": ideal_s, "kcl_rel": float(kcl)}
        if compare_sparse:
            start = time.perf_counter()
            sparse = prepare("sparse")
            result["sparse_factor_s"] = time.perf_counter() - start
            start = time.perf_counter()
            reference = sparse.solve(voltage)
            result["sparse_solve_s"] = (time.perf_counter() - start) / batch
            currents = np.concatenate([solution.row_current_a, solution.col_current_a], axis=1)
            expected = np.concatenate([reference.row_current_a, reference.col_current_a], axis=1)
            result["sparse_rel_diff"] = float(np.abs(currents - expected).max()
                                              / np.abs(expected).max())
            del sparse, reference
        del circuit, solution
        tracemalloc.start()
        try:
            prepare().solve(voltage)
            peak_mib = tracemalloc.get_traced_memory()[1] / _MIB
        finally:
            tracemalloc.stop()
        results.append({**result, "peak_mib": peak_mib})
    return results
