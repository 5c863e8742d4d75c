"""Benchmarks of the subset-sum optimizer; each returns plain dicts and lists (JSON-ready).

- :func:`bench_precision`: bits of precision against the number of resistors (the talk's figure).
- :func:`bench_solver`: cells per second by pool size, with a check that the answers are exact.
- :func:`bench_peers`: the same instances through brute force, ``scipy.optimize.milp`` (HiGHS)
  and, when installed, OR-Tools CP-SAT.
- :func:`bench_lottery`: Pensia et al. (NeurIPS 2020), Experiment 1's subset-sum workload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from numba import njit

from crossbar_ctl.optimizer._solver import SubsetSumStatus, solve_subset_sum
from crossbar_ctl.core.errors import CrossbarError

__all__ = ["bench_lottery", "bench_peers", "bench_precision", "bench_solver", "plot_precision"]

MAX_BITS = 52.0
"""Bits reported for an exact hit (error 0): the float64 mantissa, the most a sum can resolve."""

Progress = Callable[[int], None] | None


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y against x."""
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])


def _population(rng: np.random.Generator, population: str, shape: tuple[int, ...]) -> np.ndarray:
    """Conductances in units of G0: uniform on [0.5, 1.5], or lognormal with sigma 0.3."""
    if population == "uniform":
        return rng.uniform(0.5, 1.5, shape)
    if population == "lognormal":
        return rng.lognormal(0.0, 0.3, shape)
    raise CrossbarError(f"population: expected 'uniform' or 'lognormal', got {population!r}")


def bench_precision(*, population: str = "uniform", sizes: Sequence[int] = range(4, 33),
                    instances: int = 2500, worst_from: int = 8, seed: int = 0,
                    progress: Progress = None) -> dict:
    """Median and worst bits of precision, ``log2(target / |error|)``, per number of resistors.

    For each n, ``instances`` pools of n conductances and one target each, uniform on
    [0.25, 0.75] times the pool's sum. An exact hit counts as ``MAX_BITS`` (and is counted in
    ``exact_hits``). Slopes are least-squares fits: the median over all sizes, the worst over
    sizes from ``worst_from`` on.
    """
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in sizes]
    median, worst, hits = [], [], []
    for n in sizes:
        values = _population(rng, population, (instances, n))
        targets = rng.uniform(0.25, 0.75, instances) * values.sum(axis=1)
        error = np.abs(solve_subset_sum(values, targets).error_s)
        with np.errstate(divide="ignore"):
            bits = np.minimum(np.log2(targets / error), MAX_BITS)
        median.append(float(np.median(bits)))
        worst.append(float(bits.min()))
        hits.append(int(np.sum(error == 0)))
        if progress:
            progress(1)
    n = np.array(sizes)
    tail = n >= worst_from
    return {
        "population": population, "instances": instances, "n": sizes,
        "median_bits": median, "worst_bits": worst, "exact_hits": hits,
        "slope_median": _slope(n, median),
        "slope_worst": _slope(n[tail], np.array(worst)[tail]) if tail.sum() >= 2 else float("nan"),
        "worst_from": worst_from, "max_bits": MAX_BITS,
    }


def plot_precision(result: dict, path: str) -> None:
    """Draw median and worst bits against n, with the ideal one bit per resistor, to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CrossbarError("--plot needs matplotlib: pip install 'crossbar-ctl[plot]'") from exc
    n = np.array(result["n"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(n, n, "k--", label="ideal: 1 bit per resistor")
    ax.plot(n, result["median_bits"], "o-", label=f"median (slope {result['slope_median']:.3f})")
    ax.plot(n, result["worst_bits"], "s-", label=f"worst of {result['instances']} "
            f"(slope {result['slope_worst']:.3f} from n = {result['worst_from']})")
    ax.set_xlabel("resistors per cell, n")
    ax.set_ylabel("bits of precision, log2(target / |error|)")
    ax.set_title(f"Subset-sum precision, {result['population']} conductances")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _planted(rng: np.random.Generator, cells: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Random integers below 2^40 (exact in float64) and targets some subset hits exactly.

    Such instances have essentially one solution, so error 0 shows the search was exact.
    """
    values = rng.integers(1, 2**40, (cells, m)).astype(float)
    return values, np.where(rng.random((cells, m)) < 0.5, values, 0.0).sum(axis=1)


SOLVER_CELLS = {8: 200_000, 16: 200_000, 24: 20_000, 32: 2_000, 40: 20}


