"""Calibration end to end on the simulated lab, where the truth is known."""

import numpy as np
import pytest

from calibration import (
    FLAG_NOT_MEASURED,
    CalibrationOptions,
    CalibrationRecord,
    TwinParameters,
    calibrate,
    recheck,
)
from calibration._bench import accuracy, seeded_faults
from calibration._estimate import fit_noise
from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.config import Fault, LabConfig, SimArrayConfig
from crossbar_ctl.core.errors import CalibrationError, InstrumentError

ROWS, COLS, BRANCHES = 12, 12, 6


def lab_config(seed=1, *, faults=True, **sim):
    shape = dict(rows=ROWS, cols=COLS, branches=BRANCHES, profile="ideal")  # the calibration's own model
    shape.update({k: sim.pop(k) for k in ("rows", "cols", "branches") if k in sim})
    found = seeded_faults(shape["rows"], shape["cols"], shape["branches"], per_kind=1, seed=seed) if faults else ()
    return LabConfig(sim=SimArrayConfig(**shape, faults=found, seed=seed, **sim))


def check_honest(record, truth, faults):
    stats = accuracy(record, truth, faults)
    assert 0.8 <= stats["z_sd"] <= 1.25, stats
    assert stats["z_over_4_pct"] < 1.0, stats
    assert stats["faults_flagged"] == f"{len(faults)}/{len(faults)}", stats
    assert stats["healthy_flagged"] == 0, stats
    return stats


def test_fit_noise_recovers_the_model():
    rng = np.random.default_rng(0)
    mean = rng.uniform(1e-6, 1e-4, 20000)
    sd = np.hypot(1e-4 * mean, 3e-9)
    readings = mean + sd * rng.standard_normal((3, mean.size))
    rel, floor = fit_noise(readings.mean(axis=0), readings.var(axis=0, ddof=1))
    assert rel == pytest.approx(1e-4, rel=0.05)
    assert floor == pytest.approx(3e-9, rel=0.1)


@pytest.mark.parametrize("design", ["single", "s-matrix"])
def test_readout_calibration_is_honest_and_finds_every_fault(tmp_path, design):
    config = lab_config()
    with open_lab(config) as lab:
        record = calibrate(lab, options=CalibrationOptions(design=design), checkpoint=tmp_path / "cal.npz")
        truth = lab.sim.array.branch_conductance_s()
    check_honest(record, truth, config.sim.faults)
    twin = record.twin
    assert twin.row_wire_resistance_ohm == pytest.approx(0.5, rel=0.05)
    assert twin.sense_resistance_ohm + ROWS * twin.col_wire_resistance_ohm == pytest.approx(10 + ROWS * 0.5, rel=0.02)
    assert twin.holdout_z_rms < 2.0
    loaded = CalibrationRecord.load(tmp_path / "cal.npz")
    assert loaded.header.complete and loaded.header.idn and loaded.header.seed == 1
    np.testing.assert_array_equal(loaded.conductance_s, record.conductance_s)


def test_smu_calibration_fits_its_twin_and_is_honest():
    config = lab_config(rows=8, cols=8, branches=4)
    with open_lab(config) as lab:
        record = calibrate(lab, options=CalibrationOptions(method="smu", repeats=3))
        truth = lab.sim.array.branch_conductance_s()
    assert record.header.method == "smu"
    check_honest(record, truth, config.sim.faults)
    assert record.twin.sense_resistance_ohm + 8 * record.twin.col_wire_resistance_ohm == pytest.approx(14.0, rel=0.05)


def test_row_subset_and_adaptive_averaging():
    config = lab_config(faults=False, rows=6, cols=6, branches=4)
    with open_lab(config) as lab:
        record = calibrate(lab, options=CalibrationOptions(rows=(1, 2), target_rel_sigma=4e-5))
    assert np.all(record.flags[[0, 3, 4, 5]] & FLAG_NOT_MEASURED)
    measured = record.flags[[1, 2]] == 0
    assert measured.all()
    assert np.all(record.sigma_s[[1, 2]] / record.conductance_s[[1, 2]] <= 4e-5)


def interrupt_at(step, action):
    def progress(done, total, stage):
        if done == step:
            action()
    return progress


