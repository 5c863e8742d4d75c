"""The drift recheck on boards the twin does not capture: raw readings against raw readings.

On ``pcb`` and ``harsh`` the wiring (per-row drivers, scattered wires, channel gains) is beyond the
twin's three resistances; a recheck that compared conductances through the twin cried drift on a
fresh calibration (3.8 to 4.4 sigma rms at 16x16x4, seeds 1-3). Reading the calibration's own
steps again cancels every static error, so a fresh record passes while drift, temperature and
faults are still seen.
"""

import numpy as np
import pytest

from calibration import (
    CalibrationOptions,
    CalibrationRecord,
    calibrate,
    recheck,
    verify_fingerprint,
)
from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.config import Fault, LabConfig, SimArrayConfig
from crossbar_ctl.core.errors import CalibrationError

ALL = 10_000  # a sample larger than the array: every usable branch


def sim_lab(profile="pcb", *, seed=1, rows=16, cols=16, branches=4, **sim):
    return open_lab(LabConfig(sim=SimArrayConfig(rows=rows, cols=cols, branches=branches,
                                                 profile=profile, seed=seed, **sim)))


def first_usable(record):
    return tuple(int(i) for i in np.argwhere(record.usable)[0])


@pytest.mark.parametrize(("profile", "design"), [("ideal", "single"), ("pcb", "single"),
                                                 ("harsh", "single"), ("pcb", "s-matrix")])
def test_a_fresh_calibration_holds(profile, design):
    with sim_lab(profile) as lab:
        record = calibrate(lab, options=CalibrationOptions(design=design))
        result = recheck(lab, record)
    assert result.valid, result
    assert 0.8 <= result.rms_z <= 1.25, result  # the read noise of both readings, nothing else
    assert result.over_4_fraction == 0.0, result


def test_drift_is_seen_at_its_size():
    with sim_lab(drift_per_hour=1e-3) as lab:
        record = calibrate(lab)
        fresh = recheck(lab, record, sample=ALL)
        before = lab.sim.array.branch_conductance_s()
        lab.sim.advance_time(24 * 3600.0)
        lab.sim.sync_time()
        moved = lab.sim.array.branch_conductance_s() / before - 1
        aged = recheck(lab, record, sample=ALL)
    assert fresh.valid and not aged.valid, aged
    expected = float(np.sqrt(np.mean(moved[record.usable] ** 2)))  # about 5e-3
    seen = np.sqrt(aged.rms_rel_drift**2 - fresh.rms_rel_drift**2)  # the noise taken off
    assert seen == pytest.approx(expected, rel=0.2)
    assert aged.rms_z > 10


def test_a_temperature_step_is_seen_at_its_size():
    with sim_lab() as lab:
        record = calibrate(lab)
        before = lab.sim.array.branch_conductance_s()
        lab.sim.array.temperature_c += 10.0
        moved = lab.sim.array.branch_conductance_s() / before - 1
        warm = recheck(lab, record)
    assert not warm.valid, warm
    expected = float(np.median(moved[record.usable]))  # about -1e-3: tcr 1e-4 / K
    assert warm.median_rel_drift == pytest.approx(expected, rel=0.2)
    assert warm.temperature_change_c == pytest.approx(10.0, abs=0.1)


@pytest.mark.parametrize(("method", "size"), [("readout", 16), ("smu", 6)])
def test_an_open_resistor_is_seen(method, size):
    with sim_lab(rows=size, cols=size) as lab:
        record = calibrate(lab, options=CalibrationOptions(method=method))
        fresh = recheck(lab, record, sample=ALL)
        row, col, branch = first_usable(record)
        lab.sim.array.inject_fault(Fault(kind="open_resistor", row=row, col=col, branch=branch))
        broken = recheck(lab, record, sample=ALL)
    assert fresh.valid and 0.8 <= fresh.rms_z <= 1.25, fresh
    assert fresh.checked == broken.checked == int(record.usable.sum())
    assert not broken.valid and broken.rms_z > 100, broken
    # that branch, not the rest
    assert 1 <= round(broken.over_4_fraction * broken.checked) <= 2, broken


def test_the_fingerprint_holds_on_pcb():
    with sim_lab(drift_per_hour=1e-3) as lab:
        record = calibrate(lab)
        verify_fingerprint(lab, record)
        lab.sim.advance_time(24 * 3600.0)
        lab.sim.array.temperature_c += 10.0
        verify_fingerprint(lab, record)  # the same array, aged and warmer
    with sim_lab(seed=2) as other:
        with pytest.raises(CalibrationError, match="another array"):
            verify_fingerprint(other, record)


def test_a_record_without_raw_readings_is_refused():
    with sim_lab("ideal", rows=3, cols=3, branches=2) as lab:
        record = calibrate(lab)
        bare = CalibrationRecord(record.header, {name: record.arrays[name]
                                                 for name in ("conductance_s", "sigma_s", "flags")})
        with pytest.raises(CalibrationError, match="no raw readings"):
            recheck(lab, bare)
