"""``recalibrate()``: bring a calibration record up to date by measuring only what it needs.

1. **Sample.** A random sample of the calibration's own row steps (row, design step) is read
   again exactly as calibrated (the recheck's reading: same switches, path, voltage, channel), and
   each branch's raw current is compared with the record's: static errors cancel, change is left.
   Their median ratio is the common move (temperature, ageing of the whole batch); their spread
   around it is how far an unmeasured branch may have moved on its own. Rows whose sampled
   branches moved beyond their read noise (``moved_z``) are the rows that moved.
2. **Re-measure.** The rows asked for first (the rows of the pairs a plan's probe found over its
   budget, :func:`crossbar_ctl.engine.recalibrate_plan`), then the rows the sample found moved,
   the worst first, as long as the readings stay within ``max_fraction`` of the parent's: every
   step of the design and the baseline, as the calibration measured them, estimated through the
   parent's twin and noise model.
3. **The rest** keeps the parent's values times the common move (at the lab's temperature when a
   TCR estimate is given), its sigma widened by the spread of the sampled moves.

The new record names its parent (``header.parent_checksum``); its ``readings`` are those behind its
values, the parent's included (so a chain of recalibrations keeps the share of a full calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration._calibrate import _board_idn
from calibration._estimate import RawData, mean_var
from calibration._fit import with_twin
from calibration._record import FLAG_EXCLUDE, CalibrationRecord, TwinParameters
from calibration._rows import measure_row
from calibration._run import Counter, Run, now, prepare, quiet_safe, state_resolution
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["RecalibrationReport", "recalibrate"]


class RecalibrationReport(StrictModel):
    """What :func:`recalibrate` measured and found."""

    parent_checksum: str
    sampled_steps: int
    """Row steps of the sample (each one reading per repeat of a whole row's step)."""
    common_ratio: float
    """Median of new over recorded current in the sample (after the TCR's prediction, if any)."""
    spread_rel: float
    """Spread of the sampled branches' moves around the common one, beyond read noise (relative sd)."""
    moved_rows: tuple[int, ...]
    """Rows where the sample saw a branch move beyond ``moved_z``."""
    asked_rows: tuple[int, ...]
    """Rows the caller asked for (a plan's pairs over budget)."""
    remeasured_rows: tuple[int, ...]
    readings: int
    """Readings this recalibration took (the sample and the re-measured rows)."""
    parent_readings: int
    """Readings behind the parent record (a full calibration's, plus any recalibrations since)."""
    readings_fraction: float
    """``readings / parent_readings``: this recalibration's share of a full calibration."""


IDENTITY_DRIFT_REL = 0.02
"""A sampled branch that moved by more than this (relative, beyond 4 sigma) is not drift: when more
than a quarter of the sample did, the record is of another array (the fingerprint's rule, on the
sample's own readings)."""


def _check_same_array(lab: Any, record: CalibrationRecord) -> None:
    header = record.header
    if tuple(lab.geometry) != record.geometry:
        raise CalibrationError(f"the calibration was measured on another array: a {'x'.join(map(str, record.geometry))} "
                               f"one, this lab's is {'x'.join(map(str, lab.geometry))}; calibrate this array")
    recorded, board = _board_idn(header.idn), _board_idn(lab.idn())
    if recorded and board and recorded != board:
        raise CalibrationError(f"the calibration was measured on board {recorded!r}, this lab's is {board!r}; "
                               "calibrate this array")
    if not header.complete:
        raise CalibrationError("the record is partial (a checkpoint): finish it with crossbar calibrate --resume")
    if header.method != "readout":
        raise CalibrationError("recalibrate re-reads rows column-parallel: the record was measured through "
                               "the source-meter; calibrate again instead")


def recalibrate(lab: Any, record: CalibrationRecord, *, rows: Sequence[int] = (), tcr: Any = None,
                max_fraction: float = 0.15, sample_fraction: float = 0.03, moved_z: float = 4.0,
                seed: int = 0) -> tuple[CalibrationRecord, RecalibrationReport]:
    """Measure a sample, find what moved, re-measure only that and the rows asked for.

    Parameters
    ----------
    lab : drivers.Lab
        The lab of the record's array (geometry and board are checked first, the array itself by
        the sample: more than a quarter of it moved beyond drift is another array).
    record : CalibrationRecord
        The parent: a complete column-parallel calibration with its raw readings.
    rows : sequence of int
        Rows to re-measure first, in order (a plan's rows over budget).
    tcr : calibration.TcrEstimate, optional
        Predict the parent at the lab's measured temperature before comparing, so only what the
        TCR does not explain counts as moved.
    max_fraction : float
        Readings allowed, as a fraction of the parent's (the sample included).
    sample_fraction : float
        Readings of the sample, as a fraction of the parent's.
    moved_z : float
        A sampled branch moved when its change exceeds this many combined read-noise sigmas.
    seed : int
        Seed of the sample.

    Returns
    -------
    record : CalibrationRecord
        The new record (``header.parent_checksum`` names the parent).
    report : RecalibrationReport

    Raises
    ------
    CalibrationError
        A record of another array (geometry, board, or the sample), partial, or measured through the
        source-meter; a row out of range; fractions out of (0, 1].
    """
    if not (0 < max_fraction <= 1 and 0 < sample_fraction <= max_fraction):
        raise CalibrationError(f"max_fraction = {max_fraction!r}, sample_fraction = {sample_fraction!r}: "
                               "need 0 < sample_fraction <= max_fraction <= 1")
    header = record.header
    n_rows, n_cols, _ = record.geometry
    asked = [int(r) for r in dict.fromkeys(int(r) for r in rows)]
    if any(not 0 <= r < n_rows for r in asked):
        raise CalibrationError(f"rows {asked}: the array has rows 0..{n_rows - 1}")
    _check_same_array(lab, record)
    expected = record
    if tcr is not None:
        from calibration._temperature import record_at_temperature

        expected = record_at_temperature(record, tcr, lab.temperature_c())
    old = RawData.from_arrays(record.arrays)
    design = old.design.astype(float)
    options = header.options
    repeats = options.repeats
    raw = RawData(**{name: np.array(getattr(old, name)) for name in RawData.__dataclass_fields__})
    state = {k[6:]: np.array(v) for k, v in record.arrays.items() if k.startswith("state_")}
    state.setdefault("resolution_a", np.full(1, np.inf))
    counter = Counter(lab)
    run = Run(lab, options, header, raw, state, counter)
    steps = design.shape[0]
    old_mean, _ = mean_var(old.step_sum_a, old.step_sumsq_a2, old.step_count)
    # What the step currents should be now if only the TCR acted: (D g_T) / (D g) per (row, step, col).
    with np.errstate(divide="ignore", invalid="ignore"):
        tcr_ratio = np.nan_to_num(np.einsum("sk,rck->rsc", design, np.asarray(expected.conductance_s))
                                  / np.einsum("sk,rck->rsc", design, np.asarray(record.conductance_s)), nan=1.0)
    budget = int(max_fraction * header.readings)
    units = max(1, int(sample_fraction * header.readings) // repeats)
    rng = np.random.default_rng(seed)
    picked = rng.choice(n_rows * steps, size=min(units, n_rows * steps), replace=False)
    ratios, zs, worst_z = [], [], np.zeros(n_rows)
    try:
        prepare(lab, options, header)
        run.board.load_masks(np.zeros((n_rows, n_cols), dtype=np.uint64))  # every other cell open, as calibrated
        for unit in sorted(map(int, picked)):
            row, step = divmod(unit, steps)
            run.load_row(row, run.step_masks(row, step))
            current = run.drive_row(row, repeats)
            run.load_row(row, np.zeros(n_cols, dtype=np.uint64))
            before = old_mean[row, step]
            ok = np.isfinite(before) & (np.abs(before) > 0) & np.all(np.isfinite(current), axis=0)
            now_a = current.mean(axis=0)
            per_reading = (header.noise_rel * before) ** 2 + header.noise_floor_a**2
            sigma = np.sqrt(per_reading * (1 / np.maximum(old.step_count[row, step], 1) + 1 / repeats))
            predicted = before * tcr_ratio[row, step]
            z = np.where(ok, (now_a - predicted) / np.where(sigma > 0, sigma, np.inf), 0.0)
            worst_z[row] = max(worst_z[row], float(np.max(np.abs(z))))
            ratios.append((now_a / np.where(ok, predicted, 1.0))[ok])
            zs.append((sigma / np.where(ok, np.abs(predicted), 1.0))[ok])
        ratio = np.concatenate(ratios) if ratios else np.ones(1)
        common = float(np.median(ratio)) if ratio.size else 1.0
        noise_rel = np.concatenate(zs) if zs else np.zeros(1)
        differ = np.abs(ratio - common) > IDENTITY_DRIFT_REL + 4 * noise_rel
        if differ.sum() > differ.size // 4:
            raise CalibrationError(
                f"the calibration was measured on another array: {int(differ.sum())} of {differ.size} sampled "
                f"branches differ by more than {100 * IDENTITY_DRIFT_REL:g} % (drift moves them by "
                f"{100 * float(np.median(np.abs(ratio - common))):.2g} % median); calibrate this array")
        # spread of the moves beyond what read noise alone gives (robust: the MAD)
        mad = 1.4826 * float(np.median(np.abs(ratio - common))) if ratio.size else 0.0
        spread = float(np.sqrt(max(mad**2 - float(np.median(noise_rel)) ** 2, 0.0)))
        moved = [int(r) for r in np.argsort(-worst_z) if worst_z[r] > moved_z]
        per_row = (steps + 1) * repeats
        chosen: list[int] = []
        for row in asked + [r for r in moved if r not in asked]:
            if counter.readings + (len(chosen) + 1) * per_row > budget:
                break
            chosen.append(row)
        if chosen:
            raw.clear_base(np.array(chosen))
            run.measure_baseline(np.array(chosen))
            for row in chosen:
                raw.restart_row(row)
                measure_row(run, row, repeats)
                state["row_temperature_c"][row] = lab.temperature_c()
        temperature = lab.temperature_c()
    finally:
        quiet_safe(lab)
    g = np.asarray(expected.conductance_s, float) * common
    sigma_s = np.hypot(np.asarray(expected.sigma_s, float) * common, g * spread)
    flags = np.array(expected.flags)
    if chosen:
        twin = header.twin or TwinParameters.ideal()
        measured = np.ones(n_rows, bool)
        zero = np.zeros((4, 4))
        noise = (header.noise_rel, header.noise_floor_a)
        resolution = state_resolution(state)
        fresh = with_twin(raw, header, options, measured, noise, twin, zero, resolution)
        before = with_twin(old, header, options, measured, noise, twin, zero, resolution)
        at = np.array(chosen)
        # the twin's own uncertainty (in the parent's sigma, beyond its noise part) stays
        twin_var = np.maximum(np.asarray(record.sigma_s)[at] ** 2 - before.sigma_s[at] ** 2, 0.0)
        g[at] = fresh.conductance_s[at]
        sigma_s[at] = np.sqrt(fresh.sigma_s[at] ** 2 + twin_var)
        flags[at] = fresh.flags[at]
    arrays = {**record.arrays, **raw.arrays(), **{f"state_{k}": v for k, v in state.items()},
              "conductance_s": g, "sigma_s": sigma_s, "flags": flags}
    stamp = now()
    new_header = header.model_copy(update={
        "started_at": stamp, "updated_at": stamp, "temperature_start_c": temperature,
        "temperature_end_c": temperature, "readings": header.readings + counter.readings,
        "round_trips": header.round_trips + counter.round_trips,
        "parent_checksum": record.checksum()})
    report = RecalibrationReport(
        parent_checksum=record.checksum(), sampled_steps=len(picked), common_ratio=common, spread_rel=spread,
        moved_rows=tuple(moved), asked_rows=tuple(asked), remeasured_rows=tuple(chosen),
        readings=counter.readings, parent_readings=header.readings,
        readings_fraction=counter.readings / max(header.readings, 1))
    usable_left = (flags & FLAG_EXCLUDE) == 0
    if not usable_left.any():
        raise CalibrationError("the recalibrated record flags every branch: calibrate the array afresh")
    return CalibrationRecord(new_header, arrays), report
