"""Temperature compensation: each branch's TCR from records taken at different temperatures.

A branch conductance follows ``g(T) = g(T0) exp(-tcr (T - T0))`` to first order, where ``tcr`` is
the temperature coefficient of the branch resistance (resistor and switch), 1/K. Given two or more
calibration records of the same array (fingerprints compared) at different temperatures,
:func:`fit_tcr` fits ``log g`` against each row's measured temperature by weighted least squares
per branch; :func:`record_at_temperature` moves a record to another temperature, with the TCR's
uncertainty propagated into the sigmas. The controller learns TCRs only by measuring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from calibration._fingerprint import _compare
from calibration._record import (
    FLAG_EXCLUDE,
    FLAG_UNCERTAIN,
    CalibrationRecord,
    Fingerprint,
    branch_arrays,
)
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import CalibrationError, RecordError
from crossbar_ctl.core.files import load_record, save_record

__all__ = ["TCR_SCHEMA_VERSION", "TcrEstimate", "TcrHeader", "fit_tcr", "record_at_temperature",
           "record_temperature_c"]

TCR_SCHEMA_VERSION = 1
_MIN_SPAN_K = 0.5
"""Least spread of the records' temperatures a fit accepts, K."""


class TcrHeader(StrictModel):
    """Header of a TCR estimate record."""

    schema_version: int = TCR_SCHEMA_VERSION
    kind: Literal["tcr"] = "tcr"
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    branches: int = Field(ge=1, le=64)
    board_idn: str = ""
    fingerprint: Fingerprint | None = None
    """The fingerprint of the first record (every record's was compared with it)."""
    temperatures_c: tuple[float, ...]
    """Mean measured temperature of each record, degC."""
    parents: tuple[str, ...]
    """Content hashes of the records fitted (:meth:`CalibrationRecord.checksum`)."""
    reference_temperature_c: float
    """Mean of ``temperatures_c``."""


