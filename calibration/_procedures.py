"""Calibration procedures: measure every branch of a lab's array, resumably.

Order of a run: the all-open baseline of every cell; then row by row (the checkpoint unit) every
step of the design, either column-parallel through the board's readout (one row driven, its
cells closed in the step's pattern, every column sensed at once) or cell by cell through the
source-meter and the routing; then a few multi-cell patterns that fit the twin (wire and sense
resistance) and held-out ones that test it; then the estimates, the fault flags and, on request,
more readings where a branch misses its uncertainty target.

Everything measured goes into raw sums (:class:`RawData`), so a run interrupted by Ctrl-C or an
instrument fault leaves a partial record from which ``resume=True`` continues.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calibration._designs import design_matrix
from calibration._estimate import (
    SHORT_PROBE,
    Estimate,
    RawData,
    cell_conductance_s,
    estimate,
    mean_var,
    quantization_var,
)
from calibration._record import (
    FLAG_EXCLUDE,
    FLAG_NOT_MEASURED,
    FLAG_SHORT,
    FLAG_STUCK_CLOSED,
    CalibrationHeader,
    CalibrationOptions,
    CalibrationRecord,
    TwinParameters,
)
from calibration._twin import fit_twin, network_col_current_a
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CalibrationError, LimitError, RecordError

__all__ = ["Progress", "RecheckResult", "calibrate", "recheck"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, stage)``: called after every unit of work (a row, a pattern)."""

_DEFAULT_MIN_RESISTANCE_OHM = 1e3  # the drivers' bound on one branch, used to stay in limits
_TWIN_BRANCH = 0
_BLOCK_ROWS = 8
_TWIN_REPEATS = 4  # the twin patterns are few and every branch leans on them: read them longer


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _bits(design_row: np.ndarray) -> int:
    return int(sum(1 << k for k, on in enumerate(design_row) if on))


class _Counter:
    """Readings and instrument round trips used by this run (and the sessions it resumes)."""

    def __init__(self, lab: Any, readings: int = 0, round_trips: int = 0) -> None:
        self.lab = lab
        self.readings = readings
        self._previous = round_trips
        self._start = self._trips()

    def _trips(self) -> int:
        drivers = (self.lab.board, self.lab.source_meter, getattr(self.lab, "matrix", None))
        return sum(getattr(getattr(d, "transport", None), "round_trips", 0) for d in drivers
                   if d is not None)

    @property
    def round_trips(self) -> int:
        return self._previous + self._trips() - self._start