def test_ctrl_c_leaves_the_lab_safe_and_resume_matches(tmp_path):
    config = lab_config(seed=2)
    path = tmp_path / "cal.npz"

    def stop():
        raise KeyboardInterrupt

    with open_lab(config) as lab:
        with pytest.raises(KeyboardInterrupt):
            calibrate(lab, checkpoint=path, progress=interrupt_at(5, stop))
        assert not lab.sim.array.masks.any()  # every switch open
        partial = CalibrationRecord.load(path)
        assert not partial.header.complete
        assert partial.arrays["state_row_done"].sum() == 4  # baseline + 4 rows
        resumed = calibrate(lab, checkpoint=path, resume=True)
        truth = lab.sim.array.branch_conductance_s()
    assert resumed.header.complete
    assert resumed.header.readings > partial.header.readings
    check_honest(resumed, truth, config.sim.faults)
    with open_lab(config) as lab:
        straight = calibrate(lab)
    ok = resumed.usable & straight.usable
    diff = (resumed.conductance_s - straight.conductance_s)[ok]
    combined = np.hypot(resumed.sigma_s, straight.sigma_s)[ok]
    assert np.all(np.abs(diff) < 5 * combined)


def test_lost_connection_mid_run_then_resume(tmp_path):
    config = lab_config(seed=3)
    path = tmp_path / "cal.npz"
    lab = open_lab(config)
    sim = lab.sim
    with pytest.raises(InstrumentError):
        calibrate(lab, checkpoint=path, progress=interrupt_at(6, lambda: sim.devices["board"].inject_fault("drop")))
    sim.devices["board"].clear_fault()
    assert path.exists() and not CalibrationRecord.load(path).header.complete
    with open_lab(config, sim=sim) as again:
        record = calibrate(again, checkpoint=path, resume=True)
        truth = sim.array.branch_conductance_s()
    check_honest(record, truth, config.sim.faults)


def test_link_lost_during_the_short_probe_then_resume_equals_a_straight_run(tmp_path, monkeypatch):
    from calibration import FLAG_SHORT
    from calibration._run import Run

    config = lab_config(seed=2, rows=4, cols=4, branches=3)  # one shorted branch among the faults
    path = tmp_path / "cal.npz"
    with open_lab(config) as lab:
        straight = calibrate(lab)
    lab = open_lab(config)
    sim = lab.sim
    original = Run.read_alone

    def drop_before_the_low_read(self, row, col, branch, repeats, voltage_v):
        if voltage_v < self.voltage_v:  # the short's reading at a low voltage
            monkeypatch.setattr(Run, "read_alone", original)
            sim.devices["board"].inject_fault("drop")
        return original(self, row, col, branch, repeats, voltage_v)

    monkeypatch.setattr(Run, "read_alone", drop_before_the_low_read)
    with pytest.raises(InstrumentError):
        calibrate(lab, checkpoint=path)
    assert Run.read_alone is original  # the drop happened in the probe
    sim.devices["board"].clear_fault()
    with open_lab(config, sim=sim) as again:
        resumed = calibrate(again, checkpoint=path, resume=True)
    assert resumed.header.readings == straight.header.readings
    np.testing.assert_array_equal(resumed.flags, straight.flags)
    short = (straight.flags & FLAG_SHORT) != 0
    assert short.sum() == 1
    z = (resumed.conductance_s - straight.conductance_s) / np.hypot(resumed.sigma_s, straight.sigma_s)
    assert np.abs(z[short]).max() < 2  # the short was probed again, not left at 0 S
    assert np.abs(z[straight.usable]).max() < 3
    on_ohm = straight.header.twin.switch_on_resistance_ohm
    assert resumed.header.twin.switch_on_resistance_ohm == pytest.approx(on_ohm, rel=0.03)


def test_a_lost_board_is_reported_once(caplog):
    import logging

    with caplog.at_level(logging.ERROR):
        with pytest.raises(InstrumentError, match="^link to the switch_board lost") as info:
            with open_lab(lab_config(faults=False, rows=4, cols=4, branches=3)) as lab:
                drop = lab.sim.devices["board"].inject_fault
                calibrate(lab, progress=interrupt_at(2, lambda: drop("drop")))
    assert "sim://board" in str(info.value)
    unsafe = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(unsafe) == 1 and unsafe[0].startswith("could not make the lab safe; switch_board: link to")


