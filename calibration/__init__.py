"""Calibration: measure every branch of a crossbar, with honest uncertainties and fault flags.

``calibrate(lab)`` returns a :class:`CalibrationRecord` (per-branch ``conductance_s``,
``sigma_s`` and ``flags``, the fitted wiring twin, provenance), resumable from its checkpoint;
``recheck(lab, record)`` says whether a record still holds; ``verify_fingerprint(lab, record)``
refuses a record of another array; ``recalibrate(lab, record)`` measures a sample and re-measures
only what moved; ``fit_tcr(records)`` estimates each branch's TCR from records
at different temperatures and ``record_at_temperature(record, tcr, T)`` predicts a record at ``T``.
"""

from calibration._bench import bench_calibrate
from calibration._calibrate import calibrate
from calibration._designs import design_covariance, design_matrix, s_matrix, theoretical_gain
from calibration._fingerprint import verify_fingerprint
from calibration._recalibrate import RecalibrationReport, recalibrate
from calibration._recheck import RecheckResult, recheck
from calibration._record import (
    CALIBRATION_SCHEMA_VERSION,
    DEFAULT_READ_VOLTAGE_V,
    FLAG_EXCLUDE,
    FLAG_INCONSISTENT,
    FLAG_NOT_MEASURED,
    FLAG_OPEN,
    FLAG_SHORT,
    FLAG_STUCK_CLOSED,
    FLAG_UNCERTAIN,
    CalibrationHeader,
    CalibrationOptions,
    CalibrationRecord,
    Fingerprint,
    TwinParameters,
    flag_names,
)
from calibration._temperature import TcrEstimate, TcrHeader, fit_tcr, record_at_temperature
from calibration._twin import network_col_current_a

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
    "RecalibrationReport",
    "RecheckResult",
    "TcrEstimate",
    "TcrHeader",
    "TwinParameters",
    "bench_calibrate",
    "calibrate",
    "recalibrate",
    "recheck",
    "design_covariance",
    "design_matrix",
    "fit_tcr",
    "flag_names",
    "network_col_current_a",
    "record_at_temperature",
    "s_matrix",
    "theoretical_gain",
    "verify_fingerprint",
]