class _Run:
    """One calibration of one lab: the measuring half of :func:`calibrate`."""

    def __init__(self, lab: Any, options: CalibrationOptions, header: CalibrationHeader,
                 raw: RawData, state: dict[str, np.ndarray], counter: _Counter) -> None:
        self.lab, self.options, self.header = lab, options, header
        self.raw, self.state, self.counter = raw, state, counter
        self.rows, self.cols, self.branches = header.rows, header.cols, header.branches
        self.voltage_v = header.read_voltage_v
        self.method = header.method
        self.design = raw.design
        self.board = lab.board

    # ---- primitive reads ----------------------------------------------------------------------
    def _load_row(self, row: int, masks: np.ndarray) -> None:
        self.board.load_row(row, np.asarray(masks, dtype=np.uint64))

    def _drive_row(self, row: int, repeats: int, voltage_v: float | None = None) -> np.ndarray:
        """Column currents ``(repeats, cols)`` with ``row`` driven, the others at 0 V (NaN: overflow)."""
        volts = np.zeros((repeats, self.rows))
        volts[:, row] = self.voltage_v if voltage_v is None else voltage_v
        return self._mvm(volts)

    def _note_resolution(self, current: np.ndarray) -> None:
        """Track the smallest step between readings (the ADC's LSB when readings are quantized)."""
        steps = np.diff(np.unique(current[np.isfinite(current)]))
        if steps.size:
            self.state["resolution_a"][0] = min(self.state["resolution_a"][0], float(steps.min()))

    def _mvm(self, volts: np.ndarray) -> np.ndarray:
        current = np.atleast_2d(self.lab.readout.mvm(volts))
        self._note_resolution(current)
        self.counter.readings += volts.shape[0]
        return current

    def _smu_read(self, row: int, col: int, repeats: int, voltage_v: float | None = None) -> np.ndarray:
        """``repeats`` readings of one cell with ``row`` on HI and ``col`` on LO (NaN: compliance)."""
        smu = self.lab.source_meter
        if self.options.unselected == "ground":  # every other line grounded
            self.lab.routing.connect(source_rows=[int(row)], sense_cols=[int(col)])
        else:  # every other line floating (the board's routes)
            self.board.route_row(row, "SRC")
            self.board.route_col(col, "SENSE")
        volts = self.voltage_v if voltage_v is None else voltage_v
        current = np.asarray(smu.sweep_voltages_v(np.full(repeats, volts)), dtype=np.float64)
        self._note_resolution(current)
        # At the compliance limit the reading is the limit, not the cell (the trip flag only
        # tells about the sweep's last point).
        current[np.abs(current) >= 0.99 * self.lab.limits.max_current_a] = np.nan
        if self.options.unselected == "float":
            self.board.route_row(row, "FLOAT")
            self.board.route_col(col, "FLOAT")
        self.counter.readings += repeats
        return current

    # ---- baseline -------------------------------------------------------------------------------
    def measure_baseline(self, rows: np.ndarray, repeats: int | None = None) -> None:
        """All switches open; each row driven in turn (readout) or each cell read (SMU)."""
        self.board.load_masks(np.zeros((self.rows, self.cols), dtype=np.uint64))
        repeats = repeats or self.options.repeats
        for row in map(int, rows):
            if self.method == "readout":
                self.raw.add_base(row, self._drive_row(row, repeats))
            else:
                for col in range(self.cols):
                    self.raw.add_base(row, self._smu_read(row, col, repeats)[:, None], [col])

    # ---- one row --------------------------------------------------------------------------------
    def _step_masks(self, row: int, step: int, cols: np.ndarray | None = None) -> np.ndarray:
        pattern = np.uint64(_bits(self.design[step]))
        excluded = np.array([_bits(self.raw.excluded[row, col]) for col in range(self.cols)],
                            dtype=np.uint64)
        masks = pattern & ~excluded
        if cols is not None:
            masks = np.where(cols, masks, np.uint64(0))
        return masks

    def measure_row(self, row: int, repeats: int) -> None:
        """Every step of the design on ``row``; shorts found on the way are excluded and the row
        measured again without them."""
        for _attempt in range(self.branches + 1):
            shorts = self._measure_row_once(row, repeats)
            if not shorts:
                return
            for col, step in shorts:
                self._probe_shorts(row, col, step)
            self.raw.clear_row(row)
        raise CalibrationError(f"row {row}: readings keep overflowing after excluding shorts")

    def _measure_row_once(self, row: int, repeats: int) -> list[tuple[int, int]]:
        shorts: list[tuple[int, int]] = []
        steps = self.design.shape[0]
        if self.method == "readout":
            for step in range(steps):
                self._load_row(row, self._step_masks(row, step))
                current = self._drive_row(row, repeats)
                bad = np.nonzero(~np.all(np.isfinite(current), axis=0))[0]
                if bad.size:
                    shorts.extend((int(col), step) for col in bad)
                    break
                self.raw.add_step(row, step, current)
        else:
            for col in range(self.cols):
                for step in range(steps):
                    mask = int(self._step_masks(row, step)[col])
                    self.board.set_mask(row, col, mask)
                    current = self._smu_read(row, col, repeats)
                    if not np.all(np.isfinite(current)):
                        shorts.append((col, step))
                        break
                    self.raw.add_step(row, step, current[:, None], [col])
                self.board.set_mask(row, col, 0)
                if shorts:
                    break
        self._load_row(row, np.zeros(self.cols, dtype=np.uint64))
        return shorts

    def _read_alone(self, row: int, col: int, branch: int, repeats: int, voltage_v: float) -> np.ndarray:
        """Readings of one branch closed alone in the array."""
        if self.method == "readout":
            only = np.arange(self.cols) == col
            self._load_row(row, np.where(only, np.uint64(1 << branch), np.uint64(0)))
            return self._drive_row(row, repeats, voltage_v)[:, col]
        self.board.set_mask(row, col, 1 << branch)
        return self._smu_read(row, col, repeats, voltage_v)

    def _probe_shorts(self, row: int, col: int, step: int) -> None:
        """Close each branch of the overflowing step alone in one cell; exclude those that overflow,
        and read them again at a low voltage (a shorted resistor leaves the switch alone: its
        on-resistance)."""
        found = False
        for branch in map(int, np.nonzero(self.design[step] & ~self.raw.excluded[row, col])[0]):
            if np.all(np.isfinite(self._read_alone(row, col, branch, 1, self.voltage_v))):
                continue
            self.raw.excluded[row, col, branch] = True
            found = True
            low = self._read_alone(row, col, branch, self.options.repeats, self.voltage_v * SHORT_PROBE)
            self.raw.short_current_a[row, col, branch] = np.mean(low)  # NaN if it overflows still
            log.info("branch (%d, %d, %d) overflows alone: a short, excluded", row, col, branch)
        if self.method == "readout":
            self._load_row(row, np.zeros(self.cols, dtype=np.uint64))
        else:
            self.board.set_mask(row, col, 0)
        if not found:
            raise CalibrationError(f"cell ({row}, {col}) overflows only with several branches "
                                   "closed: lower read_voltage_v")


