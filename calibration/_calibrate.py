"""``calibrate()``: measure every branch of a lab's array, resumably.

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
import time
from pathlib import Path
from typing import Any

import numpy as np

from calibration._adapt import adapt
from calibration._designs import design_matrix
from calibration._estimate import RawData
from calibration._fingerprint import measure_fingerprint, verify_fingerprint
from calibration._fit import fit_and_estimate
from calibration._gains import measure_column_gains
from calibration._patterns import measure_twin, smu_twin_patterns, twin_patterns
from calibration._record import (
    DEFAULT_READ_VOLTAGE_V,
    FLAG_NOT_MEASURED,
    CalibrationHeader,
    CalibrationOptions,
    CalibrationRecord,
)
from calibration._rows import measure_row
from calibration._run import (
    Counter,
    Progress,
    Run,
    now,
    prepare,
    quiet_safe,
    state_resolution,
)
from crossbar_ctl.core.errors import CalibrationError, LimitError, RecordError

__all__ = ["calibrate"]

log = logging.getLogger(__name__)

_DEFAULT_MIN_RESISTANCE_OHM = 1e3  # the drivers' bound on one branch, used to stay in limits


def _limits_voltage(lab: Any, options: CalibrationOptions, design: np.ndarray, method: str) -> float:
    """The read voltage: as asked, or (``None``) the highest the limits allow up to 0.5 V.

    Raises
    ------
    LimitError
        The voltage asked for is beyond a limit; names the limit and the highest allowed voltage.
    """
    limits = lab.limits
    guard = getattr(lab.board, "guard", None)
    r_min = float(getattr(guard, "min_resistance_ohm", _DEFAULT_MIN_RESISTANCE_OHM))
    closed = int(design.sum(axis=1).max()) * (lab.geometry[1] if method == "readout" else 1)
    bounds = {
        "the lab's max_voltage_v": limits.max_voltage_v,
        f"max_power_w {limits.max_power_w:g} W in one branch of at least {r_min:.4g} ohm":
            float(np.sqrt(limits.max_power_w * r_min)),
        f"80 % of max_total_current_a {limits.max_total_current_a:g} A through the {closed} branches "
        f"closed at once, each at least {r_min:.4g} ohm": 0.8 * limits.max_total_current_a * r_min / closed,
    }
    if method == "readout":
        bounds["the board's DAC range (DACMAX?)"] = lab.board.dac_max_v()
    reason, highest = min(bounds.items(), key=lambda item: item[1])
    if options.read_voltage_v is None:
        return float(min(DEFAULT_READ_VOLTAGE_V, highest))
    if options.read_voltage_v > highest:
        raise LimitError("read_voltage_v", options.read_voltage_v, highest, reason)
    return float(options.read_voltage_v)


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
                               read_voltage_v=voltage, started_at=now(),
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
    counter = Counter(lab)
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
        verify_fingerprint(lab, record, what=str(checkpoint))
        if header.complete:
            return record
        if header.options != options:
            raise CalibrationError(f"{checkpoint}: recorded with other options; resume with the same "
                                   "options or start afresh")
        raw, twin_arrays, state = _unpack(record)
        counter = Counter(lab, header.readings, header.round_trips)
        previous_wall = header.wall_s
    else:
        header, raw, twin_arrays, state = _fresh(lab, options)

    wanted = np.zeros(header.rows, bool)
    wanted[list(options.rows) if options.rows is not None else slice(None)] = True
    run = Run(lab, options, header, raw, state, counter)
    total = int(wanted.sum()) + twin_arrays["masks"].shape[0] + 1
    done = [int(state["row_done"][wanted].sum()) + int((twin_arrays["count"] > 0).sum())
            + int(state["base_done"][0])]
    last_save = [time.perf_counter()]

    def snapshot(complete: bool = False, results: dict | None = None) -> CalibrationRecord:
        head = run.header.model_copy(update={
            "readings": counter.kept, "round_trips": counter.round_trips, "updated_at": now(),
            "wall_s": previous_wall + time.perf_counter() - started, "complete": complete})
        run.header = head
        return _record(head, raw, twin_arrays, state, results or _placeholder(head))

    def save() -> None:
        if checkpoint is not None and time.perf_counter() - last_save[0] > checkpoint_interval_s:
            snapshot().save(checkpoint)
            last_save[0] = time.perf_counter()

    def tick(stage: str) -> None:
        counter.end_unit()
        done[0] += 1
        save()
        if progress is not None:
            progress(done[0], total, stage)

    try:
        prepare(lab, options, header)
        if run.header.fingerprint is None:  # who this array is, before anything else
            counter.begin_unit()
            fingerprint = measure_fingerprint(run, _board_idn(lab.idn()))
            run.header = run.header.model_copy(update={"fingerprint": fingerprint})
            counter.end_unit()
        if not state["base_done"][0]:
            # an interrupted baseline left some rows' readings in the checkpoint: start it over
            counter.begin_unit()
            run.raw.clear_base(np.nonzero(wanted)[0])
            run.measure_baseline(np.nonzero(wanted)[0])
            state["base_done"][0] = True
            tick("baseline")
        for row in np.nonzero(wanted & ~state["row_done"])[0]:
            counter.begin_unit()
            run.raw.restart_row(int(row))
            measure_row(run, int(row), options.repeats)
            state["row_done"][row] = True
            state["row_temperature_c"][row] = lab.temperature_c()
            tick("rows")
        measure_twin(run, twin_arrays, tick)
        measure_column_gains(run, twin_arrays, options.column_gain_repeats)
        measured = state["row_done"].copy()
        resolution = state_resolution(state)
        final, twin, covariance = fit_and_estimate(raw, twin_arrays, run.header, measured, options,
                                                   resolution)
        final = adapt(run, final, twin, covariance, measured, started)
        temperature_end = lab.temperature_c()
    except BaseException:
        if checkpoint is not None:
            try:
                snapshot().save(checkpoint)
            except (OSError, RecordError) as exc:  # never hide the original error
                log.error("could not save the partial record %s: %s", checkpoint, exc)
        quiet_safe(lab)
        raise
    quiet_safe(lab)
    run.header = run.header.model_copy(update={
        "twin": twin, "noise_rel": final.noise_rel, "noise_floor_a": final.noise_floor_a,
        "resolution_a": resolution,
        "temperature_end_c": temperature_end})
    record = snapshot(True, {"conductance_s": final.conductance_s, "sigma_s": final.sigma_s,
                             "flags": final.flags})
    if checkpoint is not None:
        record.save(checkpoint)
    return record
