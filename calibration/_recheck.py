"""``recheck()``: whether a calibration record still describes the array (drift check).

The recheck takes again, for a sample of branches, the very reading the calibration took of each
(the same design step: the same switches closed in the row, the same path, voltage, integration
and readout channel) and compares raw current with raw current. Whatever stays put between the
two readings (the wiring the twin does not capture, channel gains and offsets, converter
nonlinearity, stuck switches) cancels, so only what changed (drift, temperature, faults) is left,
against the read noise of both readings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibration._estimate import RawData, mean_var
from calibration._record import CalibrationRecord
from calibration._run import Counter, Run, prepare, quiet_safe
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["RecheckResult", "recheck"]


class RecheckResult(StrictModel):
    """Whether a calibration record still describes the array."""

    checked: int
    """Readings compared: one per sampled branch, the calibration step that read it."""
    valid: bool
    """The readings agree with the calibration's within ``max_rms_z``."""
    rms_z: float
    """RMS of (new - recorded) / sqrt(sigma_recorded^2 + sigma_new^2), each reading's current
    against the calibration's mean current of the same step, sigmas from the fitted read noise."""
    over_4_fraction: float
    """Fraction of readings more than 4 combined sigma away."""
    median_rel_drift: float
    """Median of (new - recorded) / recorded current: the common drift (temperature, ageing)."""
    rms_rel_drift: float
    """RMS relative change."""
    temperature_c: float
    temperature_change_c: float | None
    """Now minus at the end of the calibration."""


def recheck(lab: Any, record: CalibrationRecord, *, sample: int = 256, repeats: int = 4,
            max_rms_z: float = 2.0, seed: int = 0) -> RecheckResult:
    """Read a random sample of usable branches again as the calibration did and compare.

    Each sampled branch is read in one design step that closed it (the step itself with
    ``design="single"``): the step's switches closed in every cell of the row on the readout,
    in its one cell through the source-meter, as the calibration did. The record's raw reading
    sums give the calibration's mean current of that step and its reading count.

    Parameters
    ----------
    lab : drivers.Lab
    record : CalibrationRecord
        A record of this lab's array, with its raw readings (every record ``calibrate`` writes).
    sample : int
        Branches to re-read (at most every usable one).
    repeats : int
        Readings per step.
    max_rms_z : float
        The record is still valid while the RMS combined z-score stays below this.
    seed : int
        Seed of the sample.

    Raises
    ------
    CalibrationError
        A record of another shape, without raw readings, or without a usable branch.
    """
    header = record.header
    if tuple(lab.geometry) != record.geometry:
        raise CalibrationError(f"the record is of a {'x'.join(map(str, record.geometry))} array, "
                               f"this lab's is {'x'.join(map(str, lab.geometry))}")
    try:
        old = RawData.from_arrays(record.arrays)
    except KeyError as exc:
        raise CalibrationError(f"the record keeps no raw readings ({exc.args[0]}): "
                               "recalibrate") from exc
    old_mean, _ = mean_var(old.step_sum_a, old.step_sumsq_a2, old.step_count)
    usable = np.argwhere(record.usable)
    if usable.size == 0:
        raise CalibrationError("the record has no usable branch to recheck")
    rng = np.random.default_rng(seed)
    picked = usable[rng.choice(len(usable), size=min(sample, len(usable)), replace=False)]
    # One step that read each branch (rows, steps, cols), among those the calibration kept.
    read = set()
    for row, col, branch in picked:
        steps = np.nonzero(old.design[:, branch] & np.isfinite(old_mean[row, :, col]))[0]
        if steps.size:
            read.add((int(row), int(rng.choice(steps)), int(col)))
    if not read:
        raise CalibrationError("the record has no raw reading of a usable branch to recheck")
    where = tuple(np.array(sorted(read)).T)
    new = RawData.empty(old.design, header.rows, header.cols)
    new.excluded[:] = old.excluded  # the calibration's masks: its shorts stay open
    options = header.options.model_copy(update={"repeats": max(repeats, 2)})
    run = Run(lab, options, header, new, {"resolution_a": np.full(1, np.inf)}, Counter(lab))
    try:
        prepare(lab, options, header)
        for row, step in sorted({(r, s) for r, s, _ in read}):
            cols = np.array([c for r, s, c in read if (r, s) == (row, step)])
            if header.method == "readout":  # the whole row in the step's pattern, as calibrated
                run.load_row(row, run.step_masks(row, step))
                new.add_step(row, step, run.drive_row(row, options.repeats)[:, cols], cols)
                run.load_row(row, np.zeros(header.cols, dtype=np.uint64))
                continue
            masks = run.step_masks(row, step)
            for col in map(int, cols):  # one cell closed at a time, as calibrated
                run.board.set_mask(row, col, int(masks[col]))
                new.add_step(row, step, run.smu_read(row, col, options.repeats)[:, None], [col])
                run.board.set_mask(row, col, 0)
        temperature = lab.temperature_c()
    finally:
        quiet_safe(lab)
    before = old_mean[where]
    # A reading that overflows now (a new short) counts as 0 A: a change either way.
    now = np.nan_to_num(mean_var(new.step_sum_a, new.step_sumsq_a2, new.step_count)[0][where])
    per_reading = (header.noise_rel * before) ** 2 + header.noise_floor_a**2
    # The readings' quantization error is the same for both while nothing moved: it cancels.
    sigma = np.sqrt(per_reading * (1 / old.step_count[where] + 1 / new.step_count[where]))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (now - before) / sigma, np.where(now == before, 0.0, np.inf))
        rel = (now - before) / before
    rms_z = float(np.sqrt(np.mean(z**2)))
    end = header.temperature_end_c
    return RecheckResult(checked=len(before), valid=rms_z <= max_rms_z, rms_z=rms_z,
                         over_4_fraction=float(np.mean(np.abs(z) > 4)),
                         median_rel_drift=float(np.median(rel)),
                         rms_rel_drift=float(np.sqrt(np.mean(rel**2))), temperature_c=temperature,
                         temperature_change_c=None if end is None else temperature - end)