# ---- twin patterns ------------------------------------------------------------------------------

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


def _measure_twin(run: _Run, arrays: dict[str, np.ndarray], progress: Callable[[str], None]) -> None:
    """Measure every pattern not yet measured (readout: all columns at once)."""
    masks, volts = arrays["masks"], arrays["voltage_v"]
    for p in range(masks.shape[0]):
        if arrays["count"][p] > 0:
            continue
        mask = np.where(run.raw.excluded.any(axis=2), np.uint64(0), masks[p])  # keep shorts out
        run.board.load_masks(mask)
        repeats = _TWIN_REPEATS * run.options.repeats
        if run.method == "readout":
            current = run._mvm(np.tile(volts[p], (repeats, 1)))
        else:  # HI on the driven rows, LO on the sensed column, the rest grounded
            driven = np.nonzero(volts[p])[0]
            col = int(np.nonzero(arrays["sensed"][p])[0][0])
            run.lab.routing.connect(source_rows=[int(r) for r in driven], sense_cols=[col])
            readings = run.lab.source_meter.sweep_voltages_v(np.full(repeats, volts[p][driven[0]]))
            run.counter.readings += repeats
            current = np.zeros((repeats, run.cols))
            current[:, col] = readings
        arrays["sum_a"][p] = current.sum(axis=0)
        arrays["sumsq_a2"][p] = (current**2).sum(axis=0)
        arrays["count"][p] = current.shape[0]
        arrays["masks"][p] = mask
        progress("twin")
    run.board.load_masks(np.zeros((run.rows, run.cols), dtype=np.uint64))


