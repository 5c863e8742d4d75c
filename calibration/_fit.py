"""Estimates of every branch, through the wiring twin fitted to the pattern readings."""

from __future__ import annotations

import numpy as np

from calibration._estimate import (
    Estimate,
    RawData,
    estimate,
    mean_var,
    quantization_var,
)
from calibration._patterns import pattern_prediction
from calibration._record import (
    FLAG_SHORT,
    FLAG_STUCK_CLOSED,
    CalibrationHeader,
    CalibrationOptions,
    TwinParameters,
)
from calibration._twin import TWIN_RESISTANCES, fit_twin

__all__ = ["fit_and_estimate", "gain_corrected", "with_twin"]


def gain_corrected(raw: RawData, column_gain: np.ndarray | tuple[float, ...] | None) -> RawData:
    """The readings divided by each column channel's relative gain (``None``: as they are)."""
    if column_gain is None:
        return raw
    gain = np.asarray(column_gain, dtype=np.float64)
    scaled = {"step_sum_a": raw.step_sum_a / gain, "step_sumsq_a2": raw.step_sumsq_a2 / gain**2,
              "base_sum_a": raw.base_sum_a / gain, "base_sumsq_a2": raw.base_sumsq_a2 / gain**2,
              "short_current_a": raw.short_current_a / gain[:, None]}
    return RawData(**{**raw.__dict__, **scaled})


def fit_and_estimate(raw: RawData, twin_arrays: dict, header: CalibrationHeader,
                     measured: np.ndarray, options: CalibrationOptions,
                     resolution_a: float) -> tuple[Estimate, TwinParameters, np.ndarray]:
    """Estimate every branch, fitting the twin first when there are patterns to fit it to.

    With column gains in ``twin_arrays`` (:mod:`calibration._gains`) every reading is divided by
    its column's gain first, and the twin carries them (``column_gain``) for the engine.
    """
    voltage, method = header.read_voltage_v, header.method
    gain = twin_arrays.get("column_gain")
    gain_update = {} if gain is None else {"column_gain": tuple(float(g) for g in gain)}
    corrected = gain_corrected(raw, gain)
    if gain is not None:
        twin_arrays = {**twin_arrays, "sum_a": twin_arrays["sum_a"] / gain,
                       "sumsq_a2": twin_arrays["sumsq_a2"] / gain**2}
    # The first pass sets the noise model, the stuck cells and the fit's bounds: the stuck cells'
    # network solves (their lines' readings move by ~1e-3) are left to the final estimate.
    no_stuck = np.zeros(raw.base_sum_a.shape)
    first = estimate(corrected, voltage_v=voltage, method=method, twin=TwinParameters.ideal(),
                     options=options, measured_rows=measured, resolution_a=resolution_a, stuck_s=no_stuck)
    noise = (first.noise_rel, first.noise_floor_a)
    stuck_s = np.where((first.flags & FLAG_STUCK_CLOSED) != 0, first.conductance_s, 0.0).sum(axis=2)
    patterns = twin_arrays["masks"].shape[0]
    none = np.zeros((len(TWIN_RESISTANCES),) * 2)
    if options.twin is not None or patterns == 0 or not np.all(twin_arrays["count"] > 0):
        twin = (options.twin or TwinParameters.ideal()).model_copy(update=gain_update)
        final = with_twin(raw, header, options, measured, noise, twin, none, resolution_a)
        return final, twin.model_copy(update={"switch_on_resistance_ohm": _on_ohm(final)}), none
    mean, _ = mean_var(twin_arrays["sum_a"], twin_arrays["sumsq_a2"], twin_arrays["count"][:, None])
    per_reading = (noise[0] * mean) ** 2 + noise[1] ** 2
    reading_var = per_reading / twin_arrays["count"][:, None] + quantization_var(per_reading, resolution_a)
    fit_idx = np.nonzero(~twin_arrays["holdout"])[0]
    # Only the rows the fit patterns touch need re-estimating for each candidate twin.
    touched = np.zeros(header.rows, bool)
    for p in fit_idx:
        touched |= twin_arrays["voltage_v"][p] != 0
    sub = RawData(**{name: getattr(corrected, name)[touched] if name != "design" else raw.design
                     for name in RawData.__dataclass_fields__})

    def predict(twin: TwinParameters, index: np.ndarray, est: Estimate):
        out, var = [], []
        for p in index:
            pred, pvar = pattern_prediction(est, twin_arrays["masks"][p], twin_arrays["voltage_v"][p],
                                            twin, header.branches)
            out.append(pred)
            var.append(pvar)
        return np.array(out), np.array(var)

    rows_at = np.nonzero(touched)[0]

    def residuals(twin: TwinParameters, stuck: np.ndarray = stuck_s) -> np.ndarray:
        part = estimate(sub, voltage_v=voltage, method=method, twin=twin, options=options,
                        measured_rows=measured[touched], noise=noise, resolution_a=resolution_a,
                        row_index=rows_at,
                        array_rows=header.rows, stuck_s=stuck)
        full = {name: np.array(getattr(first, name)) for name in ("conductance_s", "sigma_s", "flags")}
        for name in full:
            full[name][rows_at] = getattr(part, name)
        est = Estimate(**{**first.__dict__, **full})
        pred, pvar = predict(twin, fit_idx, est)
        sensed = twin_arrays["sensed"][fit_idx]
        return ((mean[fit_idx] - pred) / np.sqrt(reading_var[fit_idx] + pvar))[sensed]

    # The slopes without the stuck cells too: they cost every row step a network solve (5x the
    # residual's time on the demo); the residuals keep them, so the fit converges on the exact model.
    twin, covariance = fit_twin(residuals, TwinParameters(row_wire_resistance_ohm=0.1,
                                                          col_wire_resistance_ohm=0.1,
                                                          sense_resistance_ohm=1.0,
                                                          driver_resistance_ohm=0.1),
                                  conductance_s=first.conductance_s,
                                  slope_residuals=lambda twin: residuals(twin, no_stuck))
    twin = twin.model_copy(update=gain_update)
    final = with_twin(raw, header, options, measured, noise, twin, covariance, resolution_a)

    def rel_rms(index: np.ndarray) -> tuple[float, float]:
        pred, pvar = predict(twin, index, final)
        sensed = twin_arrays["sensed"][index]
        err = (mean[index] - pred)[sensed]
        scale = np.abs(mean[index][sensed]) > 1e-3 * np.abs(mean[index][sensed]).max()
        rel = err[scale] / mean[index][sensed][scale]
        z = err / np.sqrt(reading_var[index] + pvar)[sensed]
        return float(np.sqrt(np.mean(rel**2))), float(np.sqrt(np.mean(z**2)))

    fit_rel, _ = rel_rms(fit_idx)
    hold = np.nonzero(twin_arrays["holdout"])[0]
    hold_rel, hold_z = rel_rms(hold) if hold.size else (None, None)
    twin = twin.model_copy(update={"fit_rel_rms": fit_rel, "holdout_rel_rms": hold_rel,
                                   "holdout_z_rms": hold_z, "switch_on_resistance_ohm": _on_ohm(final)})
    return final, twin, covariance


