"""Adaptive averaging: more readings where a branch misses its uncertainty target."""

from __future__ import annotations

import math
import time

import numpy as np

from calibration._estimate import Estimate, RawData
from calibration._fit import with_twin
from calibration._record import FLAG_EXCLUDE, TwinParameters
from calibration._rows import measure_row
from calibration._run import Run, state_resolution

__all__ = ["adapt"]


def adapt(run: Run, final: Estimate, twin: TwinParameters, covariance: np.ndarray,
          measured: np.ndarray, started: float) -> Estimate:
    """Adaptive averaging: more readings on rows whose branches miss the target, within budget."""
    options = run.options
    target = options.target_rel_sigma
    if target is None:
        return final
    deadline = None if options.time_budget_s is None else started + options.time_budget_s
    noise = (final.noise_rel, final.noise_floor_a)
    for _round in range(8):
        usable = (final.flags & FLAG_EXCLUDE) == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(usable, final.sigma_s / np.abs(final.conductance_s) / target, 0.0)
        worst = np.nan_to_num(ratio.max(axis=(1, 2)))
        rows = np.nonzero(worst > 1.0)[0]
        if rows.size == 0:
            break
        for row in rows:
            if deadline is not None and time.perf_counter() > deadline:
                break
            have = int(run.raw.step_count[row].max())
            extra = min(int(math.ceil(have * (worst[row] ** 2 - 1.0))) + 1, 50 * options.repeats)
            saved, run.raw = run.raw, RawData.empty(run.design, run.rows, run.cols)
            run.raw.excluded[:] = saved.excluded
            try:
                measure_row(run, int(row), extra)
            finally:
                more, run.raw = run.raw, saved
            run.measure_baseline([row], extra)  # the baseline is in every branch's sigma too
            for name in ("step_sum_a", "step_sumsq_a2", "step_count"):
                getattr(saved, name)[row] += getattr(more, name)[row]
            if np.any(more.excluded[row] & ~saved.excluded[row]):  # a new short: start the row over
                saved.excluded[row] |= more.excluded[row]
                saved.clear_row(int(row))
                measure_row(run, int(row), have + extra)
        final = with_twin(run.raw, run.header, options, measured, noise, twin, covariance,
                          state_resolution(run.state))
        if deadline is not None and time.perf_counter() > deadline:
            break
    return final
