"""The calibration record: per-branch conductance, uncertainty and fault flags, with provenance.

A record is a strict pydantic header plus named arrays in one checksummed ``.npz``
(:func:`crossbar_ctl.core.files.save_record`). Besides the results (``conductance_s``, ``sigma_s``,
``flags``, each ``(rows, cols, branches)``) it keeps the raw sums of every reading, so a partial
record is also the checkpoint a resumed run continues from, and a finished one can be re-estimated
and rechecked (:func:`calibration.recheck` reads the same steps again and compares raw readings).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import RecordError
from crossbar_ctl.core.files import load_record, save_record

__all__ = [
    "CALIBRATION_SCHEMA_VERSION",
    "DEFAULT_READ_VOLTAGE_V",
    "FLAG_EXCLUDE",
    "FLAG_INCONSISTENT",
    "FLAG_NOT_MEASURED",
    "FLAG_OPEN",
    "FLAG_SHORT",
    "FLAG_STUCK_CLOSED",
    "FLAG_UNCERTAIN",
    "CalibrationHeader",
    "CalibrationOptions",
    "CalibrationRecord",
    "Fingerprint",
    "TwinParameters",
    "flag_names",
]

CALIBRATION_SCHEMA_VERSION = 1

DEFAULT_READ_VOLTAGE_V = 0.5
"""The read voltage when none is asked for (lower if the lab's limits allow less)."""

# Fault flags, one bit each, per branch.
FLAG_OPEN = 1 << 0
"""No conduction: an open resistor or a switch stuck open (electrically the same)."""
FLAG_SHORT = 1 << 1
"""Conductance far above the population, or the reading overflowed / hit compliance."""
FLAG_STUCK_CLOSED = 1 << 2
"""The branch conducts with every switch of its cell open (seen in the all-open baseline)."""
FLAG_INCONSISTENT = 1 << 3
"""Pattern readings disagree with the branch's own reads beyond their uncertainty."""
FLAG_UNCERTAIN = 1 << 4
"""The requested relative uncertainty was not reached within the time budget."""
FLAG_NOT_MEASURED = 1 << 5
"""Not measured (a partial record, or a row outside the requested subset)."""

FLAG_EXCLUDE = FLAG_OPEN | FLAG_SHORT | FLAG_STUCK_CLOSED | FLAG_INCONSISTENT | FLAG_NOT_MEASURED
"""Flags that exclude a branch from programming (``FLAG_UNCERTAIN`` alone does not)."""

_FLAG_NAMES = {
    FLAG_OPEN: "open",
    FLAG_SHORT: "short",
    FLAG_STUCK_CLOSED: "stuck_closed",
    FLAG_INCONSISTENT: "inconsistent",
    FLAG_UNCERTAIN: "uncertain",
    FLAG_NOT_MEASURED: "not_measured",
}


def flag_names(flags: int) -> list[str]:
    """Names of the bits set in one branch's ``flags`` value."""
    return [name for bit, name in _FLAG_NAMES.items() if int(flags) & bit]


class TwinParameters(StrictModel):
    """The fitted digital twin of the array's wiring (what the engine pre-distorts with)."""

    row_wire_resistance_ohm: float = Field(ge=0)
    """Resistance of one row segment (between adjacent cells, and from the driver to cell 0)."""
    col_wire_resistance_ohm: float = Field(ge=0)
    """Resistance of one column segment (between adjacent cells, and to the sense end)."""
    sense_resistance_ohm: float = Field(ge=0)
    """Input resistance of a column's sense amplifier."""
    driver_resistance_ohm: float = Field(0.0, ge=0)
    """Output resistance of each row's driver (its routing switch), before the row's first
    segment: it carries the whole row's current."""
    switch_on_resistance_ohm: float | None = None
    """Mean switch on-resistance, measurable only through shorted resistors (``None`` when no
    branch is shorted). Branch conductances are measured through their own switch, so it is
    already inside them."""
    fit_rel_rms: float = Field(0.0, ge=0)
    """Relative RMS residual of the readings used in the fit."""
    holdout_rel_rms: float | None = None
    """Relative RMS error of the fitted model on held-out multi-cell readings."""
    holdout_z_rms: float | None = None
    """RMS of the held-out errors over their predicted uncertainty (about 1 when honest)."""
    column_gain: tuple[float, ...] | None = None
    """Relative gain of each column's readout channel (board over source-meter, mean 1;
    ``calibration._gains``): readings through the board are divided by it. None: not measured."""

    @classmethod
    def ideal(cls) -> "TwinParameters":
        """No wire or sense resistance."""
        return cls(row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0, sense_resistance_ohm=0.0)


class CalibrationOptions(StrictModel):
    """How to calibrate. The defaults suit the default simulated lab."""

    method: Literal["auto", "readout", "smu"] = "auto"
    """``readout``: one row driven, every column sensed at once by the board's readout
    (column-parallel); ``smu``: one cell at a time through the source-meter and routing;
    ``auto``: ``readout`` when the board has one."""
    design: Literal["single", "s-matrix"] = "single"
    """Branch patterns closed in each cell per step: ``single`` one branch at a time, ``s-matrix``
    a weighing design (about half the branches per step, estimated by least squares)."""
    read_voltage_v: float | None = Field(None, gt=0)
    """Voltage on the driven row: refused if beyond the lab's limits, never lowered; ``None``: the
    highest the limits allow, at most ``DEFAULT_READ_VOLTAGE_V`` (the record holds the one used)."""
    nplc: float = Field(1.0, ge=0.01, le=10)
    """Integration time of every reading, in power-line cycles."""
    repeats: int = Field(2, ge=2, le=1000)
    """Readings per step in the first pass (at least 2: the noise model is fitted from them)."""
    target_rel_sigma: float | None = Field(None, gt=0)
    """Adaptive averaging: repeat steps until every branch's sigma / conductance is below this."""
    time_budget_s: float | None = Field(None, gt=0)
    """Wall-time budget for adaptive averaging (after the first pass)."""
    unselected: Literal["ground", "float"] = "ground"
    """Unselected lines in ``smu`` reads: grounded through the routing, or left floating (shows
    the sneak-path error)."""
    column_gain_repeats: int = Field(32, ge=0, le=10000)
    """Readings per sign, row and path that measure each column channel's gain against the
    source-meter (column-parallel reads with a source-meter; 0: not measured)."""
    fit_twin: bool = True
    """Fit wire and sense resistance from multi-cell patterns (column-parallel reads only) and
    correct every reading through them."""
    twin: TwinParameters | None = None
    """Known wiring (e.g. from an earlier column-parallel calibration of the same array): used
    as is instead of fitting. Reads through the SMU fit none, so give it there."""
    short_factor: float = Field(5.0, gt=1)
    """A branch above this many times the median conductance is flagged as a short."""
    open_factor: float = Field(0.05, gt=0, lt=1)
    """A branch below this fraction of the median conductance is flagged as open."""
    inconsistency_z: float = Field(6.0, gt=0)
    """Pattern residuals beyond this many sigma flag the cell's branches as inconsistent."""
    rows: tuple[int, ...] | None = None
    """Calibrate only these rows (the others are flagged ``not_measured``); ``None``: all."""
    seed: int = Field(0, ge=0)
    """Seed of the random choices (held-out twin patterns, recheck samples)."""


class Fingerprint(StrictModel):
    """What tells one array from another of the same shape: its geometry, its board, and a few
    branches at fixed positions, each read alone (:func:`calibration.verify_fingerprint`)."""

    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    branches: int = Field(ge=1, le=64)
    board_idn: str = ""
    """The switch board's identification (``""`` when not known)."""
    method: Literal["readout", "smu"]
    """How the branches were read (the same way again when verifying)."""
    read_voltage_v: float = Field(gt=0)
    nplc: float = Field(ge=0.01, le=10)
    unselected: Literal["ground", "float"] = "ground"
    positions: tuple[tuple[int, int, int], ...]
    """``(row, col, branch)`` of each branch read."""
    current_a: tuple[float | None, ...]
    """Mean current of each branch closed alone at ``read_voltage_v`` (None: overflow)."""
    sigma_a: tuple[float, ...]
    """Standard uncertainty of each mean current."""


class CalibrationHeader(StrictModel):
    """Header of a calibration record."""

    schema_version: int = CALIBRATION_SCHEMA_VERSION
    kind: Literal["calibration"] = "calibration"
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    branches: int = Field(ge=1, le=64)
    method: Literal["readout", "smu"]
    """The procedure actually used."""
    options: CalibrationOptions
    read_voltage_v: float = Field(gt=0)
    idn: dict[str, str] = {}
    """Instrument identification strings by role."""
    lab_config_json: str = ""
    """The lab configuration the run used, as JSON."""
    seed: int | None = None
    """The simulated array's seed (``None`` on hardware)."""
    started_at: str = ""
    """ISO 8601 UTC time the calibration started."""
    updated_at: str = ""
    """ISO 8601 UTC time of the last checkpoint or of completion."""
    temperature_start_c: float | None = None
    temperature_end_c: float | None = None
    complete: bool = False
    """False for a partial record (a checkpoint)."""
    noise_rel: float = Field(0.0, ge=0)
    """Fitted relative read noise (per reading)."""
    noise_floor_a: float = Field(0.0, ge=0)
    """Fitted absolute read-noise floor (per reading)."""
    resolution_a: float = Field(0.0, ge=0)
    """Smallest step seen between readings (the readout ADC's LSB; ~0 for unquantized ones)."""
    twin: TwinParameters | None = None
    readings: int = Field(0, ge=0)
    """Readings taken."""
    parent_checksum: str | None = None
    """The record this one was recalibrated from (``calibration.recalibrate``), by its
    :meth:`CalibrationRecord.checksum`; None for a full calibration."""
    round_trips: int = Field(0, ge=0)
    """Instrument round trips (commands answered) used."""
    wall_s: float = Field(0.0, ge=0)
    """Wall time spent measuring, over every resumed session."""
    fingerprint: Fingerprint | None = None
    """The array's identity, read at the start of the run (None in records made before)."""


_RESULTS = ("conductance_s", "sigma_s", "flags")


def branch_arrays(kind: str, header, names: tuple[str, ...],
                  arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` as ndarrays, once each of ``names`` is there with the header's branch shape.

    Raises
    ------
    RecordError
        A missing array, or one whose shape is not ``(rows, cols, branches)`` of ``header``.
    """
    shape = (header.rows, header.cols, header.branches)
    for name in names:
        if name not in arrays:
            raise RecordError(f"{kind} has no {name!r} array")
        if arrays[name].shape != shape:
            raise RecordError(f"{name} has shape {arrays[name].shape}, header says {shape}")
    return {name: np.asarray(value) for name, value in arrays.items()}


class CalibrationRecord:
    """Per-branch conductance, uncertainty and fault flags of one array, with provenance.

    Parameters
    ----------
    header : CalibrationHeader
    arrays : dict of str to ndarray
        ``conductance_s`` and ``sigma_s`` (float64, siemens) and ``flags`` (uint8), each
        ``(rows, cols, branches)``, plus the raw reading sums the estimates came from.
    """

    def __init__(self, header: CalibrationHeader, arrays: dict[str, np.ndarray]) -> None:
        self.header = header
        self.arrays = branch_arrays("calibration record", header, _RESULTS, arrays)

    @property
    def geometry(self) -> tuple[int, int, int]:
        """``(rows, cols, branches)``."""
        return self.header.rows, self.header.cols, self.header.branches

    @property
    def conductance_s(self) -> np.ndarray:
        """Estimated conductance of each branch through its own switch, ``(rows, cols, branches)``."""
        return self.arrays["conductance_s"]

    @property
    def sigma_s(self) -> np.ndarray:
        """Standard uncertainty of ``conductance_s``, siemens."""
        return self.arrays["sigma_s"]

    @property
    def flags(self) -> np.ndarray:
        """Fault flags (``FLAG_*`` bits), ``uint8 (rows, cols, branches)``."""
        return self.arrays["flags"]

    @property
    def usable(self) -> np.ndarray:
        """Boolean ``(rows, cols, branches)``: branches the optimizer may close."""
        return (self.flags & FLAG_EXCLUDE) == 0

    @property
    def twin(self) -> TwinParameters | None:
        return self.header.twin

    def summary(self) -> dict[str, float | int]:
        """Counts and uncertainty figures of the record (the CLI's summary)."""
        measured = (self.flags & FLAG_NOT_MEASURED) == 0
        ok = self.usable
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = self.sigma_s[ok] / self.conductance_s[ok]
        return {
            "branches": int(measured.sum()),
            "flagged": int(((self.flags & ~np.uint8(FLAG_NOT_MEASURED)) != 0).sum()),
            "median_rel_sigma": float(np.median(rel)) if rel.size else float("nan"),
            "worst_rel_sigma": float(np.max(rel)) if rel.size else float("nan"),
            "readings": self.header.readings,
            "round_trips": self.header.round_trips,
            "wall_s": self.header.wall_s,
        }

    def checksum(self) -> str:
        """A short content hash of the results and the start time (a plan's and a TCR's reference)."""
        digest = hashlib.sha256(self.header.started_at.encode())
        for name in ("conductance_s", "sigma_s", "flags"):
            digest.update(np.ascontiguousarray(self.arrays[name]).tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """Write the record atomically as a checksummed ``.npz``."""
        save_record(path, self.header, self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationRecord":
        """Load and verify a record.

        Raises
        ------
        RecordError
            Missing, truncated, corrupt, of another kind or version, or inconsistent shapes.
        """
        header, arrays = load_record(path, CalibrationHeader, kind="calibration")
        try:
            return cls(header, arrays)
        except RecordError as exc:
            raise RecordError(f"{path}: {exc}") from exc
