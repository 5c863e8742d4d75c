"""Per-row branch reads: every step of the design on one row, and the probe of shorts."""

from __future__ import annotations

import logging

import numpy as np

from calibration._estimate import SHORT_PROBE
from calibration._run import Run
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["measure_row"]

log = logging.getLogger(__name__)


def measure_row(run: Run, row: int, repeats: int) -> None:
    """Every step of the design on ``row``; shorts found on the way are excluded and the row
    measured again without them."""
    for _attempt in range(run.branches + 1):
        shorts = _measure_row_once(run, row, repeats)
        if not shorts:
            return
        for col, step in shorts:
            _probe_shorts(run, row, col, step)
        run.raw.clear_row(row)
    raise CalibrationError(f"row {row}: readings keep overflowing after excluding shorts")


def _measure_row_once(run: Run, row: int, repeats: int) -> list[tuple[int, int]]:
    shorts: list[tuple[int, int]] = []
    steps = run.design.shape[0]
    if run.method == "readout":
        for step in range(steps):
            run.load_row(row, run.step_masks(row, step))
            current = run.drive_row(row, repeats)
            bad = np.nonzero(~np.all(np.isfinite(current), axis=0))[0]
            if bad.size:
                shorts.extend((int(col), step) for col in bad)
                break
            run.raw.add_step(row, step, current)
    else:
        for col in range(run.cols):
            for step in range(steps):
                mask = int(run.step_masks(row, step)[col])
                run.board.set_mask(row, col, mask)
                current = run.smu_read(row, col, repeats)
                if not np.all(np.isfinite(current)):
                    shorts.append((col, step))
                    break
                run.raw.add_step(row, step, current[:, None], [col])
            run.board.set_mask(row, col, 0)
            if shorts:
                break
    run.load_row(row, np.zeros(run.cols, dtype=np.uint64))
    return shorts


def _probe_shorts(run: Run, row: int, col: int, step: int) -> None:
    """Close each branch of the overflowing step alone in one cell; exclude those that overflow,
    and read them again at a low voltage (a shorted resistor leaves the switch alone: its
    on-resistance)."""
    found = False
    for branch in map(int, np.nonzero(run.design[step] & ~run.raw.excluded[row, col])[0]):
        if np.all(np.isfinite(run.read_alone(row, col, branch, 1, run.voltage_v))):
            continue
        found = True
        low = run.read_alone(row, col, branch, run.options.repeats, run.voltage_v * SHORT_PROBE)
        # Excluded only with its probe reading: a run cut short here probes it again.
        run.raw.excluded[row, col, branch] = True
        run.raw.short_current_a[row, col, branch] = np.mean(low)  # NaN if it overflows still
        log.info("branch (%d, %d, %d) overflows alone: a short, excluded", row, col, branch)
    if run.method == "readout":
        run.load_row(row, np.zeros(run.cols, dtype=np.uint64))
    else:
        run.board.set_mask(row, col, 0)
    if not found:
        raise CalibrationError(f"cell ({row}, {col}) overflows only with several branches "
                               "closed: lower read_voltage_v")
