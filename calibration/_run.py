"""One calibration run and its primitive reads.

A :class:`Run` holds what a run measures into (:class:`RawData` sums and the run's state) and
reads through the lab: a row driven through the board's readout (every column sensed at once),
one cell through the source-meter and the routing, one branch closed alone, and the all-open
baseline of every cell.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

from calibration._estimate import RawData
from calibration._record import CalibrationHeader, CalibrationOptions

__all__ = ["Counter", "Progress", "Run", "bits", "now", "prepare", "quiet_safe", "state_resolution"]

Progress = Callable[[int, int, str], None]
"""``progress(done, total, stage)``: called after every unit of work (a row, a pattern)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def bits(design_row: np.ndarray) -> int:
    return int(sum(1 << k for k, on in enumerate(design_row) if on))


class Counter:
    """Readings and instrument round trips used by this run (and the sessions it resumes)."""

    def __init__(self, lab: Any, readings: int = 0, round_trips: int = 0) -> None:
        self.lab = lab
        self.readings = readings
        self._previous = round_trips
        self._start = self._trips()
        self._unit_start: int | None = None

    def begin_unit(self) -> None:
        """A unit of work starts that a resumed run measures again if it is cut short."""
        self._unit_start = self.readings

    def end_unit(self) -> None:
        self._unit_start = None

    @property
    def kept(self) -> int:
        """Readings kept in the record: those of a unit cut short are measured again on resume."""
        return self.readings if self._unit_start is None else self._unit_start

    def _trips(self) -> int:
        drivers = (self.lab.board, self.lab.source_meter, getattr(self.lab, "matrix", None))
        return sum(getattr(getattr(d, "transport", None), "round_trips", 0) for d in drivers
                   if d is not None)

    @property
    def round_trips(self) -> int:
        return self._previous + self._trips() - self._start


class Run:
    """One calibration of one lab: the measuring half of :func:`calibrate`."""

    def __init__(self, lab: Any, options: CalibrationOptions, header: CalibrationHeader,
                 raw: RawData, state: dict[str, np.ndarray], counter: Counter) -> None:
        self.lab, self.options, self.header = lab, options, header
        self.raw, self.state, self.counter = raw, state, counter
        self.rows, self.cols, self.branches = header.rows, header.cols, header.branches
        self.voltage_v = header.read_voltage_v
        self.method = header.method
        self.design = raw.design
        self.board = lab.board

    # ---- primitive reads ----------------------------------------------------------------------
    def load_row(self, row: int, masks: np.ndarray) -> None:
        self.board.load_row(row, np.asarray(masks, dtype=np.uint64))

    def drive_row(self, row: int, repeats: int, voltage_v: float | None = None) -> np.ndarray:
        """Column currents ``(repeats, cols)`` with ``row`` driven, the others at 0 V (NaN: overflow)."""
        volts = np.zeros((repeats, self.rows))
        volts[:, row] = self.voltage_v if voltage_v is None else voltage_v
        return self.mvm(volts)

    def note_resolution(self, current: np.ndarray) -> None:
        """Track the smallest step between readings (the ADC's LSB when readings are quantized)."""
        steps = np.diff(np.unique(current[np.isfinite(current)]))
        if steps.size:
            self.state["resolution_a"][0] = min(self.state["resolution_a"][0], float(steps.min()))

    def mvm(self, volts: np.ndarray) -> np.ndarray:
        current = np.atleast_2d(self.lab.readout.mvm(volts))
        self.note_resolution(current)
        self.counter.readings += volts.shape[0]
        return current

    def smu_read(self, row: int, col: int, repeats: int, voltage_v: float | None = None) -> np.ndarray:
        """``repeats`` readings of one cell with ``row`` on HI and ``col`` on LO (NaN: compliance)."""
        smu = self.lab.source_meter
        if self.options.unselected == "ground":  # every other line grounded
            self.lab.routing.connect(source_rows=[int(row)], sense_cols=[int(col)])
        else:  # every other line floating (the board's routes)
            self.board.route_row(row, "SRC")
            self.board.route_col(col, "SENSE")
        volts = self.voltage_v if voltage_v is None else voltage_v
        current = np.asarray(smu.sweep_voltages_v(np.full(repeats, volts)), dtype=np.float64)
        self.note_resolution(current)
        # At the compliance limit the reading is the limit, not the cell (the trip flag only
        # tells about the sweep's last point).
        current[np.abs(current) >= 0.99 * self.lab.limits.max_current_a] = np.nan
        if self.options.unselected == "float":
            self.board.route_row(row, "FLOAT")
            self.board.route_col(col, "FLOAT")
        self.counter.readings += repeats
        return current

    def measure_baseline(self, rows: np.ndarray, repeats: int | None = None) -> None:
        """All switches open; each row driven in turn (readout) or each cell read (SMU)."""
        self.board.load_masks(np.zeros((self.rows, self.cols), dtype=np.uint64))
        repeats = repeats or self.options.repeats
        for row in map(int, rows):
            if self.method == "readout":
                self.raw.add_base(row, self.drive_row(row, repeats))
            else:
                for col in range(self.cols):
                    self.raw.add_base(row, self.smu_read(row, col, repeats)[:, None], [col])


    def step_masks(self, row: int, step: int, cols: np.ndarray | None = None) -> np.ndarray:
        pattern = np.uint64(bits(self.design[step]))
        excluded = np.array([bits(self.raw.excluded[row, col]) for col in range(self.cols)],
                            dtype=np.uint64)
        masks = pattern & ~excluded
        if cols is not None:
            masks = np.where(cols, masks, np.uint64(0))
        return masks

    def read_alone(self, row: int, col: int, branch: int, repeats: int, voltage_v: float) -> np.ndarray:
        """Readings of one branch closed alone in the array."""
        if self.method == "readout":
            only = np.arange(self.cols) == col
            self.load_row(row, np.where(only, np.uint64(1 << branch), np.uint64(0)))
            return self.drive_row(row, repeats, voltage_v)[:, col]
        self.board.set_mask(row, col, 1 << branch)
        return self.smu_read(row, col, repeats, voltage_v)


def state_resolution(state: dict[str, np.ndarray]) -> float:
    """The smallest step seen between readings (0 when none was seen)."""
    value = float(state["resolution_a"][0])
    return value if np.isfinite(value) else 0.0


def prepare(lab: Any, options: CalibrationOptions, header: CalibrationHeader) -> None:
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


def quiet_safe(lab: Any) -> None:
    """Outputs off and switches open; a failure is logged (once), since the error that got us
    here matters more."""
    lab.safe_state_quietly()
