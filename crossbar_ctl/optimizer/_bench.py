"""Benchmarks of the subset-sum optimizer; each returns plain dicts and lists (JSON-ready).

- :func:`bench_precision`: bits of precision against the number of resistors (the talk's figure),
  on unsigned pools and on signed pools like the engine's.
- :func:`bench_solver`: cells per second by pool size, as a ratio against a textbook meet in the
  middle run in the same process, with a check that the answers are exact; exact-tie pools too.
- :func:`bench_peers`: the same instances through brute force, HiGHS (``highspy``) and, when
  installed, OR-Tools CP-SAT: time to the proven optimum and time to a stated precision.
- :func:`bench_lottery`: Pensia et al. (NeurIPS 2020), Experiment 1's subset-sum workload.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from numba import njit, prange

from crossbar_ctl.optimizer._solver import SubsetSumStatus, solve_subset_sum
from crossbar_ctl.core.errors import CrossbarError
from crossbar_ctl.core.files import atomic_save_figure, pyplot

__all__ = ["PEERS_PRECISION_REL", "bench_lottery", "bench_peers", "bench_precision", "bench_solver",
           "plot_precision"]

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


SIGNED_UP_TO = 16
"""Largest n of the signed rows: 2n = 32 values, the engine's pool at 16 branches per cell."""

PRECISION_CONVENTION = (
    "unsigned: n values, target uniform on [0.25, 0.75] x the pool's sum; bits = log2(target / "
    "|error|), and 'range' bits = log2(sum / |error|) against the reachable range [0, sum]. "
    "signed (like the engine): 2n values, +g and -h (n each), target w x S with w uniform on "
    "[-1, 1] and S the engine's full scale (choose_scale: 1 % quantile over the pools of "
    "1.25 sd - |mean| of a random subset sum); bits = log2(S / |error|). Exact hits count as 52.")
"""How :func:`bench_precision` counts bits, in one sentence per pool kind."""


def _engine_scale(values: np.ndarray) -> float:
    """Full scale of signed pools as the engine picks it (``choose_scale``, weights up to 1)."""
    reach = 1.25 * 0.5 * np.sqrt(np.sum(values**2, axis=1)) - np.abs(0.5 * np.sum(values, axis=1))
    return float(np.quantile(reach, 0.01))