def test_resume_refuses_a_record_of_another_array_of_the_same_shape(tmp_path):
    path = tmp_path / "cal.npz"
    with open_lab(lab_config(seed=0, faults=False, rows=4, cols=4, branches=3)) as lab:
        record = calibrate(lab, checkpoint=path)
    assert len(record.header.fingerprint.positions) == 16
    with open_lab(lab_config(seed=7, faults=False, rows=4, cols=4, branches=3)) as other:
        assert other.idn() == lab.idn()  # the same board IDN: only the fingerprint tells them apart
        with pytest.raises(CalibrationError, match=r"^\S+cal\.npz was measured on another array: 1[3-6] of 16 "):
            calibrate(other, checkpoint=path, resume=True)


def test_a_fingerprint_holds_through_drift_and_a_failed_branch_but_not_on_another_array():
    from calibration import verify_fingerprint
    from calibration._fingerprint import fingerprint_positions

    config = lab_config(seed=0, faults=False, rows=4, cols=4, branches=3)
    with open_lab(config) as lab:
        record = calibrate(lab)
        lab.sim.advance_time(5000 * 3600.0)  # 5000 h of 1e-4 / sqrt(h) random-walk drift: 0.7 %
        row, col, branch = fingerprint_positions(4, 4, 3)[0]
        lab.sim.array.inject_fault(Fault(kind="open_resistor", row=row, col=col, branch=branch))
        verify_fingerprint(lab, record)  # the same array, aged and with one branch gone
        for row, col, branch in fingerprint_positions(4, 4, 3)[1:5]:  # five of sixteen gone: refused
            lab.sim.array.inject_fault(Fault(kind="open_resistor", row=row, col=col, branch=branch))
        with pytest.raises(CalibrationError, match="^this record was measured on another array: 5 of 16"):
            verify_fingerprint(lab, record)
    with open_lab(lab_config(seed=7, faults=False, rows=4, cols=4, branches=3)) as other:
        with pytest.raises(CalibrationError, match="another array"):
            verify_fingerprint(other, record.header.fingerprint)


def test_resume_refuses_other_options(tmp_path):
    path = tmp_path / "cal.npz"
    config = lab_config(faults=False, rows=4, cols=4, branches=3)

    def stop():
        raise KeyboardInterrupt

    with open_lab(config) as lab:
        with pytest.raises(KeyboardInterrupt):
            calibrate(lab, checkpoint=path, progress=interrupt_at(2, stop))
        with pytest.raises(CalibrationError, match="other options"):
            calibrate(lab, checkpoint=path, resume=True, options=CalibrationOptions(repeats=3))


def test_recheck_sees_a_temperature_change():
    config = lab_config(faults=False, rows=8, cols=8, branches=4)
    with open_lab(config) as lab:
        record = calibrate(lab)
        fresh = recheck(lab, record, sample=48)
        lab.sim.array.temperature_c = 35.0
        warm = recheck(lab, record, sample=48)
    assert fresh.valid and fresh.rms_z < 2
    assert not warm.valid
    assert warm.median_rel_drift == pytest.approx(-1e-3, rel=0.1)  # tcr 1e-4/K over 10 K
    assert warm.temperature_change_c == pytest.approx(10.0)


def test_smu_reads_with_a_known_twin_are_honest():
    config = lab_config(seed=4, rows=6, cols=6, branches=4)
    wiring = TwinParameters(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5, sense_resistance_ohm=10.0)
    with open_lab(config) as lab:
        record = calibrate(lab, options=CalibrationOptions(method="smu", twin=wiring))
        truth = lab.sim.array.branch_conductance_s()
    check_honest(record, truth, config.sim.faults)
    assert record.twin.switch_on_resistance_ohm == pytest.approx(20.0, rel=0.3)  # from the short


def test_floating_lines_show_the_sneak_path_error():
    # Three stuck-closed switches around cell (0, 0) close a sneak loop: (0,1) -> (1,1) -> (1,0).
    stuck = tuple(Fault(kind="switch_stuck_closed", row=r, col=c, branch=0) for r, c in ((0, 1), (1, 1), (1, 0)))
    config = LabConfig(sim=SimArrayConfig(rows=3, cols=3, branches=2, faults=stuck, seed=5,
                                          row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0,
                                          sense_resistance_ohm=0.0))
    sneak, error = {}, {}
    for unselected in ("ground", "float"):
        with open_lab(config) as lab:
            record = calibrate(lab, options=CalibrationOptions(method="smu", unselected=unselected, repeats=3))
            truth = lab.sim.array.branch_conductance_s()
        base = record.arrays["raw_base_sum_a"][0, 0] / record.arrays["raw_base_count"][0, 0]
        sneak[unselected] = base / record.header.read_voltage_v / truth[0, 0, 1]  # all open, vs the branch
        error[unselected] = abs(record.conductance_s[0, 0, 1] / truth[0, 0, 1] - 1)
    assert abs(sneak["ground"]) < 1e-4  # grounded lines drain the loop
    assert sneak["float"] > 0.1  # floating: the loop conducts as much as a third of a branch...
    assert max(error.values()) < 1e-3  # ...which the all-open baseline then takes off


