"""The subset-sum optimizer: which branches of each cell to close so its conductance hits a target.

:func:`solve_subset_sum` validates its input, calls the numba kernels of ``_kernels`` and returns
a frozen :class:`SubsetSumResult`.
"""

from __future__ import annotations

import enum
import numbers
from dataclasses import dataclass

import numba
import numpy as np

from crossbar_ctl.optimizer import _kernels
from crossbar_ctl.core.errors import OptimizerError

__all__ = ["MAX_BRANCHES", "MAX_EXACT_BRANCHES", "SubsetSumResult", "SubsetSumStatus", "solve_subset_sum"]

MAX_EXACT_BRANCHES = _kernels.MAX_EXACT
"""Cells with at most this many usable branches are solved exactly (meet in the middle)."""

MAX_BRANCHES = 128
"""Largest pool a cell may have; beyond ``MAX_EXACT_BRANCHES`` the solver reduces first."""

PARALLEL_SUMS = 2**17
"""Calls with fewer half sums than this in all (``cells * 2^(m / 2)``, about 0.3 ms of work) run on
one thread: waking numba's other threads costs more, up to a scheduler time slice when other
processes keep the cores busy (a one-cell call at m = 24 took 6-16 ms on two threads against 0.2 ms
on one, on a loaded 2-core machine)."""


class SubsetSumStatus(enum.IntEnum):
    """How a cell's answer was reached."""

    OPTIMAL = _kernels.OPTIMAL
    """Proven optimal: the least error, ties broken by variance, then closed count."""
    OUT_OF_RANGE = _kernels.OUT_OF_RANGE
    """The target lies outside the reachable range; the nearest reachable sum is returned (optimal)."""
    NOT_PROVEN = _kernels.NOT_PROVEN
    """More than ``MAX_EXACT_BRANCHES`` usable branches: reduced, then solved exactly; not proven."""


@dataclass(frozen=True)
class SubsetSumResult:
    """Switch selection per cell. Arrays are read-only; shapes drop the cell axis for one pool.

    Attributes
    ----------
    mask : bool ndarray, (cells, m) or (m,)
        Branches to close.
    achieved_s : float64 ndarray, (cells,) or ()
        Sum of the closed branches' values, siemens.
    error_s : float64 ndarray, (cells,) or ()
        ``achieved_s - target_s``, siemens.
    sigma_s : float64 ndarray, (cells,) or ()
        Propagated uncertainty ``sqrt(sum of sigma_s**2 over closed branches)``, siemens.
    status : int8 ndarray, (cells,) or ()
        :class:`SubsetSumStatus` values.
    """

    mask: np.ndarray
    achieved_s: np.ndarray
    error_s: np.ndarray
    sigma_s: np.ndarray
    status: np.ndarray

    def status_names(self) -> np.ndarray:
        """Status of each cell by name (``"OPTIMAL"``, ...), same shape as ``status``."""
        names = np.array([s.name for s in SubsetSumStatus])
        return names[np.asarray(self.status, dtype=np.int64)]

    @property
    def proven(self) -> np.ndarray:
        """True where the answer is proven optimal (``OPTIMAL`` or ``OUT_OF_RANGE``)."""
        return self.status != SubsetSumStatus.NOT_PROVEN


