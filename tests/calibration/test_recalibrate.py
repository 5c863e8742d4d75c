"""``recalibrate``: a sample finds what moved, only that is re-measured, within its share of the
readings; the new record names its parent; a record of another array is refused."""

from __future__ import annotations

import numpy as np
import pytest

from calibration import calibrate, recalibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.errors import CalibrationError


def lab_config(hours: float = 0.0, seed: int = 4) -> dict:
    # 1e-4 / sqrt(h): six times pcb's thin-film drift, so a month moves rows well past the read noise
    return {"name": "recal", "sim": {"rows": 8, "cols": 8, "branches": 4, "profile": "pcb", "seed": seed,
                                    "start_time_s": hours * 3600.0, "drift_per_hour": 1e-4}}


@pytest.fixture(scope="module")
def record():
    with open_lab(lab_config()) as lab:
        return calibrate(lab)


def test_a_month_of_drift_is_found_and_only_the_moved_rows_are_measured_again(record):
    with open_lab(lab_config(744)) as lab:
        truth = np.asarray(lab.truth.branch_conductance_s())
        new, report = recalibrate(lab, record, max_fraction=0.15)
    assert new.header.parent_checksum == report.parent_checksum == record.checksum() != new.checksum()
    assert new.header.readings == record.header.readings + report.readings and report.readings_fraction <= 0.15
    rows = list(report.remeasured_rows)
    assert rows and set(rows) <= set(report.moved_rows)  # nothing asked for: only rows the sample saw move
    old = np.abs(record.conductance_s / truth - 1)[rows][record.usable[rows]]
    now = np.abs(new.conductance_s / truth - 1)[rows][new.usable[rows]]
    assert np.median(now) < 0.5 * np.median(old)  # 31 days of drift (2.7e-3) measured away
    # every branch's sigma stays honest against the truth: re-measured or widened by the sampled spread
    z = ((new.conductance_s - truth) / new.sigma_s)[new.usable]
    assert np.std(z) < 3.0
    assert np.std(((record.conductance_s - truth) / record.sigma_s)[record.usable]) > 4.0  # the parent's is not


def test_right_after_calibration_nothing_moved(record):
    with open_lab(lab_config()) as lab:
        new, report = recalibrate(lab, record)
    assert len(report.moved_rows) <= 1 and report.common_ratio == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(new.conductance_s[~np.isin(np.arange(8), report.remeasured_rows)],
                       record.conductance_s[~np.isin(np.arange(8), report.remeasured_rows)], rtol=1e-3)


def test_a_record_of_another_array_is_refused(record):
    with open_lab(lab_config(seed=11)) as other, pytest.raises(CalibrationError, match="another array"):
        recalibrate(other, record)
    with open_lab({"name": "small", "sim": {"rows": 4, "cols": 8, "branches": 4}}) as small, \
            pytest.raises(CalibrationError, match="another array"):
        recalibrate(small, record)
    with open_lab(lab_config()) as lab, pytest.raises(CalibrationError, match="max_fraction"):
        recalibrate(lab, record, max_fraction=1.5)