def _bits(scale: np.ndarray, error: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(np.log2(scale / error), MAX_BITS)


def bench_precision(*, population: str = "uniform", sizes: Sequence[int] = range(4, 33),
                    instances: int = 2500, worst_from: int = 8, signed_up_to: int = SIGNED_UP_TO,
                    seed: int = 0, progress: Progress = None) -> dict:
    """Median and worst bits of precision per number of resistors n (see ``PRECISION_CONVENTION``).

    Unsigned pools (the talk's figure): ``instances`` pools of n conductances, one target each,
    uniform on [0.25, 0.75] times the pool's sum. Bits against the target, ``log2(target /
    |error|)`` (``median_bits``, ``worst_bits``), and against the reachable range [0, sum]
    (``median_bits_range``; 1 to 2 bits more, as targets lie at 1/4 to 3/4 of the range).
    Signed pools like the engine's, for n up to ``signed_up_to``: a differential pair, n values
    +g and n values -h from the same population, targets ``w * S`` with w uniform on [-1, 1] and
    S the engine's full scale for these pools; bits ``log2(S / |error|)`` (``signed_median_bits``,
    ``signed_worst_bits``; None beyond ``signed_up_to``). An exact hit counts as ``MAX_BITS``
    (and in ``exact_hits``). Slopes are least-squares fits: the median over all sizes, the worst
    over sizes from ``worst_from`` on.
    """
    rng = np.random.default_rng(seed)
    signed_rng = np.random.default_rng((seed, 1))  # apart, so the unsigned draws stay as they were
    sizes = [int(n) for n in sizes]
    median, worst, median_range, hits, signed_median, signed_worst = [], [], [], [], [], []
    for n in sizes:
        values = _population(rng, population, (instances, n))
        targets = rng.uniform(0.25, 0.75, instances) * values.sum(axis=1)
        error = np.abs(solve_subset_sum(values, targets).error_s)
        bits = _bits(targets, error)
        median.append(float(np.median(bits)))
        worst.append(float(bits.min()))
        median_range.append(float(np.median(_bits(values.sum(axis=1), error))))
        hits.append(int(np.sum(error == 0)))
        if n <= signed_up_to:
            pair = np.concatenate([_population(signed_rng, population, (instances, n)),
                                   -_population(signed_rng, population, (instances, n))], axis=1)
            scale = _engine_scale(pair)
            goals = signed_rng.uniform(-1.0, 1.0, instances) * scale
            bits = _bits(scale, np.abs(solve_subset_sum(pair, goals).error_s))
            signed_median.append(float(np.median(bits)))
            signed_worst.append(float(bits.min()))
        else:
            signed_median.append(None)
            signed_worst.append(None)
        if progress:
            progress(1)
    n = np.array(sizes)
    tail = n >= worst_from
    signed = n <= signed_up_to
    signed_tail = signed & tail

    def slope(x, y, where):
        return _slope(x[where], np.array(y, dtype=float)[where]) if where.sum() >= 2 else float("nan")

    return {
        "population": population, "instances": instances, "n": sizes,
        "median_bits": median, "worst_bits": worst, "median_bits_range": median_range,
        "exact_hits": hits, "signed_median_bits": signed_median, "signed_worst_bits": signed_worst,
        "slope_median": slope(n, median, np.ones_like(tail)),
        "slope_worst": slope(n, worst, tail),
        "slope_signed_median": slope(n, signed_median, signed),
        "slope_signed_worst": slope(n, signed_worst, signed_tail),
        "worst_from": worst_from, "signed_up_to": signed_up_to, "max_bits": MAX_BITS,
        "convention": PRECISION_CONVENTION,
    }


def plot_precision(result: dict, path: str) -> None:
    """Draw median and worst bits against n, with the ideal one bit per resistor, to ``path``."""
    plt = pyplot(CrossbarError, "--plot needs")
    n = np.array(result["n"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(n, n, "k--", label="ideal: 1 bit per resistor")
    ax.plot(n, result["median_bits"], "o-", label=f"median (slope {result['slope_median']:.3f})")
    ax.plot(n, result["worst_bits"], "s-", label=f"worst of {result['instances']} "
            f"(slope {result['slope_worst']:.3f} from n = {result['worst_from']})")
    signed = np.array([b is not None for b in result.get("signed_median_bits", [None] * n.size)])
    if signed.any():
        ax.plot(n[signed], np.array(result["signed_median_bits"])[signed], "^-",
                label="signed pair (2n values), median, log2(full scale / |error|)")
    ax.set_xlabel("resistors per cell, n")
    ax.set_ylabel("bits of precision, log2(target / |error|)")
    ax.set_title(f"Subset-sum precision, {result['population']} conductances")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


def _planted(rng: np.random.Generator, cells: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Random integers below 2^40 (exact in float64) and targets some subset hits exactly.

    Such instances have essentially one solution, so error 0 shows the search was exact.
    """
    values = rng.integers(1, 2**40, (cells, m)).astype(float)
    return values, np.where(rng.random((cells, m)) < 0.5, values, 0.0).sum(axis=1)


SOLVER_CELLS = {8: 200_000, 16: 200_000, 24: 20_000, 32: 2_000, 40: 20}
TIE_CELLS = 200
"""Cells of each exact-tie row of :func:`bench_solver` (m = 32)."""

REFERENCE = ("textbook meet in the middle: each half's subset sums by doubling, np.sort, one "
             "two-pointer sweep for the least error; no tie-break, no cap (numba, same threads)")
"""The reference :func:`bench_solver` measures in the same run, as it names it in its rows."""


@njit(cache=True)
def _half_sums(values):
    """All 2^k subset sums of ``values``, each accumulated in index order (as the solver does)."""
    sums = np.zeros(1 << values.size)
    for b in range(values.size):
        size = 1 << b
        for i in range(size):
            sums[size + i] = sums[i] + values[b]
    return sums


@njit(parallel=True, cache=True)
def textbook_errors(values, targets):
    """Least ``|subset sum - target|`` per row of ``values``, by a textbook meet in the middle.

    Horowitz-Sahni as textbooks give it: both halves' sums sorted (``np.sort``), one sweep with a
    pointer up the first half and one down the second. Nothing else: no tie-break, no cap, no
    variance. The reference of :func:`bench_solver`.
    """
    cells, m = values.shape
    errors = np.empty(cells)
    for c in prange(cells):
        a = np.sort(_half_sums(values[c, : m // 2]))
        b = np.sort(_half_sums(values[c, m // 2:]))
        best = np.inf
        i = 0
        j = b.size - 1
        while i < a.size and j >= 0:
            d = (a[i] + b[j]) - targets[c]
            best = min(best, abs(d))
            if d > 0:
                j -= 1
            else:
                i += 1
        errors[c] = best
    return errors


def _solver_row(m: int, pool: str, values: np.ndarray, targets: np.ndarray) -> dict:
    """Time the optimizer and the reference on the same cells; compare their least errors."""
    start = time.perf_counter()
    result = solve_subset_sum(values, targets)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    reference = textbook_errors(values, targets)
    reference_s = time.perf_counter() - start
    cells = targets.size
    # the optimizer sums the chosen branches in index order, the reference adds two half sums
    rounding = 8 * np.finfo(float).eps * (np.abs(values).sum(axis=1) + np.abs(targets))
    agree = np.abs(np.abs(result.error_s) - reference) <= rounding
    return {
        "m": m, "pool": pool, "cells": cells, "seconds": elapsed, "cells_per_s": cells / elapsed,
        "reference_cells_per_s": cells / reference_s, "vs_reference": reference_s / elapsed,
        "same_error": f"{int(agree.sum())}/{cells}",
        "median_error_rel": float(np.median(np.abs(result.error_s) / np.abs(targets))),
    }


def bench_solver(*, sizes: Sequence[int] = (8, 16, 24, 32, 40), ties: bool = True, quick: bool = False,
                 seed: int = 0, progress: Progress = None) -> list[dict]:
    """Cells per second by pool size m, each against the reference run in the same process.

    Rows ``uniform``: conductances uniform on [0.5, 1.5], targets at 1/4 to 3/4 of the pool's sum.
    ``vs_reference`` is the reference's time over the optimizer's on the same cells (above 1: the
    optimizer is faster; see ``REFERENCE``); ``same_error`` counts cells where both found the same
    least error (up to the rounding of the sums, 8 ulps of the pool's sum); ``exact`` counts
    planted instances (see :func:`_planted`) solved with error exactly 0. With ``ties``, two
    m = 32 rows of exact ties follow: ``integer`` (values 1 ... 16) and ``equal`` (all 1),
    targets integers at 1/4 to 3/4 of the sum, where every sum is exact and the tie-break has
    many equal candidates (the reference has no tie-break to make).
    """
    rng = np.random.default_rng(seed)
    solve_subset_sum(np.ones((1, 2)), np.ones(1))  # load the compiled kernels before timing
    textbook_errors(np.ones((1, 2)), np.ones(1))
    rows = []
    for m in sizes:
        cells = max(SOLVER_CELLS.get(m, 2_000) // (20 if quick else 1), 2)
        values = rng.uniform(0.5, 1.5, (cells, m))
        targets = rng.uniform(0.25, 0.75, cells) * values.sum(axis=1)
        row = _solver_row(int(m), "uniform", values, targets)
        planted_values, planted_targets = _planted(rng, min(cells, 3 if m > 32 else 50), m)
        planted = solve_subset_sum(planted_values, planted_targets)
        row["exact"] = f"{int(np.sum(planted.error_s == 0))}/{planted_targets.size}"
        rows.append(row)
        if progress:
            progress(1)
    if ties:
        cells = max(TIE_CELLS // (20 if quick else 1), 2)
        for pool, values in [("integer", rng.integers(1, 17, (cells, 32)).astype(float)),
                             ("equal", np.ones((cells, 32)))]:
            targets = np.round(rng.uniform(0.25, 0.75, cells) * values.sum(axis=1))
            rows.append(_solver_row(32, pool, values, targets) | {"exact": ""})
            if progress:
                progress(1)
    return rows


PEERS_PRECISION_REL = 1e-4
"""The precision ``bench peers`` times its peers to, relative to the pool's range ``sum |v|``:
a branch calibrated to about 1e-4 (median sigma / g 1.1e-4 on a simulated 8x8x8 lab)."""


@njit(cache=True)
def brute_force_error(values, target, stop=-1.0):
    """Least |subset sum - target| over all 2^m subsets, by Gray code (one add per subset).

    With ``stop >= 0`` the enumeration ends at the first subset within ``stop`` of the target.
    The running sum drifts by rounding over 2^m updates, so the best subset's sum is recomputed
    exactly from its mask at the end.
    """
    m = values.size
    best = abs(target)
    best_code = 0
    total = 0.0
    for step in range(1, 1 << m):
        if best <= stop:
            break
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


def _brute_force(values: np.ndarray, target: float, time_limit_s: float, gap: float) -> tuple[float, bool]:
    """Brute force to the optimum (``gap`` 0: every subset) or to the first subset within ``gap``."""
    return float(brute_force_error(values, target, gap if gap > 0 else -1.0)), gap == 0


def _quiet(make: Callable):
    """``make()`` with the process's stdout (fd 1) on the null device: the first ``highspy.Highs()``
    prints a banner there from C++, which would corrupt ``--json`` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _highs(values: np.ndarray, target: float, time_limit_s: float, gap: float) -> tuple[float, bool]:
    """HiGHS through ``highspy``: minimise z with z >= |v.x - target|, x binary.

    ``mip_abs_gap`` is ``gap`` (0: prove the optimum) and ``mip_rel_gap`` 0: a relative gap on
    an objective that is near 0 at the optimum would leave the absolute one (default 1e-6) and
    the time limit to decide. Returns the error of the rounded answer and whether HiGHS proved it.
    """
    import highspy

    m = values.size
    h = _quiet(highspy.Highs)
    for option, value in [("output_flag", False), ("time_limit", float(time_limit_s)),
                          ("mip_rel_gap", 0.0), ("mip_abs_gap", float(gap)),
                          ("mip_feasibility_tolerance", 1e-9)]:
        h.setOptionValue(option, value)
    inf = highspy.kHighsInf
    h.addVars(m + 1, np.zeros(m + 1), np.r_[np.ones(m), inf])
    h.changeColsIntegrality(m, np.arange(m, dtype=np.int32), np.full(m, highspy.HighsVarType.kInteger))
    h.changeColCost(m, 1.0)
    columns = np.arange(m + 1, dtype=np.int32)
    h.addRows(2, np.array([-inf, target]), np.array([target, inf]), 2 * (m + 1),
              np.array([0, m + 1], dtype=np.int32), np.r_[columns, columns],
              np.r_[values, -1.0, values, 1.0])
    h.run()
    x = np.asarray(h.getSolution().col_value[:m])
    if x.size != m:
        return float("inf"), False
    proven = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return float(abs(values[np.round(x) == 1].sum() - target)), proven


def _cpsat(values: np.ndarray, target: float, time_limit_s: float, gap: float) -> tuple[float, bool]:
    """OR-Tools CP-SAT on values scaled to integers (2^40 full scale): minimise |v.x - target|,
    stopping within ``gap`` (scaled; 0: prove the optimum)."""
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
    solver.parameters.absolute_gap_limit = float(np.floor(gap * scale))
    solver.parameters.relative_gap_limit = 0.0
    solver.parameters.catch_sigint_signal = False  # leave Ctrl-C to Python (and the drivers' shield)
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float("inf"), False
    chosen = np.array([solver.Value(xk) == 1 for xk in x])
    return float(abs(values[chosen].sum() - target)), status == cp_model.OPTIMAL


Peer = Callable[[np.ndarray, float, float, float], tuple[float, bool]]


def _peers() -> tuple[dict[str, Peer], list[str]]:
    """The peers installed, and a note for each one missing."""
    peers: dict[str, Peer] = {"brute_force": _brute_force}
    missing = []
    for name, module, peer, extra in [("highs", "highspy", _highs, "peers"),
                                      ("cpsat", "ortools.sat.python.cp_model", _cpsat, "ortools")]:
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{name}: pip install 'crossbar-ctl[{extra}]'")
        else:
            peers[name] = peer
    return peers, missing


def bench_peers(*, sizes: Sequence[int] = (8, 16, 24), instances: int = 5, time_limit_s: float = 10.0,
                precision_rel: float = PEERS_PRECISION_REL, seed: int = 0,
                progress: Progress = None) -> dict:
    """Time per target of each solver on the same instances: to the proven optimum, and to a precision.

    The precision of instance i is ``precision_rel * sum |v_i|`` (the pool's range); a solver
    reaches it when its error is within that of the optimum. Each peer runs twice per target:
    told to prove the optimum (gap 0), then told to stop within the precision (an absolute gap;
    brute force stops at the first subset within it). Both runs get ``time_limit_s``; a run that
    is not proven (or not within the precision) counts its full time, so its mean is a lower
    bound. ``optimum_vs_ours`` and ``precision_vs_ours`` divide the peer's mean by the
    optimizer's, which solves every target to the proven optimum (so its time to the precision
    is the same). The optimizer is timed first, one call per target (validation included), best
    of three rounds, before any peer runs (a MILP solver's idle worker threads would otherwise
    compete with numba's); brute force referees it (m <= 30). HiGHS (``highspy``, the ``peers``
    extra) and OR-Tools CP-SAT (the ``ortools`` extra) run when installed; ``missing`` says how
    to install the others.
    """
    if not 0.0 < precision_rel < 1.0 or not time_limit_s > 0.0 or instances < 1:
        raise CrossbarError(f"bench peers: need 0 < precision_rel < 1, time_limit_s > 0 and instances "
                            f">= 1, got {precision_rel!r}, {time_limit_s!r} and {instances!r}")
    rng = np.random.default_rng(seed)
    solve_subset_sum(np.ones(2), 1.0)  # load the compiled kernels before timing
    brute_force_error(np.ones(2), 1.0, -1.0)
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
    peers, missing = _peers()
    rows = []
    for m, values, targets, optimum, ours in cases:
        tolerance = precision_rel * np.abs(values).sum(axis=1)
        rows.append({"m": m, "solver": "optimizer", "optimum_s": ours, "proven": f"{instances}/{instances}",
                     "optimum_vs_ours": 1.0, "precision_s": ours,
                     "within_precision": f"{instances}/{instances}", "precision_vs_ours": 1.0})
        for name, peer in peers.items():
            if name == "brute_force" and m > 30:
                continue
            row: dict = {"m": m, "solver": name}
            for run, gaps in [("optimum", np.zeros(instances)), ("precision", tolerance)]:
                errors, proven, spent = [], [], 0.0
                for v, t, gap in zip(values, targets, gaps):
                    start = time.perf_counter()
                    error, done = peer(v, t, time_limit_s, float(gap))
                    spent += time.perf_counter() - start
                    errors.append(error)
                    proven.append(done)
                errors = np.array(errors)
                if run == "optimum":
                    if name == "brute_force" and np.any(errors < optimum * (1 - 1e-9)):
                        raise CrossbarError(f"brute force beat the optimizer at m = {m}: not exact")
                    ok = np.array(proven) & (errors <= optimum * (1 + 1e-9))
                    row |= {"optimum_s": spent / instances, "proven": f"{int(ok.sum())}/{instances}",
                            "optimum_vs_ours": spent / instances / ours}
                else:
                    ok = errors <= optimum + tolerance
                    row |= {"precision_s": spent / instances,
                            "within_precision": f"{int(ok.sum())}/{instances}",
                            "precision_vs_ours": spent / instances / ours}
            rows.append(row)
        if progress:
            progress(1)
    return {"precision_rel": precision_rel, "time_limit_s": time_limit_s, "instances": instances,
            "rows": rows, "missing": missing}


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


LOTTERY_TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
"""Tolerances :func:`bench_lottery` counts within: the paper's 0.01, then a decade at a time."""


def bench_lottery(*, kind: str = "network", targets: int = 397_000, pool: int = 21,
                  low: float = -0.464, high: float = 0.541,
                  tolerances: Sequence[float] = LOTTERY_TOLERANCES, target_max: float = 1.0,
                  seed: int = 0, chunk: int = 50_000, progress: Progress = None) -> dict:
    """Pensia et al. (NeurIPS 2020), Experiment 1: approximate each target weight by a subset of
    ``pool`` fresh values uniform on [low, high]; count those within each tolerance.

    Targets come from :func:`lottery_targets`. Every answer is the optimum, so the error
    distribution is the problem's, not the solver's: ``median_error`` says where it sits (the
    paper's tolerance 0.01 is far above it), ``within_<tolerance>`` counts targets within each
    of ``tolerances``. A target outside what its pool can reach (too few negative values to sum
    below it, say) is counted in ``out_of_range`` (the answer is then the nearest reachable sum,
    still optimal), and ``worst_error_reachable`` is the worst error over the others. (They
    solved the weights of a trained 784-500-10 network with Gurobi: 77,266 s on 36 cores.)
    """
    rng = np.random.default_rng(seed)
    goals = lottery_targets(kind, rng, targets=targets, target_max=target_max)
    solve_subset_sum(np.ones(2), 1.0)  # load the compiled kernels before timing
    errors = np.empty(targets)
    outside = 0
    proven = 0
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
        errors[first:first + len(goal)] = error
        reachable = result.status != SubsetSumStatus.OUT_OF_RANGE
        outside += int(np.sum(~reachable))
        proven += int(np.sum(result.proven))
        worst_reachable = max(worst_reachable, float(error[reachable].max(initial=0.0)))
        if progress:
            progress(len(goal))
    within = {f"within_{t:.0e}": int(np.sum(errors <= t)) for t in tolerances}
    return {"targets_from": kind, "targets": targets, "max_abs_target": float(np.abs(goals).max()),
            "pool": pool, **within, "median_error": float(np.median(errors)),
            "out_of_range": outside, "proven_optimal": proven, "worst_error": float(errors.max()),
            "worst_error_reachable": worst_reachable, "solve_s": solve_s,
            "wall_s": time.perf_counter() - start, "paper_gurobi_s": 77_266.0}