def bench_solver(*, sizes: Sequence[int] = (8, 16, 24, 32, 40), quick: bool = False, seed: int = 0,
                 progress: Progress = None) -> list[dict]:
    """Cells per second by pool size m (uniform conductances, targets mid-range), and exactness.

    ``exact`` counts planted instances (see :func:`_planted`) solved with error exactly 0.
    """
    rng = np.random.default_rng(seed)
    solve_subset_sum(np.ones((1, 2)), np.ones(1))  # load the compiled kernels before timing
    rows = []
    for m in sizes:
        cells = max(SOLVER_CELLS.get(m, 2_000) // (20 if quick else 1), 2)
        values = rng.uniform(0.5, 1.5, (cells, m))
        targets = rng.uniform(0.25, 0.75, cells) * values.sum(axis=1)
        start = time.perf_counter()
        result = solve_subset_sum(values, targets)
        elapsed = time.perf_counter() - start
        planted_values, planted_targets = _planted(rng, min(cells, 3 if m > 32 else 50), m)
        planted = solve_subset_sum(planted_values, planted_targets)
        rows.append({
            "m": int(m), "cells": cells, "seconds": elapsed, "cells_per_s": cells / elapsed,
            "median_error_rel": float(np.median(np.abs(result.error_s) / targets)),
            "exact": f"{int(np.sum(planted.error_s == 0))}/{planted_targets.size}",
        })
        if progress:
            progress(1)
    return rows


@njit(cache=True)
def brute_force_error(values, target):
    """Least |subset sum - target| over all 2^m subsets, by Gray code (one add per subset).

    The running sum drifts by rounding over 2^m updates, so the best subset's sum is recomputed
    exactly from its mask at the end.
    """
    m = values.size
    best = abs(target)
    best_code = 0
    total = 0.0
    for step in range(1, 1 << m):
        bit = 0
        while not (step >> bit) & 1:
            bit += 1
        code = step ^ (step >> 1)
        if (code >> bit) & 1:
            total += values[bit]
        else:
            total -= values[bit]
        if abs(total - target) < best:
            best = abs(total - target)
            best_code = code
    exact = 0.0
    for b in range(m):
        if (best_code >> b) & 1:
            exact += values[b]
    return abs(exact - target)


def _milp_error(values: np.ndarray, target: float, time_limit_s: float) -> float:
    """``scipy.optimize.milp`` (HiGHS): minimise z with z >= |v.x - target|, x binary."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    m = values.size
    cost = np.r_[np.zeros(m), 1.0]
    rows = np.array([np.r_[values, -1.0], np.r_[values, 1.0]])
    constraints = LinearConstraint(rows, [-np.inf, target], [target, np.inf])
    result = milp(cost, constraints=constraints, integrality=np.r_[np.ones(m), 0],
                  bounds=Bounds(np.zeros(m + 1), np.r_[np.ones(m), np.inf]),
                  options={"time_limit": time_limit_s, "mip_rel_gap": 0.0})
    if result.x is None:
        return float("inf")
    return float(abs(values[np.round(result.x[:m]) == 1].sum() - target))


def _cpsat_error(values: np.ndarray, target: float, time_limit_s: float) -> float:
    """OR-Tools CP-SAT on values scaled to integers (2^40 full scale): minimise |v.x - target|."""
    from ortools.sat.python import cp_model

    scale = 2.0**40 / max(float(np.abs(values).sum()), abs(target), 1e-300)
    ints = np.round(values * scale).astype(np.int64)
    goal = int(round(target * scale))
    bound = int(np.abs(ints).sum()) + abs(goal)
    model = cp_model.CpModel()
    x = [model.NewBoolVar(f"x{k}") for k in range(values.size)]
    z = model.NewIntVar(0, bound, "z")
    total = sum(int(v) * xk for v, xk in zip(ints, x))
    model.Add(total - goal <= z)
    model.Add(goal - total <= z)
    model.Minimize(z)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.catch_sigint_signal = False  # leave Ctrl-C to Python (and the drivers' shield)
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float("inf")
    chosen = np.array([solver.Value(xk) == 1 for xk in x])
    return float(abs(values[chosen].sum() - target))


def _peers() -> dict[str, Callable[[np.ndarray, float, float], float]]:
    peers: dict[str, Callable] = {"brute_force": lambda v, t, _: float(brute_force_error(v, t)),
                                  "milp_highs": _milp_error}
    try:
        import ortools.sat.python.cp_model  # noqa: F401
    except ImportError:
        pass
    else:
        peers["cpsat"] = _cpsat_error
    return peers


def bench_peers(*, sizes: Sequence[int] = (8, 16, 24), instances: int = 5, time_limit_s: float = 10.0,
                seed: int = 0, progress: Progress = None) -> list[dict]:
    """Time per target and optimality of each solver on the same instances.

    The optimizer is timed first, one call per target (validation included), best of three
    rounds, before any peer runs (a MILP solver's idle worker threads would otherwise compete
    with numba's). A peer reached the optimum when its answer's error is no larger than the
    optimizer's exact one (1e-9 relative slack); brute force referees the optimizer. Peers get
    ``time_limit_s`` per target; OR-Tools CP-SAT runs only when installed.
    """
    rng = np.random.default_rng(seed)
    solve_subset_sum(np.ones(2), 1.0)  # load the compiled kernels before timing
    brute_force_error(np.ones(2), 1.0)
    cases = []
    for m in sizes:
        values = rng.uniform(0.5, 1.5, (instances, m))
        targets = rng.uniform(0.25, 0.75, instances) * values.sum(axis=1)
        optimum = np.array([abs(float(solve_subset_sum(v, t).error_s)) for v, t in zip(values, targets)])
        rounds = []
        for _ in range(3):
            start = time.perf_counter()
            for v, t in zip(values, targets):
                solve_subset_sum(v, t)
            rounds.append((time.perf_counter() - start) / instances)
        cases.append((int(m), values, targets, optimum, min(rounds)))
    rows = []
    for m, values, targets, optimum, ours in cases:
        rows.append({"m": m, "solver": "optimizer", "time_per_target_s": ours,
                     "optimal": f"{instances}/{instances}", "slowdown": 1.0})
        for name, peer in _peers().items():
            if name == "brute_force" and m > 30:
                continue
            start = time.perf_counter()
            errors = np.array([peer(v, t, time_limit_s) for v, t in zip(values, targets)])
            spent = (time.perf_counter() - start) / instances
            if name == "brute_force" and np.any(errors < optimum * (1 - 1e-9)):
                raise CrossbarError(f"brute force beat the optimizer at m = {m}: not exact")
            reached = int(np.sum(errors <= optimum * (1 + 1e-9)))
            rows.append({"m": m, "solver": name, "time_per_target_s": spent,
                         "optimal": f"{reached}/{instances}", "slowdown": spent / ours})
        if progress:
            progress(1)
    return rows


LOTTERY_LAYERS = ((784, 500), (500, 10))
"""The paper's target network: a 784-500-10 MLP, 784 x 500 + 500 x 10 = 397,000 weights."""


def lottery_targets(kind: str, rng: np.random.Generator, *, targets: int = 397_000,
                    target_max: float = 1.0) -> np.ndarray:
    """Target weights for :func:`bench_lottery`.

    ``network``: the weights of a 784-500-10 MLP at the standard initialisation, uniform on
    +-1/sqrt(fan_in) per layer (the scale that weights of so wide a layer keep in training; the
    paper's trained MNIST weights are not available offline), cycled to ``targets`` values.
    ``uniform``: uniform on [-target_max, target_max], the hard case (some targets lie outside
    what their pool can reach).
    """
    if kind == "uniform":
        return rng.uniform(-target_max, target_max, targets)
    if kind != "network":
        raise ValueError(f"targets: expected 'network' or 'uniform', got {kind!r}")
    layers = [rng.uniform(-1.0, 1.0, fan_in * fan_out) / np.sqrt(fan_in)
              for fan_in, fan_out in LOTTERY_LAYERS]
    return np.resize(np.concatenate(layers), targets)


def bench_lottery(*, kind: str = "network", targets: int = 397_000, pool: int = 21,
                  low: float = -0.464, high: float = 0.541, tolerance: float = 0.01,
                  target_max: float = 1.0, seed: int = 0, chunk: int = 50_000,
                  progress: Progress = None) -> dict:
    """Pensia et al. (NeurIPS 2020), Experiment 1: approximate each target weight by a subset of
    ``pool`` fresh values uniform on [low, high]; count those within ``tolerance``.

    Targets come from :func:`lottery_targets`. A target outside what its pool can reach (too
    few negative values to sum below it, say) is counted in ``out_of_range`` (the answer is then
    the nearest reachable sum, still optimal), and ``worst_error_reachable`` is the worst error
    over the others. (They solved the weights of a trained 784-500-10 network with Gurobi:
    77,266 s on 36 cores.)
    """
    rng = np.random.default_rng(seed)
    goals = lottery_targets(kind, rng, targets=targets, target_max=target_max)
    solve_subset_sum(np.ones(2), 1.0)  # load the compiled kernels before timing
    within = 0
    outside = 0
    proven = 0
    worst = 0.0
    worst_reachable = 0.0
    solve_s = 0.0
    start = time.perf_counter()
    for first in range(0, targets, chunk):
        goal = goals[first:first + chunk]
        values = rng.uniform(low, high, (len(goal), pool))
        tick = time.perf_counter()
        result = solve_subset_sum(values, goal)
        solve_s += time.perf_counter() - tick
        error = np.abs(result.error_s)
        reachable = result.status != SubsetSumStatus.OUT_OF_RANGE
        within += int(np.sum(error <= tolerance))
        outside += int(np.sum(~reachable))
        proven += int(np.sum(result.proven))
        worst = max(worst, float(error.max()))
        worst_reachable = max(worst_reachable, float(error[reachable].max(initial=0.0)))
        if progress:
            progress(len(goal))
    return {"targets_from": kind, "targets": targets, "max_abs_target": float(np.abs(goals).max()),
            "pool": pool, "tolerance": tolerance, "within_tolerance": within,
            "out_of_range": outside, "proven_optimal": proven, "worst_error": worst,
            "worst_error_reachable": worst_reachable, "solve_s": solve_s,
            "wall_s": time.perf_counter() - start, "paper_gurobi_s": 77_266.0}
