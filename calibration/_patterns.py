"""The twin's patterns: multi-cell patterns that make the wiring visible, and their reads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calibration._estimate import Estimate
from calibration._record import FLAG_STUCK_CLOSED, TwinParameters
from calibration._run import Run
from calibration._twin import network_col_current_a
from crossbar_ctl.core.errors import CalibrationError

__all__ = ["measure_twin", "pattern_prediction", "smu_twin_patterns", "twin_patterns"]

_TWIN_BRANCH = 0
_BLOCK_ROWS = 8
_TWIN_REPEATS = 4  # the twin patterns are few and every branch leans on them: read them longer
_OVERFLOW_RETRIES = 4  # an overflowing pattern is read again at 1/2, 1/4, 1/8 of its voltages


def twin_patterns(rows: int, cols: int, branches: int, voltage_v: float, max_total_current_a: float,
                  min_resistance_ohm: float, *, seed: int) -> dict[str, np.ndarray]:
    """Multi-cell patterns that make the wiring visible, and random held-out ones.

    Fit patterns: in up to eight rows, one branch closed in every cell and in the right half only
    (row-wire sharing); in a block of rows at the far and at the near end of the columns, one
    branch in every fourth column (column-wire and sense sharing). Held-out: random branch
    subsets in random blocks of rows driven at random voltages.

    Returns
    -------
    dict
        ``masks`` uint64 ``(patterns, rows, cols)``, ``voltage_v`` ``(patterns, rows)`` and
        ``holdout`` bool ``(patterns,)``.
    """
    rng = np.random.default_rng(seed)
    bit = np.uint64(1 << _TWIN_BRANCH)
    masks, volts, holdout = [], [], []

    def add(mask: np.ndarray, driven: np.ndarray, held: bool, scale: np.ndarray | None = None) -> None:
        closed = np.array([[bin(int(m)).count("1") for m in line] for line in mask])
        load = closed.sum(axis=1) @ driven.astype(float)
        top = min(voltage_v, 0.8 * max_total_current_a * min_resistance_ohm / max(load, 1))
        v = np.where(driven, top, 0.0) * (1.0 if scale is None else scale)
        masks.append(mask)
        volts.append(v)
        holdout.append(held)

    block = min(_BLOCK_ROWS, rows)
    for row in sorted({int(r) for r in np.linspace(0, rows - 1, min(rows, 8))}):
        for start in (0, cols // 2):
            mask = np.zeros((rows, cols), dtype=np.uint64)
            mask[row, start:] = bit
            add(mask, np.arange(rows) == row, False)
    for first in sorted({0, rows - block}):
        for offset in range(min(4, cols)):
            mask = np.zeros((rows, cols), dtype=np.uint64)
            mask[first:first + block, offset::4] = bit
            add(mask, (np.arange(rows) >= first) & (np.arange(rows) < first + block), False)
    for _ in range(6):
        first = int(rng.integers(0, rows - block + 1))
        mask = np.zeros((rows, cols), dtype=np.uint64)
        chosen = rng.random((block, cols, branches)) < 0.25
        mask[first:first + block] = (chosen * (1 << np.arange(branches))).sum(axis=2).astype(np.uint64)
        driven = (np.arange(rows) >= first) & (np.arange(rows) < first + block)
        add(mask, driven, True, rng.uniform(0.3, 1.0, rows))
    count = len(masks)
    return {"masks": np.stack(masks), "voltage_v": np.stack(volts), "holdout": np.array(holdout),
            "sensed": np.ones((count, cols), bool)}


def smu_twin_patterns(rows: int, cols: int, branches: int, voltage_v: float, max_current_a: float,
                      min_resistance_ohm: float, *, seed: int) -> dict[str, np.ndarray]:
    """Twin patterns for reads through the SMU: HI on some rows, LO on one column.

    Fit: in four rows, one branch in up to eight cells spread along the row, sensed at the
    first and at the last of them (row-wire sharing); in up to eight columns, one branch in a
    block of rows at either end, all of them driven (column-wire and sense sharing).
    Held-out: random branch subsets in a random block of one column. Voltages keep the SMU's
    current below half its compliance for the lowest resistance declared.
    """
    rng = np.random.default_rng(seed)
    bit = np.uint64(1 << _TWIN_BRANCH)
    block = max(1, min(_BLOCK_ROWS, rows // 3))  # blocks at the two ends must differ
    masks, volts, holdout, sensed = [], [], [], []

    def add(mask: np.ndarray, driven: np.ndarray, col: int, held: bool) -> None:
        closed = sum(bin(int(m)).count("1") for m in mask.ravel())
        top = min(voltage_v, 0.5 * max_current_a * min_resistance_ohm / max(closed, 1))
        masks.append(mask)
        volts.append(np.where(driven, top, 0.0))
        holdout.append(held)
        sensed.append(np.arange(cols) == col)

    step = max(1, cols // 8)
    for row in sorted({int(r) for r in np.linspace(0, rows - 1, min(rows, 4))}):
        mask = np.zeros((rows, cols), dtype=np.uint64)
        mask[row, ::step] = bit
        for col in sorted({0, int(np.nonzero(mask[row])[0][-1])}):
            add(mask, np.arange(rows) == row, col, False)
    for col in sorted({int(c) for c in np.linspace(0, cols - 1, min(cols, 8))}):
        for first in sorted({0, rows - block}):
            mask = np.zeros((rows, cols), dtype=np.uint64)
            mask[first:first + block, col] = bit
            add(mask, (np.arange(rows) >= first) & (np.arange(rows) < first + block), col, False)
    for _ in range(4):
        first, col = int(rng.integers(0, rows - block + 1)), int(rng.integers(cols))
        mask = np.zeros((rows, cols), dtype=np.uint64)
        chosen = rng.random((block, branches)) < 0.25
        mask[first:first + block, col] = (chosen * (1 << np.arange(branches))).sum(axis=1).astype(np.uint64)
        add(mask, (np.arange(rows) >= first) & (np.arange(rows) < first + block), col, True)
    return {"masks": np.stack(masks), "voltage_v": np.stack(volts), "holdout": np.array(holdout),
            "sensed": np.stack(sensed)}


def measure_twin(run: Run, arrays: dict[str, np.ndarray], progress: Callable[[str], None]) -> None:
    """Measure every pattern not yet measured (readout: all columns at once).

    A pattern whose reading overflows (the readout's range, the SMU's compliance) is read again
    at half its voltages, which are recorded with it.
    """
    masks, volts = arrays["masks"], arrays["voltage_v"]
    for p in range(masks.shape[0]):
        if arrays["count"][p] > 0:
            continue
        mask = np.where(run.raw.excluded.any(axis=2), np.uint64(0), masks[p])  # keep shorts out
        run.board.load_masks(mask)
        for _attempt in range(_OVERFLOW_RETRIES):
            current = _read_pattern(run, volts[p], arrays["sensed"][p])
            if np.all(np.isfinite(current)):
                break
            volts[p] = volts[p] / 2
        else:
            raise CalibrationError(f"twin pattern {p} overflows even at {np.abs(volts[p]).max():.3g} V; "
                                   "calibrate without the twin (--no-twin) or lower read_voltage_v")
        arrays["sum_a"][p] = current.sum(axis=0)
        arrays["sumsq_a2"][p] = (current**2).sum(axis=0)
        arrays["count"][p] = current.shape[0]
        arrays["masks"][p] = mask
        progress("twin")
    run.board.load_masks(np.zeros((run.rows, run.cols), dtype=np.uint64))


def _read_pattern(run: Run, volts: np.ndarray, sensed: np.ndarray) -> np.ndarray:
    """Column currents ``(repeats, cols)`` of the loaded pattern driven at ``volts`` (NaN: overflow)."""
    repeats = _TWIN_REPEATS * run.options.repeats
    if run.method == "readout":
        return run.mvm(np.tile(volts, (repeats, 1)))
    # HI on the driven rows, LO on the sensed column, the rest grounded
    driven = np.nonzero(volts)[0]
    col = int(np.nonzero(sensed)[0][0])
    run.lab.routing.connect(source_rows=[int(r) for r in driven], sense_cols=[col])
    readings = np.asarray(run.lab.source_meter.sweep_voltages_v(np.full(repeats, volts[driven[0]])), float)
    readings[np.abs(readings) >= 0.99 * run.lab.limits.max_current_a] = np.nan  # at compliance
    run.counter.readings += repeats
    current = np.zeros((repeats, run.cols))
    current[:, col] = readings
    return current


def pattern_prediction(est: Estimate, mask: np.ndarray, volts: np.ndarray, twin: TwinParameters,
                        branches: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted column currents of one pattern, and their variance from the branch sigmas."""
    bits = ((mask[..., None] >> np.arange(branches, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    bits |= (est.flags & FLAG_STUCK_CLOSED) != 0
    cell = np.clip(np.where(bits, est.conductance_s, 0.0).sum(axis=2), 0.0, None)
    var = np.where(bits, est.sigma_s**2, 0.0).sum(axis=2)
    predicted = network_col_current_a(cell, volts, twin)[0]
    return predicted, (volts[:, None] ** 2 * var).sum(axis=0)
