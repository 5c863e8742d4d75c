"""From raw reading sums to branch conductances, uncertainties and fault flags.

Pipeline (every step vectorised over the array):

1. a read-noise model ``var(I) = (a I)^2 + b^2`` fitted to the scatter of repeated readings
   (per-branch sample variances of two or three readings are too noisy to quote as sigma);
2. currents to cell conductances through the twin (wire and sense resistance, exactly);
3. per cell, weighted least squares of the design's step readings and the all-open baseline,
   ``G_s = sum_k D[s, k] g_k + b`` and ``G_base = b``, with the full covariance;
4. fault flags from the population, the baseline and the residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from calibration._record import (
    FLAG_INCONSISTENT,
    FLAG_NOT_MEASURED,
    FLAG_OPEN,
    FLAG_SHORT,
    FLAG_STUCK_CLOSED,
    FLAG_UNCERTAIN,
    CalibrationOptions,
    TwinParameters,
)
from calibration._twin import row_step_conductance, solve_row_step

SHORT_PROBE = 0.02
"""Shorts are read again at this fraction of the read voltage (their current stays in range)."""

__all__ = ["SHORT_PROBE", "Estimate", "RawData", "estimate", "fit_noise", "mean_var", "quantization_var"]


def mean_var(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance from sums (NaN where fewer than 1 / 2 readings)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        var = (total_sq - count * mean**2) / (count - 1)
    return mean, np.where(count > 1, np.maximum(var, 0.0), np.nan)


def fit_noise(mean_a: np.ndarray, var_a2: np.ndarray) -> tuple[float, float]:
    """Fit ``var = (a I)^2 + b^2`` to sample variances of repeated readings.

    Parameters
    ----------
    mean_a, var_a2 : ndarray
        Mean current and sample variance of each group of repeated readings (NaN ignored).

    Returns
    -------
    noise_rel, noise_floor_a : float
        ``a`` (relative) and ``b`` (amperes), per reading.
    """
    ok = np.isfinite(mean_a) & np.isfinite(var_a2)
    x = mean_a[ok] ** 2
    y = var_a2[ok]
    if y.size < 2 or not np.any(y > 0):
        return 0.0, 0.0
    x_scale = float(np.median(x[x > 0])) if np.any(x > 0) else 1.0
    y_scale = float(np.mean(y))
    x, y = x / x_scale, y / y_scale  # both columns of order 1: lstsq keeps both
    params = np.array([0.0, 1.0])
    keep = np.ones(y.size, bool)
    for _ in range(6):  # iteratively reweighted: var of a sample variance ~ its expectation^2
        expected = np.maximum(params[0] * x + params[1], 1e-12)
        keep = y < 50.0 * expected  # a rare glitch must not set the noise of every branch
        w = keep / expected
        design = np.stack([x, np.ones_like(x)], axis=1) * w[:, None]
        params, *_ = np.linalg.lstsq(design, y * w, rcond=None)
        params = np.maximum(params, [0.0, 1e-9])
    return float(np.sqrt(params[0] * y_scale / x_scale)), float(np.sqrt(params[1] * y_scale))


def quantization_var(reading_var_a2: np.ndarray | float, resolution_a: float) -> np.ndarray | float:
    """Variance of the rounding error that averaging repeated readings does not remove.

    A quantizer of step ``q`` adds error of variance ``q^2 / 12``; read noise of std ``s``
    dithers it, and the part common to every reading of one level (the bias that averaging
    keeps) falls off as ``exp(-2 pi^2 s^2 / q^2)`` (the first Fourier term of the rounding
    error): negligible once ``s`` exceeds about ``q / 2``, all of ``q^2 / 12`` when ``s << q``.
    """
    if resolution_a <= 0:
        return 0.0 * np.asarray(reading_var_a2)
    return resolution_a**2 / 12.0 * np.exp(-2.0 * np.pi**2 * np.asarray(reading_var_a2) / resolution_a**2)


@dataclass(frozen=True)
class RawData:
    """Raw reading sums of one calibration (the arrays a record keeps for resuming).

    Attributes
    ----------
    design : ndarray uint8 (steps, branches)
    step_sum_a, step_sumsq_a2 : ndarray (rows, steps, cols)
        Sum and sum of squares of the sensed currents of each step.
    step_count : ndarray int (rows, steps, cols)
    base_sum_a, base_sumsq_a2 : ndarray (rows, cols)
        The same for the all-open baseline.
    base_count : ndarray int (rows, cols)
    excluded : ndarray bool (rows, cols, branches)
        Branches left open in every step (shorts found while measuring).
    short_current_a : ndarray (rows, cols, branches)
        Mean current of each excluded short read alone at ``SHORT_PROBE`` times the read
        voltage (NaN elsewhere, or where it overflowed even then).
    """

    design: np.ndarray
    step_sum_a: np.ndarray
    step_sumsq_a2: np.ndarray
    step_count: np.ndarray
    base_sum_a: np.ndarray
    base_sumsq_a2: np.ndarray
    base_count: np.ndarray
    excluded: np.ndarray
    short_current_a: np.ndarray

    @classmethod
    def empty(cls, design: np.ndarray, rows: int, cols: int) -> "RawData":
        steps, branches = design.shape
        return cls(design=np.asarray(design, dtype=np.uint8),
                   step_sum_a=np.zeros((rows, steps, cols)),
                   step_sumsq_a2=np.zeros((rows, steps, cols)),
                   step_count=np.zeros((rows, steps, cols), dtype=np.int64),
                   base_sum_a=np.zeros((rows, cols)), base_sumsq_a2=np.zeros((rows, cols)),
                   base_count=np.zeros((rows, cols), dtype=np.int64),
                   excluded=np.zeros((rows, cols, branches), dtype=bool),
                   short_current_a=np.full((rows, cols, branches), np.nan))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"raw_{name}": getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "RawData":
        return cls(**{name: np.array(arrays[f"raw_{name}"]) for name in cls.__dataclass_fields__})

    def clear_row(self, row: int) -> None:
        for array in (self.step_sum_a, self.step_sumsq_a2, self.step_count):
            array[row] = 0

    def restart_row(self, row: int) -> None:
        """Forget everything measured on ``row``, shorts included (a row is measured whole)."""
        self.clear_row(row)
        self.excluded[row] = False
        self.short_current_a[row] = np.nan

    def clear_base(self, rows: np.ndarray) -> None:
        """Forget the baseline readings of ``rows`` (an interrupted baseline is measured again)."""
        for array in (self.base_sum_a, self.base_sumsq_a2, self.base_count):
            array[rows] = 0

    def add_step(self, row: int, step: int, current_a: np.ndarray, cols: slice | np.ndarray = slice(None)) -> None:
        """Add readings ``(repeats, n)`` of one step of ``row`` for the columns ``cols``."""
        current = np.atleast_2d(current_a)
        self.step_sum_a[row, step, cols] += current.sum(axis=0)
        self.step_sumsq_a2[row, step, cols] += (current**2).sum(axis=0)
        self.step_count[row, step, cols] += current.shape[0]

    def add_base(self, row: int, current_a: np.ndarray, cols: slice | np.ndarray = slice(None)) -> None:
        current = np.atleast_2d(current_a)
        self.base_sum_a[row, cols] += current.sum(axis=0)
        self.base_sumsq_a2[row, cols] += (current**2).sum(axis=0)
        self.base_count[row, cols] += current.shape[0]


@dataclass(frozen=True)
class Estimate:
    """Branch estimates with their uncertainties and flags, plus what they came from."""

    conductance_s: np.ndarray
    sigma_s: np.ndarray
    flags: np.ndarray
    baseline_s: np.ndarray
    """All-open conductance of each cell (leakage, and stuck-closed branches), ``(rows, cols)``."""
    noise_rel: float
    noise_floor_a: float
    chi2: np.ndarray
    """Weighted residual sum of squares per cell (0 when the design has no redundancy)."""


def cell_conductance_s(current_a: np.ndarray, *, voltage_v: float, method: str, twin: TwinParameters,
                       row_index: np.ndarray, array_rows: int,
                       others_s: np.ndarray | None = None) -> np.ndarray:
    """Cell conductances from sensed currents ``(n, steps, cols)`` (or ``(n, cols)``) of rows ``row_index``.

    ``readout``: every cell of the driven row was closed at once (row steps); ``smu``: one cell
    at a time. ``others_s`` (``(array_rows, cols)``, zero where open) are cells closed throughout
    the run (stuck switches): where given, the affected steps are solved on the full network.
    """
    current = np.asarray(current_a, dtype=np.float64)
    flat = current.ndim == 2
    if flat:
        current = current[:, None, :]
    rows_at = np.asarray(row_index)[:, None]
    if method == "readout":
        g = row_step_conductance(current, voltage_v, rows_at, twin, array_rows)
    else:  # a cell alone: its own current in every row segment up to it
        cols = current.shape[-1]
        series = (np.arange(cols) + 1) * twin.row_wire_resistance_ohm \
            + (array_rows - rows_at)[..., None] * twin.col_wire_resistance_ohm + twin.sense_resistance_ohm \
            + twin.driver_resistance_ohm
        g = current / (voltage_v - current * series)
    if others_s is not None and np.any(others_s > 0):
        stuck_rows, stuck_cols = others_s.any(axis=1), others_s.any(axis=0)
        for local, row in enumerate(np.asarray(row_index)):
            if not np.all(np.isfinite(current[local])):
                continue
            if method == "readout":  # every column of the row carries current
                g[local] = solve_row_step(current[local], row, voltage_v, twin, others_s, g[local])
                continue
            for col in range(current.shape[-1]):  # only cells sharing a line with a stuck one
                if stuck_rows[row] or stuck_cols[col]:
                    closed = np.arange(current.shape[-1]) == col
                    g[local] = solve_row_step(current[local], row, voltage_v, twin, others_s,
                                              g[local], closed=closed)
    return g[:, 0, :] if flat else g


def estimate(raw: RawData, *, voltage_v: float, method: str, twin: TwinParameters,
             options: CalibrationOptions, measured_rows: np.ndarray,
             noise: tuple[float, float] | None = None, resolution_a: float = 0.0,
             row_index: np.ndarray | None = None,
             array_rows: int | None = None, stuck_s: np.ndarray | None = None) -> Estimate:
    """Estimate every branch from the raw sums.

    Parameters
    ----------
    raw : RawData
    voltage_v : float
        Driven-row voltage of every reading.
    method : {"readout", "smu"}
    twin : TwinParameters
        Wiring used to turn currents into cell conductances.
    options : CalibrationOptions
        Fault thresholds and the uncertainty target.
    measured_rows : ndarray bool (rows,)
        Rows whose steps are complete.
    noise : (float, float), optional
        The read-noise model; fitted from the readings when not given.
    resolution_a : float
        Step of the readings (an ADC's LSB; 0 for unquantized readings), see
        :func:`quantization_var`.
    row_index, array_rows : optional
        When ``raw`` holds only some rows of the array: their indices, and the array's rows.
    stuck_s : ndarray (array_rows, cols), optional
        Cells closed throughout (stuck switches), by default found in ``raw``'s baseline.
    """
    design = raw.design.astype(np.float64)
    steps, branches = design.shape
    rows, cols = raw.base_sum_a.shape
    step_mean, step_var = mean_var(raw.step_sum_a, raw.step_sumsq_a2, raw.step_count)
    base_mean, base_var = mean_var(raw.base_sum_a, raw.base_sumsq_a2, raw.base_count)
    if noise is None:
        # The steps carry the information (the all-open baseline reads ~0, often one ADC code).
        noise = fit_noise(step_mean[measured_rows].ravel(), step_var[measured_rows].ravel())
    noise_rel, noise_floor_a = noise

    step_mean = np.where(measured_rows[:, None, None], step_mean, 0.0)
    base_mean = np.nan_to_num(base_mean)
    row_index = np.arange(rows) if row_index is None else np.asarray(row_index)
    array_rows = rows if array_rows is None else array_rows
    where = dict(voltage_v=voltage_v, method=method, twin=twin, row_index=row_index,
                 array_rows=array_rows)
    base_g = cell_conductance_s(base_mean, **where)
    scale = np.nanmedian(np.abs(step_mean[measured_rows])) / voltage_v if measured_rows.any() else 0.0
    stuck_cells = base_g > options.open_factor * scale if scale > 0 else np.zeros_like(base_g, bool)
    if stuck_s is None:
        stuck_s = np.zeros((array_rows, cols))
        stuck_s[row_index] = np.where(stuck_cells, base_g, 0.0)
    step_g = cell_conductance_s(step_mean, others_s=stuck_s, **where)

    def variance_g(mean_a: np.ndarray, g: np.ndarray, count: np.ndarray) -> np.ndarray:
        var_a = (noise_rel * mean_a) ** 2 + noise_floor_a**2
        # A reading of exactly zero is off by the true current, below half a step (the leakage of
        # an all-open cell: picoamperes), not by a uniform rounding error.
        rounding = np.where(mean_a != 0, quantization_var(var_a, resolution_a), 0.0)
        var_mean = var_a / np.maximum(count, 1) + rounding
        with np.errstate(divide="ignore", invalid="ignore"):
            volts = np.where(np.abs(g) > 0, np.abs(mean_a / g), voltage_v)
            volts = np.where(np.isfinite(volts) & (volts > 0), volts, voltage_v)
            return var_mean / volts**2

    step_varg = variance_g(step_mean, step_g, raw.step_count)  # (rows, steps, cols)
    base_varg = variance_g(base_mean, base_g, raw.base_count)  # (rows, cols)

    # Weighted least squares per cell: unknowns (g_0..g_{n-1}, baseline).
    a = np.zeros((steps + 1, branches + 1))
    a[:steps, :branches] = design
    a[:, branches] = 1.0
    keep = np.concatenate([~raw.excluded, np.ones((rows, cols, 1), bool)], axis=2)  # (r, c, n+1)
    y = np.concatenate([np.moveaxis(step_g, 1, 2), base_g[..., None]], axis=2)  # (r, c, m+1)
    var = np.concatenate([np.moveaxis(step_varg, 1, 2), base_varg[..., None]], axis=2)
    with np.errstate(divide="ignore"):
        w = np.where(var > 0, 1.0 / var, 0.0)
    w = np.where(np.isfinite(y), w, 0.0)
    y = np.nan_to_num(y)
    ac = a[None, None] * keep[:, :, None, :]  # (r, c, m+1, n+1)
    normal = np.einsum("rcsi,rcs,rcsj->rcij", ac, w, ac)
    normal += np.eye(branches + 1) * (~keep)[..., None] * 1.0  # pin excluded unknowns
    normal += np.eye(branches + 1) * 1e-30  # rows never measured
    cov = np.linalg.inv(normal)
    rhs = np.einsum("rcsi,rcs,rcs->rci", ac, w, y)
    est = np.einsum("rcij,rcj->rci", cov, rhs)
    resid = y - np.einsum("rcsi,rci->rcs", ac, est)
    chi2 = np.einsum("rcs,rcs,rcs->rc", resid, w, resid)
    g = est[..., :branches]
    sigma = np.sqrt(np.maximum(np.diagonal(cov, axis1=2, axis2=3)[..., :branches], 0.0))
    baseline = est[..., branches]

    # Shorts: read alone at a low voltage, through the same wiring.
    probe_v = voltage_v * SHORT_PROBE
    alone = cell_conductance_s(np.moveaxis(np.nan_to_num(raw.short_current_a), 2, 1), voltage_v=probe_v,
                               method="smu", twin=twin, row_index=row_index, array_rows=array_rows)
    alone = np.moveaxis(alone, 1, 2)
    probed = np.isfinite(raw.short_current_a)
    g = np.where(probed, alone, g)
    short_a = np.abs(np.nan_to_num(raw.short_current_a)) + 1e-30
    short_rel = np.sqrt((noise_rel * short_a) ** 2 + noise_floor_a**2) / short_a  # one reading's
    sigma = np.where(probed, np.abs(alone) * short_rel, sigma)

    flags = np.zeros((rows, cols, branches), dtype=np.uint8)
    flags[~measured_rows] |= FLAG_NOT_MEASURED
    valid = measured_rows[:, None, None] & ~raw.excluded
    median = float(np.median(g[valid])) if valid.any() else 0.0
    low = g < options.open_factor * median
    # A stuck-closed branch is in the baseline of its cell, so it reads ~0 above it.
    # An open branch of that cell reads the same, so the baseline is shared among the suspects:
    # the cell's forced conductance (what the engine adds to it) stays the baseline, not a multiple.
    stuck = stuck_cells[..., None] & low & valid
    flags[stuck] |= FLAG_STUCK_CLOSED
    suspects = np.maximum(stuck.sum(axis=2), 1)[..., None]
    g = np.where(stuck, base_g[..., None] / suspects, g)
    sigma = np.where(stuck, np.sqrt(base_varg)[..., None] / suspects, sigma)
    flags[low & valid & ~stuck] |= FLAG_OPEN
    flags[(raw.excluded | (g > options.short_factor * median)) & measured_rows[:, None, None]] |= FLAG_SHORT
    dof = steps - int(np.linalg.matrix_rank(design))
    if dof > 0:
        limit = stats.chi2.isf(stats.norm.sf(options.inconsistency_z) * 2, dof)
        bad = (chi2 > limit) & measured_rows[:, None]
        flags[bad] |= FLAG_INCONSISTENT
    if options.target_rel_sigma is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            over = sigma > options.target_rel_sigma * np.abs(g)
        flags[over & valid & (flags == 0)] |= FLAG_UNCERTAIN
    return Estimate(conductance_s=g, sigma_s=sigma, flags=flags, baseline_s=baseline,
                    noise_rel=noise_rel, noise_floor_a=noise_floor_a, chi2=chi2)