def test_resume_after_an_interrupted_baseline_counts_each_reading_once(tmp_path, monkeypatch):
    from calibration import _run

    path = tmp_path / "cal.npz"
    config = lab_config(faults=False, rows=4, cols=4, branches=3)
    original = _run.Run.measure_baseline
    calls = []

    def measure_then_fail(self, rows, repeats=None):
        original(self, rows[:2], repeats)  # half the rows read, then the link drops
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        original(self, rows[2:], repeats)

    monkeypatch.setattr(_run.Run, "measure_baseline", measure_then_fail)
    with open_lab(config) as lab:
        with pytest.raises(KeyboardInterrupt):
            calibrate(lab, checkpoint=path)
        partial = CalibrationRecord.load(path)
        assert not partial.arrays["state_base_done"][0]
        assert partial.arrays["raw_base_count"][:2].max() > 0
        record = calibrate(lab, checkpoint=path, resume=True)
    repeats = CalibrationOptions().repeats
    assert np.all(record.arrays["raw_base_count"] == repeats)


def test_a_stuck_cells_baseline_is_counted_once_when_another_branch_reads_open():
    from calibration import FLAG_STUCK_CLOSED, TwinParameters
    from calibration._estimate import RawData, estimate

    rows, cols, branches = 2, 3, 3
    g_true = 1e-4 * (1 + 0.01 * np.arange(rows * cols * branches).reshape(rows, cols, branches) / 18)
    base = np.zeros((rows, cols))
    base[0, 0] = 1e-4  # branch 0 of cell (0, 0) is stuck closed: closing it adds nothing...
    g_true[0, 0, :2] = 0.0  # ...and branch 1 is open: it reads the same
    raw = RawData.empty(np.eye(branches, dtype=np.uint8), rows, cols)
    step = base[:, None, :] + np.moveaxis(g_true, 2, 1)  # (rows, steps, cols) currents at 1 V

    def var(current):
        return (1e-3 * current) ** 2 + 1e-18

    raw.step_sum_a[:], raw.step_sumsq_a2[:], raw.step_count[:] = 2 * step, 2 * step**2 + var(step), 2
    raw.base_sum_a[:], raw.base_sumsq_a2[:], raw.base_count[:] = 2 * base, 2 * base**2 + var(base), 2
    est = estimate(raw, voltage_v=1.0, method="smu", twin=TwinParameters.ideal(),
                   options=CalibrationOptions(), measured_rows=np.ones(rows, bool), noise=(1e-3, 1e-9))
    stuck = (est.flags & FLAG_STUCK_CLOSED) != 0
    assert stuck[0, 0, :2].all() and stuck.sum() == 2
    # what the engine adds to the cell whatever its mask says is the baseline, once
    assert np.sum(est.conductance_s[stuck]) == pytest.approx(1e-4, rel=1e-6)


def test_resume_refuses_a_record_of_another_array_even_when_complete(tmp_path, monkeypatch):
    path = tmp_path / "cal.npz"
    with open_lab(lab_config(faults=False, rows=4, cols=4, branches=3)) as lab:
        calibrate(lab, checkpoint=path)
        assert calibrate(lab, checkpoint=path, resume=True).header.complete  # same array: returned
        idn = lab.idn()
        monkeypatch.setattr(lab, "idn", lambda: {**idn, "switch_board": "OTHER,SB-1,0002,1.0"})
        with pytest.raises(CalibrationError, match="board"):
            calibrate(lab, checkpoint=path, resume=True)
    with open_lab(lab_config(faults=False, rows=4, cols=5, branches=3)) as other:
        with pytest.raises(CalibrationError, match="4x4x3 record"):
            calibrate(other, checkpoint=path, resume=True)