def _pattern_prediction(est: Estimate, mask: np.ndarray, volts: np.ndarray, twin: TwinParameters,
                        branches: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted column currents of one pattern, and their variance from the branch sigmas."""
    bits = ((mask[..., None] >> np.arange(branches, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    bits |= (est.flags & FLAG_STUCK_CLOSED) != 0
    cell = np.clip(np.where(bits, est.conductance_s, 0.0).sum(axis=2), 0.0, None)
    var = np.where(bits, est.sigma_s**2, 0.0).sum(axis=2)
    predicted = network_col_current_a(cell, volts, twin)[0]
    return predicted, (volts[:, None] ** 2 * var).sum(axis=0)


# ---- the whole run --------------------------------------------------------------------------------

def _limits_voltage(lab: Any, options: CalibrationOptions, design: np.ndarray, method: str) -> float:
    """The read voltage: as asked, lowered if needed to keep the drivers' total-current bound."""
    limits = lab.limits
    if options.read_voltage_v > limits.max_voltage_v:
        raise LimitError("max_voltage_v", options.read_voltage_v, limits.max_voltage_v,
                         "calibration read_voltage_v")
    guard = getattr(lab.board, "guard", None)
    r_min = float(getattr(guard, "min_resistance_ohm", _DEFAULT_MIN_RESISTANCE_OHM))
    closed = int(design.sum(axis=1).max()) * (lab.geometry[1] if method == "readout" else 1)
    voltage = min(options.read_voltage_v, 0.8 * limits.max_total_current_a * r_min / closed)
    if method == "readout":
        voltage = min(voltage, lab.board.dac_max_v())
    if voltage < options.read_voltage_v:
        log.info("read voltage lowered to %.3g V to keep the total-current limit", voltage)
    return float(voltage)


def _method(lab: Any, options: CalibrationOptions) -> str:
    has_readout = "MVM" in lab.board.capabilities()
    if options.method == "readout" and not has_readout:
        raise CalibrationError("method 'readout' needs a board with MVM (CAP? lists none)")
    if options.method == "smu" or (options.method == "auto" and not has_readout):
        if lab.source_meter is None:
            raise CalibrationError("this lab has neither a readout board nor a source-meter")
        return "smu"
    return "readout"


def _provenance(lab: Any) -> dict[str, Any]:
    config = getattr(lab, "config", None)
    sim = getattr(config, "sim", None) if getattr(lab, "sim", None) is not None else None
    return {
        "idn": {str(k): str(v) for k, v in lab.idn().items()},
        "lab_config_json": config.model_dump_json() if config is not None else "",
        "seed": sim.seed if sim is not None else None,
    }


def _board_idn(idn: dict[str, str]) -> str:
    """The switch board's identification among a lab's instruments ("" when not known)."""
    return str(idn.get("switch_board") or idn.get("board") or "")


def _fresh(lab: Any, options: CalibrationOptions) -> tuple[CalibrationHeader, RawData, dict, dict]:
    rows, cols, branches = lab.geometry
    method = _method(lab, options)
    design = design_matrix(options.design, branches)
    voltage = _limits_voltage(lab, options, design, method)
    header = CalibrationHeader(rows=rows, cols=cols, branches=branches, method=method, options=options,
                               read_voltage_v=voltage, started_at=_now(),
                               temperature_start_c=lab.temperature_c(), **_provenance(lab))
    raw = RawData.empty(design, rows, cols)
    guard = getattr(lab.board, "guard", None)
    r_min = float(getattr(guard, "min_resistance_ohm", _DEFAULT_MIN_RESISTANCE_OHM))
    fit = options.fit_twin and options.twin is None and options.rows is None
    if fit and method == "readout":
        patterns = twin_patterns(rows, cols, branches, voltage, lab.limits.max_total_current_a, r_min,
                                 seed=options.seed)
    elif fit and options.unselected == "ground":  # the twin's lines are grounded, not floating
        patterns = smu_twin_patterns(rows, cols, branches, voltage, lab.limits.max_current_a, r_min,
                                     seed=options.seed)
    else:
        patterns = {"masks": np.zeros((0, rows, cols), np.uint64), "voltage_v": np.zeros((0, rows)),
                    "holdout": np.zeros(0, bool), "sensed": np.zeros((0, cols), bool)}
    count = patterns["masks"].shape[0]
    twin = {**patterns, "sum_a": np.zeros((count, cols)), "sumsq_a2": np.zeros((count, cols)),
            "count": np.zeros(count, dtype=np.int64)}
    state = {"row_done": np.zeros(rows, bool), "base_done": np.zeros(1, bool),
             "row_temperature_c": np.full(rows, np.nan), "resolution_a": np.full(1, np.inf)}
    return header, raw, twin, state


def _placeholder(header: CalibrationHeader) -> dict[str, np.ndarray]:
    shape = (header.rows, header.cols, header.branches)
    return {"conductance_s": np.zeros(shape), "sigma_s": np.zeros(shape),
            "flags": np.full(shape, FLAG_NOT_MEASURED, dtype=np.uint8)}


def _record(header: CalibrationHeader, raw: RawData, twin: dict, state: dict,
            results: dict[str, np.ndarray]) -> CalibrationRecord:
    arrays = {**results, **raw.arrays(), **{f"twin_{k}": v for k, v in twin.items()},
              **{f"state_{k}": v for k, v in state.items()}}
    return CalibrationRecord(header, arrays)


def _unpack(record: CalibrationRecord) -> tuple[RawData, dict, dict]:
    arrays = record.arrays
    raw = RawData.from_arrays(arrays)
    twin = {k[5:]: np.array(v) for k, v in arrays.items() if k.startswith("twin_")}
    state = {k[6:]: np.array(v) for k, v in arrays.items() if k.startswith("state_")}
    return raw, twin, state


def _fit(raw: RawData, twin_arrays: dict, header: CalibrationHeader, measured: np.ndarray,
         options: CalibrationOptions, resolution_a: float) -> tuple[Estimate, TwinParameters, np.ndarray]:
    """Estimate every branch, fitting the twin first when there are patterns to fit it to."""
    voltage, method = header.read_voltage_v, header.method
    first = estimate(raw, voltage_v=voltage, method=method, twin=TwinParameters.ideal(),
                     options=options, measured_rows=measured, resolution_a=resolution_a)
    noise = (first.noise_rel, first.noise_floor_a)
    stuck_s = np.where((first.flags & FLAG_STUCK_CLOSED) != 0, first.conductance_s, 0.0).sum(axis=2)
    patterns = twin_arrays["masks"].shape[0]
    if options.twin is not None or patterns == 0 or not np.all(twin_arrays["count"] > 0):
        twin = options.twin or TwinParameters.ideal()
        final = _with_twin(raw, header, options, measured, noise, twin, np.zeros((3, 3)), resolution_a)
        return final, twin.model_copy(update={"switch_on_resistance_ohm": _on_ohm(final)}), np.zeros((3, 3))
    mean, _ = mean_var(twin_arrays["sum_a"], twin_arrays["sumsq_a2"], twin_arrays["count"][:, None])
    per_reading = (noise[0] * mean) ** 2 + noise[1] ** 2
    reading_var = per_reading / twin_arrays["count"][:, None] + quantization_var(per_reading, resolution_a)
    fit_idx = np.nonzero(~twin_arrays["holdout"])[0]
    # Only the rows the fit patterns touch need re-estimating for each candidate twin.
    touched = np.zeros(header.rows, bool)
    for p in fit_idx:
        touched |= twin_arrays["voltage_v"][p] != 0
    sub = RawData(**{name: getattr(raw, name)[touched] if name != "design" else raw.design
                     for name in RawData.__dataclass_fields__})

    def predict(twin: TwinParameters, index: np.ndarray, est: Estimate):
        out, var = [], []
        for p in index:
            pred, pvar = _pattern_prediction(est, twin_arrays["masks"][p], twin_arrays["voltage_v"][p],
                                             twin, header.branches)
            out.append(pred)
            var.append(pvar)
        return np.array(out), np.array(var)

    rows_at = np.nonzero(touched)[0]

    def residuals(twin: TwinParameters) -> np.ndarray:
        part = estimate(sub, voltage_v=voltage, method=method, twin=twin, options=options,
                        measured_rows=measured[touched], noise=noise, resolution_a=resolution_a,
                        row_index=rows_at,
                        array_rows=header.rows, stuck_s=stuck_s)
        full = {name: np.array(getattr(first, name)) for name in ("conductance_s", "sigma_s", "flags")}
        for name in full:
            full[name][rows_at] = getattr(part, name)
        est = Estimate(**{**first.__dict__, **full})
        pred, pvar = predict(twin, fit_idx, est)
        sensed = twin_arrays["sensed"][fit_idx]
        return ((mean[fit_idx] - pred) / np.sqrt(reading_var[fit_idx] + pvar))[sensed]

    twin, covariance = fit_twin(residuals, TwinParameters(row_wire_resistance_ohm=0.1,
                                                          col_wire_resistance_ohm=0.1,
                                                          sense_resistance_ohm=1.0))
    final = _with_twin(raw, header, options, measured, noise, twin, covariance, resolution_a)

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


def _with_twin(raw: RawData, header: CalibrationHeader, options: CalibrationOptions,
               measured: np.ndarray, noise: tuple[float, float], twin: TwinParameters,
               covariance: np.ndarray, resolution_a: float) -> Estimate:
    """Estimates through ``twin``, with the twin's own uncertainty propagated to every branch."""
    kwargs = dict(voltage_v=header.read_voltage_v, method=header.method, options=options,
                  measured_rows=measured, noise=noise, resolution_a=resolution_a)
    final = estimate(raw, twin=twin, **kwargs)
    if not np.any(covariance):
        return final
    jac = []
    names = ("row_wire_resistance_ohm", "col_wire_resistance_ohm", "sense_resistance_ohm")
    for i, name in enumerate(names):
        step = max(float(np.sqrt(covariance[i, i])), 1e-6)
        moved = twin.model_copy(update={name: getattr(twin, name) + step})
        jac.append((estimate(raw, twin=moved, **kwargs).conductance_s - final.conductance_s) / step)
    jac = np.stack(jac, axis=-1)
    extra = np.nan_to_num(np.einsum("...i,ij,...j->...", jac, covariance, jac))
    return Estimate(**{**final.__dict__, "sigma_s": np.sqrt(final.sigma_s**2 + np.maximum(extra, 0))})


def calibrate(lab: Any, *, options: CalibrationOptions | None = None,
              checkpoint: str | Path | None = None, resume: bool = False,
              progress: Progress | None = None, checkpoint_interval_s: float = 10.0) -> CalibrationRecord:
    """Measure every branch of the lab's array.

    Parameters
    ----------
    lab : drivers.Lab
        The lab (its ``board``, ``readout``, ``source_meter``, ``limits``, ``geometry``).
    options : CalibrationOptions, optional
    checkpoint : path, optional
        Where the partial record is kept (atomically) while measuring, and where an interrupted
        run leaves it.
    resume : bool
        Continue from ``checkpoint`` if it holds a partial record of this lab with these options.
    progress : callable, optional
        ``progress(done, total, stage)`` after every row and pattern; may raise to stop the run
        (the partial record is saved first).
    checkpoint_interval_s : float
        Least wall time between two checkpoints while measuring.

    Returns
    -------
    CalibrationRecord

    Raises
    ------
    CalibrationError
        The lab cannot be calibrated with these options, or a resumed record does not match.
    InstrumentError
        An instrument failed; the lab was left safe and the partial record saved.
    """
    options = options or CalibrationOptions()
    started = time.perf_counter()
    counter = _Counter(lab)
    previous_wall = 0.0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        record = CalibrationRecord.load(checkpoint)
        header = record.header
        if (header.rows, header.cols, header.branches) != tuple(lab.geometry):
            raise CalibrationError(f"{checkpoint}: a {header.rows}x{header.cols}x{header.branches} "
                                   f"record, this lab is {'x'.join(map(str, lab.geometry))}")
        recorded, board = _board_idn(header.idn), _board_idn(lab.idn())
        if recorded and board and board != recorded:
            raise CalibrationError(f"{checkpoint}: recorded on board {recorded!r}, this lab's "
                                   f"board is {board!r}; calibrate this array afresh")
        if header.complete:
            return record
        if header.options != options:
            raise CalibrationError(f"{checkpoint}: recorded with other options; resume with the same "
                                   "options or start afresh")
        raw, twin_arrays, state = _unpack(record)
        counter = _Counter(lab, header.readings, header.round_trips)
        previous_wall = header.wall_s
    else:
        header, raw, twin_arrays, state = _fresh(lab, options)

    wanted = np.zeros(header.rows, bool)
    wanted[list(options.rows) if options.rows is not None else slice(None)] = True
    run = _Run(lab, options, header, raw, state, counter)
    total = int(wanted.sum()) + twin_arrays["masks"].shape[0] + 1
    done = [int(state["row_done"][wanted].sum()) + int((twin_arrays["count"] > 0).sum())
            + int(state["base_done"][0])]
    last_save = [time.perf_counter()]

    def snapshot(complete: bool = False, results: dict | None = None) -> CalibrationRecord:
        head = run.header.model_copy(update={
            "readings": counter.readings, "round_trips": counter.round_trips, "updated_at": _now(),
            "wall_s": previous_wall + time.perf_counter() - started, "complete": complete})
        run.header = head
        return _record(head, raw, twin_arrays, state, results or _placeholder(head))

    def save() -> None:
        if checkpoint is not None and time.perf_counter() - last_save[0] > checkpoint_interval_s:
            snapshot().save(checkpoint)
            last_save[0] = time.perf_counter()

    def tick(stage: str) -> None:
        done[0] += 1
        save()
        if progress is not None:
            progress(done[0], total, stage)

    try:
        _prepare(lab, options, header)
        if not state["base_done"][0]:
            # an interrupted baseline left some rows' readings in the checkpoint: start it over
            run.raw.clear_base(np.nonzero(wanted)[0])
            run.measure_baseline(np.nonzero(wanted)[0])
            state["base_done"][0] = True
            tick("baseline")
        for row in np.nonzero(wanted & ~state["row_done"])[0]:
            run.raw.clear_row(int(row))
            run.measure_row(int(row), options.repeats)
            state["row_done"][row] = True
            state["row_temperature_c"][row] = lab.temperature_c()
            tick("rows")
        _measure_twin(run, twin_arrays, tick)
        measured = state["row_done"].copy()
        resolution = _resolution(state)
        final, twin, covariance = _fit(raw, twin_arrays, run.header, measured, options, resolution)
        final = _adapt(run, final, twin, covariance, measured, started)
        temperature_end = lab.temperature_c()
    except BaseException:
        if checkpoint is not None:
            try:
                snapshot().save(checkpoint)
            except (OSError, RecordError) as exc:  # never hide the original error
                log.error("could not save the partial record %s: %s", checkpoint, exc)
        _quiet_safe(lab)
        raise
    _quiet_safe(lab)
    run.header = run.header.model_copy(update={
        "twin": twin, "noise_rel": final.noise_rel, "noise_floor_a": final.noise_floor_a,
        "resolution_a": resolution,
        "temperature_end_c": temperature_end})
    record = snapshot(True, {"conductance_s": final.conductance_s, "sigma_s": final.sigma_s,
                             "flags": final.flags})
    if checkpoint is not None:
        record.save(checkpoint)
    return record


def _adapt(run: _Run, final: Estimate, twin: TwinParameters, covariance: np.ndarray,
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
                run.measure_row(int(row), extra)
            finally:
                more, run.raw = run.raw, saved
            run.measure_baseline([row], extra)  # the baseline is in every branch's sigma too
            for name in ("step_sum_a", "step_sumsq_a2", "step_count"):
                getattr(saved, name)[row] += getattr(more, name)[row]
            if np.any(more.excluded[row] & ~saved.excluded[row]):  # a new short: start the row over
                saved.excluded[row] |= more.excluded[row]
                saved.clear_row(int(row))
                run.measure_row(int(row), have + extra)
        final = _with_twin(run.raw, run.header, options, measured, noise, twin, covariance,
                           _resolution(run.state))
        if deadline is not None and time.perf_counter() > deadline:
            break
    return final


def _resolution(state: dict[str, np.ndarray]) -> float:
    value = float(state["resolution_a"][0])
    return value if np.isfinite(value) else 0.0


def _prepare(lab: Any, options: CalibrationOptions, header: CalibrationHeader) -> None:
    """Instrument settings of a run (repeated on resume: the lab may have been reset)."""
    board = lab.board
    if header.method == "readout":
        board.set_adc_nplc(options.nplc)
        return
    smu = lab.source_meter
    if options.unselected == "float":
        board.route_row("*", "FLOAT")
        board.route_col("*", "FLOAT")
    else:
        lab.routing.ground_all()
    smu.set_nplc(options.nplc)
    smu.set_compliance_current_a(lab.limits.max_current_a)
    smu.set_current_range_a(None)
    smu.set_source_voltage_v(header.read_voltage_v)


def _quiet_safe(lab: Any) -> None:
    try:
        lab.safe_state()
    except Exception as exc:  # the link may be gone; the error that got us here matters more
        log.error("could not put the lab in its safe state: %s", exc)


# ---- drift check ----------------------------------------------------------------------------------

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
    run = _Run(lab, options, header, raw, {"resolution_a": np.full(1, np.inf)}, _Counter(lab))
    stuck = np.where((record.flags & FLAG_STUCK_CLOSED) != 0, record.conductance_s, 0.0).sum(axis=2)
    try:
        _prepare(lab, options, header)
        for (row, branch) in sorted({(int(r), int(k)) for r, _, k in picked}):
            chosen = np.zeros(cols, bool)
            chosen[[c for r, c, k in picked if r == row and k == branch]] = True
            masks = np.where(chosen, np.uint64(1 << branch), np.uint64(0))
            if header.method == "readout":
                run._load_row(row, masks)
                raw.add_step(row, branch, run._drive_row(row, options.repeats))
            else:
                for col in np.nonzero(chosen)[0]:
                    lab.board.set_mask(row, int(col), 1 << branch)
                    raw.add_step(row, branch, run._smu_read(row, int(col), options.repeats)[:, None], [col])
                    lab.board.set_mask(row, int(col), 0)
            if header.method == "readout":
                run._load_row(row, np.zeros(cols, dtype=np.uint64))
        temperature = lab.temperature_c()
    finally:
        _quiet_safe(lab)
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