def _real_array(name: str, value, *, ndim: tuple[int, ...]) -> np.ndarray:
    """A finite float64 array, or an ``OptimizerError`` naming the argument."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise OptimizerError(f"{name}: not an array of numbers ({exc})") from exc
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise OptimizerError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if array.ndim not in ndim:
        raise OptimizerError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndim)}, "
                             f"got shape {array.shape}")
    array = _for_kernel(array, np.float64)
    if not np.all(np.isfinite(array)):
        raise OptimizerError(f"{name}: contains NaN or infinite values")
    return array


def _shaped(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != shape:
        raise OptimizerError(f"{name}: expected shape {shape} (from values_s), got {array.shape}")
    return array


def _for_kernel(array: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous, of ``dtype`` and writable: read-only arrays would compile another signature."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def _max_closed(value, cells: int, single: bool) -> np.ndarray:
    if value is None:
        return np.full(cells, -1, dtype=np.int64)
    array = np.asarray(value)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise OptimizerError(f"max_closed: expected a non-negative integer, got {value!r}")
    if array.ndim == 1 and not single:
        _shaped("max_closed", array, (cells,))
    elif array.ndim != 0:
        raise OptimizerError(f"max_closed: expected an integer or shape ({cells},), got shape {array.shape}")
    if np.any(array < 0):
        raise OptimizerError(f"max_closed: must be >= 0, got {int(array.min())}")
    return _for_kernel(np.broadcast_to(array, (cells,)), np.int64)


def _non_negative(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise OptimizerError(f"{name}: expected a number, got {value!r}") from exc
    if not np.isfinite(number) or number < 0:
        raise OptimizerError(f"{name}: must be finite and >= 0, got {value!r}")
    return number


def _seeds(rng, cells: int, *, draw: bool) -> np.ndarray:
    """Per-cell seeds for the reduction path (zeros unless ``draw``); validates ``rng`` always."""
    if rng is None:
        rng = 0
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise OptimizerError(f"rng: a seed must be >= 0, got {rng}")
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise OptimizerError(f"rng: expected None, an int seed or a numpy Generator, got {type(rng).__name__}")
    if not draw:
        return np.zeros(cells, dtype=np.uint64)
    return rng.integers(0, 2**63, size=cells, dtype=np.int64).astype(np.uint64)


def solve_subset_sum(values_s, target_s, *, sigma_s=None, usable=None, max_closed=None,
                     tolerance_s: float = 0.0, common_mode_weight: float = 0.0, rng=None) -> SubsetSumResult:
    """Choose, per cell, the subset of branches whose summed conductance is closest to the target.

    Parameters
    ----------
    values_s : array_like of float, (cells, m) or (m,)
        Signed branch conductances, siemens. A differential pair is one pool: plus-column branches
        positive, minus-column branches negative. ``1 <= m <= MAX_BRANCHES``.
    target_s : array_like of float, (cells,) or scalar
        Target conductance per cell, siemens (a scalar for a single pool).
    sigma_s : array_like of float, same shape as values_s, optional
        Uncertainty (one standard deviation) of each branch, siemens, >= 0. Default zero.
    usable : array_like of bool, same shape as values_s, optional
        False for branches that must stay open (faulty). Default all usable.
    max_closed : int or array_like of int (cells,), optional
        Most branches to close per cell. Default no cap.
    tolerance_s : float, optional
        Near-tie window, siemens: among subsets whose error is within ``tolerance_s`` of the best,
        take the lowest propagated uncertainty, then the fewest closed branches. Default 0 (exact
        ties only). A wide window costs time: every pair of distinct half sums in it is visited.
    common_mode_weight : float, optional
        Common-mode-aware joint cost, in ``[0, 1)``, dimensionless: the subset with the least
        ``|error| + common_mode_weight * sum(|values_s|)`` over its closed branches (siemens of
        error charged per siemens of ``G+ + G-`` of a differential pair), then the fewest closed;
        a subset gives up only as much error as the common mode it saves is worth. The choice does
        not change when every value and target is scaled alike. Default 0: off (the uncertainty
        tie-break above); plans take ``PlanOptions.common_mode_weight``.
    rng : None, int or numpy.random.Generator, optional
        Randomness of the reduction path (cells beyond ``MAX_EXACT_BRANCHES`` usable branches).
        None is seed 0, so results are reproducible by default.

    Returns
    -------
    SubsetSumResult

    Raises
    ------
    OptimizerError
        Non-numeric, non-finite or wrongly shaped input, an empty or too large pool, negative
        sigma, max_closed or tolerance, a common-mode weight outside [0, 1); the message names
        the argument.
    """
    values = _real_array("values_s", values_s, ndim=(1, 2))
    shape = values.shape
    single = values.ndim == 1
    values = values.reshape(1, -1) if single else values
    cells, m = values.shape
    if m == 0:
        raise OptimizerError("values_s: empty pool (no branches)")
    if m > MAX_BRANCHES:
        raise OptimizerError(f"values_s: {m} branches per cell, at most {MAX_BRANCHES} are supported")
    with np.errstate(over="ignore"):
        overflow = not np.isfinite(np.sum(np.abs(values), axis=1)).all()
    if overflow:
        raise OptimizerError("values_s: sums overflow float64")
    target = _real_array("target_s", target_s, ndim=(0,) if single else (0, 1))
    if target.ndim == 1:
        _shaped("target_s", target, (cells,))
    target = np.array(np.broadcast_to(target, (cells,)))  # a writable copy: one compiled signature
    if sigma_s is None:
        sig2 = np.zeros_like(values)
    else:
        sigma = _shaped("sigma_s", _real_array("sigma_s", sigma_s, ndim=(1, 2)), shape).reshape(cells, m)
        if np.any(sigma < 0):
            raise OptimizerError("sigma_s: uncertainties must be >= 0")
        with np.errstate(over="ignore"):
            sig2 = sigma**2
        if not np.isfinite(sig2.sum(axis=1)).all():
            raise OptimizerError("sigma_s: squared sums overflow float64")
    if usable is None:
        allowed = np.ones((cells, m), dtype=bool)
    else:
        allowed = np.asarray(usable)
        if allowed.dtype != bool:
            raise OptimizerError(f"usable: expected a bool mask, got dtype {allowed.dtype}")
        allowed = _for_kernel(_shaped("usable", allowed, shape).reshape(cells, m), bool)
    cap = _max_closed(max_closed, cells, single)
    tolerance = _non_negative("tolerance_s", tolerance_s)
    weight = _non_negative("common_mode_weight", common_mode_weight)
    if weight >= 1:
        raise OptimizerError(f"common_mode_weight: must be < 1, got {common_mode_weight!r}")
    rank = np.abs(values) if weight > 0 else sig2  # the kernels' second key: G+ + G-, or the uncertainty
    seeds = _seeds(rng, cells, draw=bool(np.any(allowed.sum(axis=1) > MAX_EXACT_BRANCHES)))

    mask = np.zeros((cells, m), dtype=bool)
    achieved = np.zeros(cells)
    variance = np.zeros(cells)
    status = np.zeros(cells, dtype=np.int8)
    if cells:
        threads = numba.get_num_threads()
        if cells * 2.0 ** (min(m, MAX_EXACT_BRANCHES) / 2) < PARALLEL_SUMS:
            numba.set_num_threads(1)  # this thread's parallel regions only
        try:
            _kernels.solve_cells(values, rank, allowed, target, cap, tolerance, weight, seeds,
                                 numba.get_num_threads(), mask, achieved, variance, status)
        finally:
            numba.set_num_threads(threads)
        if rank is not sig2:
            variance = np.sum(np.where(mask, sig2, 0.0), axis=1)
    arrays = [mask, achieved, achieved - target, np.sqrt(variance), status]
    if single:
        arrays = [a[0] for a in arrays]
        arrays[1:] = [np.asarray(a) for a in arrays[1:]]
    for array in arrays:
        array.flags.writeable = False
    return SubsetSumResult(*arrays)