class TcrEstimate:
    """Per-branch TCR of the branch resistance with its uncertainty, ``(rows, cols, branches)``.

    Parameters
    ----------
    header : TcrHeader
    arrays : dict of str to ndarray
        ``tcr_per_k`` and ``sigma_per_k`` (1/K; NaN where not estimated) and ``valid`` (uint8).
    """

    def __init__(self, header: TcrHeader, arrays: dict[str, np.ndarray]) -> None:
        self.header = header
        self.arrays = branch_arrays("TCR record", header, ("tcr_per_k", "sigma_per_k", "valid"),
                                    arrays)

    @property
    def geometry(self) -> tuple[int, int, int]:
        return self.header.rows, self.header.cols, self.header.branches

    @property
    def tcr_per_k(self) -> np.ndarray:
        """TCR of each branch's resistance, 1/K (``-d log g / dT``)."""
        return self.arrays["tcr_per_k"]

    @property
    def sigma_per_k(self) -> np.ndarray:
        """Standard uncertainty of ``tcr_per_k``, 1/K."""
        return self.arrays["sigma_per_k"]

    @property
    def valid(self) -> np.ndarray:
        """Boolean: branches with an estimate (usable in every record fitted)."""
        return self.arrays["valid"].astype(bool)

    def summary(self) -> dict[str, float | int]:
        """Counts and the TCR population's figures (the CLI's summary)."""
        ok = self.valid
        tcr, sigma = self.tcr_per_k[ok], self.sigma_per_k[ok]
        nan = float("nan")
        return {
            "records": len(self.header.parents),
            "temperature_min_c": min(self.header.temperatures_c),
            "temperature_max_c": max(self.header.temperatures_c),
            "branches_estimated": int(ok.sum()),
            "median_tcr_per_k": float(np.median(tcr)) if tcr.size else nan,
            "tcr_spread_per_k": float(np.std(tcr)) if tcr.size else nan,
            "median_sigma_per_k": float(np.median(sigma)) if sigma.size else nan,
        }

    def save(self, path: str | Path) -> None:
        """Write the estimate atomically as a checksummed ``.npz``."""
        save_record(path, self.header, self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> TcrEstimate:
        """Load and verify a TCR record (refused if of another kind or a newer schema)."""
        header, arrays = load_record(path, TcrHeader, kind="tcr")
        try:
            return cls(header, arrays)
        except RecordError as exc:
            raise RecordError(f"{path}: {exc}") from exc


def record_temperature_c(record: CalibrationRecord) -> np.ndarray:
    """Measured temperature of each row of a record, degC ``(rows,)``.

    The per-row readings (``row_temperature_c``) where kept, else the mean of the start and end.

    Raises
    ------
    CalibrationError
        The record holds no temperature.
    """
    rows = record.header.rows
    per_row = record.arrays.get("row_temperature_c")
    ends = [t for t in (record.header.temperature_start_c, record.header.temperature_end_c) if t is not None]
    fallback = float(np.mean(ends)) if ends else np.nan
    out = np.full(rows, fallback)
    if per_row is not None and per_row.shape == (rows,):
        out = np.where(np.isfinite(per_row), per_row, out)
    if not np.all(np.isfinite(out)):
        raise CalibrationError("a calibration record holds no temperature; recalibrate with this version")
    return out.astype(np.float64)


def _same_array(a: Fingerprint | None, b: Fingerprint | None, what: str) -> None:
    """Refuse ``b`` when its fingerprint is not of the array of ``a`` (board, branches read)."""
    if a is None or b is None:
        raise CalibrationError(f"{what}: a record without a fingerprint cannot be told to be of the same "
                               "array; recalibrate with this version")
    if (a.rows, a.cols, a.branches) != (b.rows, b.cols, b.branches):
        raise CalibrationError(f"{what} is of a {b.rows}x{b.cols}x{b.branches} array, not "
                               f"{a.rows}x{a.cols}x{a.branches}: records of the same array only")
    if a.board_idn and b.board_idn and a.board_idn != b.board_idn:
        raise CalibrationError(f"{what} is of board {b.board_idn!r}, not {a.board_idn!r}: "
                               "records of the same array only")
    if a.positions != b.positions:
        raise CalibrationError(f"{what}: its fingerprint reads other branches")
    scale = a.read_voltage_v / b.read_voltage_v  # compare at one voltage
    b = b.model_copy(update={"current_a": tuple(None if c is None else c * scale for c in b.current_a),
                             "sigma_a": tuple(s * abs(scale) for s in b.sigma_a)})
    differ, worst = _compare(a, b, drift_rel=0.02)
    if differ > len(a.positions) // 4:
        raise CalibrationError(f"{what} was measured on another array: {differ} of {len(a.positions)} "
                               f"fingerprint branches differ (by up to {100 * worst:.0f} %)")


def fit_tcr(records: Sequence[CalibrationRecord]) -> TcrEstimate:
    """Estimate each branch's TCR from records of one array at different temperatures.

    Per branch, ``log g`` is fitted against its row's measured temperature by least squares
    weighted by ``(g / sigma)**2``; the TCR is minus the slope and its uncertainty the slope's
    standard error from the records' sigmas. A branch is estimated where every record has it
    usable (no ``FLAG_EXCLUDE``) with a positive conductance.

    Parameters
    ----------
    records : sequence of CalibrationRecord
        Two or more complete records of the same array whose temperatures span at least 0.5 K.

    Returns
    -------
    TcrEstimate

    Raises
    ------
    CalibrationError
        Fewer than two records, a partial one, records of different arrays, a record without
        temperature, or temperatures too close to tell a slope (one line each).
    """
    records = list(records)
    if len(records) < 2:
        raise CalibrationError(f"a TCR fit needs calibration records at two or more temperatures, got {len(records)}")
    for index, record in enumerate(records):
        if not record.header.complete:
            raise CalibrationError(f"record {index + 1} is partial (a checkpoint); finish it first")
        if index:
            _same_array(records[0].header.fingerprint, record.header.fingerprint,
                        f"record {index + 1} (against record 1)")
    temperature = np.stack([record_temperature_c(r) for r in records])  # (records, rows)
    means = temperature.mean(axis=1)
    if np.ptp(means) < _MIN_SPAN_K:
        raise CalibrationError(f"the records' temperatures ({', '.join(f'{t:.2f}' for t in means)} degC) span less "
                               f"than {_MIN_SPAN_K} K: calibrate at temperatures further apart")
    g = np.stack([np.asarray(r.conductance_s, float) for r in records])  # (records, rows, cols, branches)
    sigma = np.stack([np.asarray(r.sigma_s, float) for r in records])
    valid = np.all([(r.flags & FLAG_EXCLUDE) == 0 for r in records], axis=0)
    valid &= np.all((g > 0) & (sigma > 0) & np.isfinite(g) & np.isfinite(sigma), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.where(g > 0, g, 1.0))
        weight = np.where(valid, (g / sigma) ** 2, 0.0)  # 1 / var(log g)
    t = np.broadcast_to(temperature[:, :, None, None], g.shape)
    total = weight.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    t_mean = (weight * t).sum(axis=0) / safe
    y_mean = (weight * y).sum(axis=0) / safe
    sxx = (weight * (t - t_mean) ** 2).sum(axis=0)
    valid &= sxx > 0
    sxx = np.where(valid, sxx, 1.0)
    slope = (weight * (t - t_mean) * (y - y_mean)).sum(axis=0) / sxx
    header = TcrHeader(rows=records[0].header.rows, cols=records[0].header.cols,
                       branches=records[0].header.branches,
                       board_idn=records[0].header.fingerprint.board_idn,
                       fingerprint=records[0].header.fingerprint,
                       temperatures_c=tuple(float(m) for m in means),
                       parents=tuple(r.checksum() for r in records),
                       reference_temperature_c=float(means.mean()))
    return TcrEstimate(header, {"tcr_per_k": np.where(valid, -slope, np.nan),
                                "sigma_per_k": np.where(valid, 1.0 / np.sqrt(sxx), np.nan),
                                "valid": valid.astype(np.uint8)})


def record_at_temperature(record: CalibrationRecord, tcr: TcrEstimate, temperature_c: float) -> CalibrationRecord:
    """The record's conductances predicted at ``temperature_c``.

    Each branch moves from its row's measured temperature by ``exp(-tcr dT)``; its sigma adds the
    TCR's uncertainty in quadrature (``g sigma_tcr |dT|``). Branches without an estimate keep their
    values and are flagged ``FLAG_UNCERTAIN`` when the temperature moved. The result keeps the
    header (its ``temperature_end_c`` set to ``temperature_c``) and the raw sums.

    Raises
    ------
    CalibrationError
        The TCR estimate is of another geometry or fingerprint than the record.
    """
    if tcr.geometry != record.geometry:
        raise CalibrationError(f"the TCR estimate is of a {'x'.join(map(str, tcr.geometry))} array, the calibration "
                               f"of a {'x'.join(map(str, record.geometry))} one")
    _same_array(tcr.header.fingerprint, record.header.fingerprint, "the calibration (against the TCR estimate)")

    delta_k = float(temperature_c) - record_temperature_c(record)[:, None, None]
    ok = tcr.valid
    tcr_per_k = np.where(ok, tcr.tcr_per_k, 0.0)
    sigma_per_k = np.where(ok, tcr.sigma_per_k, 0.0)
    g = np.asarray(record.conductance_s, float)
    moved = g * np.exp(-tcr_per_k * delta_k)
    sigma = np.hypot(np.asarray(record.sigma_s, float) * np.exp(-tcr_per_k * delta_k),
                     moved * sigma_per_k * np.abs(delta_k))
    flags = np.asarray(record.flags).copy()
    flags[~ok & (np.abs(delta_k) > 0) & (g > 0)] |= np.uint8(FLAG_UNCERTAIN)
    arrays = dict(record.arrays, conductance_s=moved, sigma_s=sigma, flags=flags)
    return CalibrationRecord(record.header.model_copy(update={"temperature_end_c": float(temperature_c)}), arrays)
