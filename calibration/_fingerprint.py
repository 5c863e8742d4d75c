"""Array fingerprints: a few branches read alone tell one array from another of the same shape.

Two arrays built alike share their geometry and often their board's IDN, but not their resistors:
with the population's spread (tens of percent), a handful of branches read alone differ at once,
while the same array only drifts (temperature, ageing) by far less. A calibration reads its
fingerprint at the start of the run; :func:`verify_fingerprint` reads the same branches the same
way again and refuses a record (or a plan made from one) of another array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibration._estimate import RawData
from calibration._record import CalibrationHeader, CalibrationOptions, CalibrationRecord, Fingerprint
from calibration._run import Counter, Run, prepare, quiet_safe
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["fingerprint_positions", "measure_fingerprint", "verify_fingerprint"]

FINGERPRINT_BRANCHES = 16
"""Branches read per fingerprint."""
FINGERPRINT_REPEATS = 4
"""Readings of each branch."""
_POSITIONS_SEED = 0x5EED  # fixed: every array of a shape is read at the same positions


def fingerprint_positions(rows: int, cols: int, branches: int) -> list[tuple[int, int, int]]:
    """The fixed ``(row, col, branch)`` positions read for an array of this shape."""
    count = min(FINGERPRINT_BRANCHES, rows * cols * branches)
    rng = np.random.default_rng(_POSITIONS_SEED)
    flat = rng.choice(rows * cols * branches, size=count, replace=False)
    return sorted(tuple(int(i) for i in np.unravel_index(f, (rows, cols, branches))) for f in flat)


def measure_fingerprint(run: Run, board_idn: str) -> Fingerprint:
    """Read each fingerprint branch alone in the array (every other switch open, whatever was
    loaded before); every switch is left open."""
    positions = fingerprint_positions(run.rows, run.cols, run.branches)
    run.board.load_masks(np.zeros((run.rows, run.cols), dtype=np.uint64))
    current, sigma = [], []
    for row, col, branch in positions:
        reads = np.asarray(run.read_alone(row, col, branch, FINGERPRINT_REPEATS, run.voltage_v))
        if run.method == "readout":
            run.load_row(row, np.zeros(run.cols, dtype=np.uint64))
        else:
            run.board.set_mask(row, col, 0)
        finite = bool(np.all(np.isfinite(reads)))
        current.append(float(reads.mean()) if finite else None)
        sigma.append(float(reads.std(ddof=1) / np.sqrt(reads.size)) if finite else 0.0)
    return Fingerprint(rows=run.rows, cols=run.cols, branches=run.branches, board_idn=board_idn,
                       method=run.method, read_voltage_v=run.voltage_v, nplc=run.options.nplc,
                       unselected=run.options.unselected, positions=tuple(positions),
                       current_a=tuple(current), sigma_a=tuple(sigma))


def verify_fingerprint(lab: Any, record_or_fingerprint: CalibrationRecord | Fingerprint, *,
                       drift_rel: float = 0.02, what: str = "this record") -> None:
    """Read the fingerprint's branches again and refuse a record of another array.

    A branch differs when its current moved by more than ``drift_rel`` (relative) plus four
    combined standard uncertainties; the record is refused when more than a quarter of the
    branches differ (an array whose branch failed since is still the same array). The lab is
    left safe.

    Parameters
    ----------
    lab : drivers.Lab
    record_or_fingerprint : CalibrationRecord or Fingerprint
        A record without a fingerprint (made before fingerprints) is checked by shape only.
    drift_rel : float
        Relative change allowed for drift (temperature, ageing) of the same array.
    what : str
        What the error names (``"this record"``, ``"this plan's calibration"``).

    Raises
    ------
    CalibrationError
        The lab's array is not the one the fingerprint was read on (one line).
    """
    if isinstance(record_or_fingerprint, CalibrationRecord):
        fingerprint = record_or_fingerprint.header.fingerprint
        shape = record_or_fingerprint.geometry
    else:
        fingerprint = record_or_fingerprint
        shape = (fingerprint.rows, fingerprint.cols, fingerprint.branches)
    if tuple(lab.geometry) != tuple(shape):
        raise CalibrationError(f"{what} was measured on another array: a {'x'.join(map(str, shape))} "
                               f"one, this lab's is {'x'.join(map(str, lab.geometry))}; calibrate this array")
    if fingerprint is None:
        return
    rows, cols, branches = shape
    options = CalibrationOptions(nplc=fingerprint.nplc, unselected=fingerprint.unselected,
                                 read_voltage_v=fingerprint.read_voltage_v)
    header = CalibrationHeader(rows=rows, cols=cols, branches=branches, method=fingerprint.method,
                               options=options, read_voltage_v=fingerprint.read_voltage_v)
    raw = RawData.empty(np.eye(branches, dtype=np.uint8), rows, cols)
    run = Run(lab, options, header, raw, {"resolution_a": np.full(1, np.inf)}, Counter(lab))
    try:
        prepare(lab, options, header)
        now = measure_fingerprint(run, fingerprint.board_idn)
    finally:
        quiet_safe(lab)
    differ, worst = _compare(fingerprint, now, drift_rel)
    if differ > len(fingerprint.positions) // 4:
        raise CalibrationError(
            f"{what} was measured on another array: {differ} of {len(fingerprint.positions)} fingerprint "
            f"branches differ (by up to {100 * worst:.0f} %, drift allowed {100 * drift_rel:g} %); "
            "calibrate this array")


def _compare(old: Fingerprint, new: Fingerprint, drift_rel: float) -> tuple[int, float]:
    """How many branches differ beyond drift and noise, and the largest relative change."""
    finite = [abs(a) for a in old.current_a if a is not None]
    floor = drift_rel * float(np.median(finite)) if finite else 0.0  # an open branch reads ~0 either way
    differ, worst = 0, 0.0
    for a, sa, b, sb in zip(old.current_a, old.sigma_a, new.current_a, new.sigma_a):
        if a is None or b is None:  # an overflow matches only an overflow
            if (a is None) != (b is None):
                differ, worst = differ + 1, 1.0
            continue
        scale = max(abs(a), abs(b))
        change = abs(b - a)
        differ += bool(change > drift_rel * scale + 4 * np.hypot(sa, sb) + floor)
        worst = max(worst, change / scale if scale > 0 else 0.0)
    return differ, worst
