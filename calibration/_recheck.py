"""``recheck()``: whether a calibration record still describes the array (drift check)."""

from __future__ import annotations

from typing import Any

import numpy as np

from calibration._estimate import (
    RawData,
    cell_conductance_s,
    mean_var,
    quantization_var,
)
from calibration._record import FLAG_STUCK_CLOSED, CalibrationRecord, TwinParameters
from calibration._run import Counter, Run, prepare, quiet_safe
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["RecheckResult", "recheck"]


class RecheckResult(StrictModel):
    """Whether a calibration record still describes the array."""

    checked: int
    """Branches re-measured."""
    valid: bool
    """The re-measured branches agree with the record within ``max_rms_z``."""
    rms_z: float
    """RMS of (new - recorded) / sqrt(sigma_recorded^2 + sigma_new^2)."""
    over_4_fraction: float
    """Fraction of re-measured branches more than 4 combined sigma away."""
    median_rel_drift: float
    """Median of (new - recorded) / recorded: the common drift (temperature, ageing)."""
    rms_rel_drift: float
    """RMS relative change."""
    temperature_c: float
    temperature_change_c: float | None
    """Now minus at the end of the calibration."""


def recheck(lab: Any, record: CalibrationRecord, *, sample: int = 256, repeats: int = 4,
            max_rms_z: float = 2.0, seed: int = 0) -> RecheckResult:
    """Re-measure a random sample of usable branches and compare with the record.

    Parameters
    ----------
    lab : drivers.Lab
    record : CalibrationRecord
        A complete record of this lab's array.
    sample : int
        Branches to re-measure (at most every usable one).
    repeats : int
        Readings per branch.
    max_rms_z : float
        The record is still valid while the RMS combined z-score stays below this.
    seed : int
        Seed of the sample.
    """
    header = record.header
    if tuple(lab.geometry) != record.geometry:
        raise CalibrationError(f"the record is of a {'x'.join(map(str, record.geometry))} array, "
                               f"this lab's is {'x'.join(map(str, lab.geometry))}")
    usable = np.argwhere(record.usable)
    if usable.size == 0:
        raise CalibrationError("the record has no usable branch to recheck")
    rng = np.random.default_rng(seed)
    picked = usable[rng.choice(len(usable), size=min(sample, len(usable)), replace=False)]
    options = header.options.model_copy(update={"design": "single", "repeats": max(repeats, 2)})
    rows, cols, branches = record.geometry
    raw = RawData.empty(np.eye(branches, dtype=np.uint8), rows, cols)
    raw.excluded[:] = ~record.usable  # shorts and other flagged branches stay open
    run = Run(lab, options, header, raw, {"resolution_a": np.full(1, np.inf)}, Counter(lab))
    stuck = np.where((record.flags & FLAG_STUCK_CLOSED) != 0, record.conductance_s, 0.0).sum(axis=2)
    try:
        prepare(lab, options, header)
        for (row, branch) in sorted({(int(r), int(k)) for r, _, k in picked}):
            chosen = np.zeros(cols, bool)
            chosen[[c for r, c, k in picked if r == row and k == branch]] = True
            masks = np.where(chosen, np.uint64(1 << branch), np.uint64(0))
            if header.method == "readout":
                run.load_row(row, masks)
                raw.add_step(row, branch, run.drive_row(row, options.repeats))
            else:
                for col in np.nonzero(chosen)[0]:
                    lab.board.set_mask(row, int(col), 1 << branch)
                    raw.add_step(row, branch, run.smu_read(row, int(col), options.repeats)[:, None], [col])
                    lab.board.set_mask(row, int(col), 0)
            if header.method == "readout":
                run.load_row(row, np.zeros(cols, dtype=np.uint64))
        temperature = lab.temperature_c()
    finally:
        quiet_safe(lab)
    twin = header.twin or TwinParameters.ideal()
    mean, _ = mean_var(raw.step_sum_a, raw.step_sumsq_a2, raw.step_count)
    cells = {}
    for row, branch in {(int(r), int(k)) for r, _, k in picked}:
        cells[row, branch] = cell_conductance_s(
            np.nan_to_num(mean[row, branch])[None], voltage_v=header.read_voltage_v,
            method=header.method, twin=twin, row_index=np.array([row]), array_rows=rows,
            others_s=stuck)[0]
    # A stuck-closed branch conducts in every reading of its cell: take it off.
    new = np.array([cells[int(r), int(k)][c] - stuck[r, c] for r, c, k in picked])
    old = record.conductance_s[tuple(picked.T)]
    old_sigma = record.sigma_s[tuple(picked.T)]
    per_reading = (header.noise_rel * new * header.read_voltage_v) ** 2 + header.noise_floor_a**2
    new_sigma = np.sqrt(per_reading / options.repeats
                        + quantization_var(per_reading, header.resolution_a)) / header.read_voltage_v
    z = (new - old) / np.sqrt(old_sigma**2 + new_sigma**2)
    rel = (new - old) / old
    rms_z = float(np.sqrt(np.mean(z**2)))
    end = header.temperature_end_c
    return RecheckResult(checked=len(picked), valid=rms_z <= max_rms_z, rms_z=rms_z,
                         over_4_fraction=float(np.mean(np.abs(z) > 4)),
                         median_rel_drift=float(np.median(rel)),
                         rms_rel_drift=float(np.sqrt(np.mean(rel**2))), temperature_c=temperature,
                         temperature_change_c=None if end is None else temperature - end)