def _on_ohm(est: Estimate) -> float | None:
    """Median resistance of the shorted branches: a shorted resistor leaves its switch alone."""
    shorts = est.conductance_s[((est.flags & FLAG_SHORT) != 0) & (est.conductance_s > 0)]
    return float(np.median(1.0 / shorts)) if shorts.size else None


def with_twin(raw: RawData, header: CalibrationHeader, options: CalibrationOptions,
               measured: np.ndarray, noise: tuple[float, float], twin: TwinParameters,
               covariance: np.ndarray, resolution_a: float) -> Estimate:
    """Estimates through ``twin`` (its column gains divided out), with the twin's own uncertainty
    propagated to every branch."""
    raw = gain_corrected(raw, twin.column_gain)
    kwargs = dict(voltage_v=header.read_voltage_v, method=header.method, options=options,
                  measured_rows=measured, noise=noise, resolution_a=resolution_a)
    final = estimate(raw, twin=twin, **kwargs)
    if not np.any(covariance):
        return final
    # Slopes without the stuck cells' network solves, as in the fit (_fit.fit_and_estimate).
    slope = dict(kwargs, stuck_s=np.zeros(raw.base_sum_a.shape))
    at = estimate(raw, twin=twin, **slope).conductance_s
    jac = []
    for i, name in enumerate(TWIN_RESISTANCES):
        step = max(float(np.sqrt(covariance[i, i])), 1e-6)
        moved = twin.model_copy(update={name: getattr(twin, name) + step})
        jac.append((estimate(raw, twin=moved, **slope).conductance_s - at) / step)
    jac = np.stack(jac, axis=-1)
    extra = np.nan_to_num(np.einsum("...i,ij,...j->...", jac, covariance, jac))
    return Estimate(**{**final.__dict__, "sigma_s": np.sqrt(final.sigma_s**2 + np.maximum(extra, 0))})
