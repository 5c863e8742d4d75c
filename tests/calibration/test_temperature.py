"""Temperature compensation on the ``pcb`` profile, where each resistor has its own TCR.

The controller learns the TCRs only from records at different temperatures; the tests score it
on the simulator's truth (``lab.truth``) at temperatures set exactly, with no time passing.
"""

import json

import numpy as np
import pytest

from calibration import (
    CalibrationOptions,
    TcrEstimate,
    calibrate,
    fit_tcr,
    record_at_temperature,
)
from crossbar_ctl._lab import open_lab, set_sim_temperature_c
from crossbar_ctl.cli._main import main
from crossbar_ctl.core.config import LabConfig, SimArrayConfig
from crossbar_ctl.core.errors import CalibrationError, ConfigError, RecordError

LOW_C, HIGH_C, STEP_K = 25.0, 45.0, 10.0
# Records without the twin: their sigmas are the reading noise, what differs between two
# calibrations of one array (the twin's share is largely common to both; see docs/internals.md).
OPTIONS = CalibrationOptions(repeats=4, fit_twin=False)


def pcb_lab(seed=1, **sim):
    return open_lab(LabConfig(sim=SimArrayConfig(rows=8, cols=8, branches=4, profile="pcb", seed=seed, **sim)))


def true_g(lab, temperature_c):
    set_sim_temperature_c(lab, temperature_c)
    return lab.truth.branch_conductance_s()


@pytest.fixture(scope="module")
def pcb():
    """Records at 25 and 45 degC, the fit, and the true branch conductances at 25, 35 and 45."""
    with pcb_lab() as lab:
        records = []
        for temperature_c in (LOW_C, HIGH_C):
            set_sim_temperature_c(lab, temperature_c)
            records.append(calibrate(lab, options=OPTIONS))
        truth = {t: true_g(lab, t) for t in (LOW_C, LOW_C + STEP_K, HIGH_C)}
    return records, fit_tcr(records), truth


def test_fitted_tcrs_match_the_truth_within_their_uncertainty(pcb):
    _, tcr, truth = pcb
    true_tcr = -np.log(truth[HIGH_C] / truth[LOW_C]) / (HIGH_C - LOW_C)
    ok = tcr.valid
    assert ok.sum() >= 0.9 * ok.size
    z = (tcr.tcr_per_k - true_tcr)[ok] / tcr.sigma_per_k[ok]
    assert abs(z.mean()) < 0.3  # measured +0.05 (seeds 2, 3: +0.05, -0.07)
    assert 0.8 < z.std() < 1.4  # measured 1.14 (seeds 2, 3: 0.95, 0.95)
    # The spread between resistors is resolved, not only the mean TCR.
    assert np.corrcoef(tcr.tcr_per_k[ok], true_tcr[ok])[0, 1] > 0.55  # measured 0.70
    assert tcr.header.temperatures_c == pytest.approx((LOW_C, HIGH_C), abs=0.1)


def test_a_10_k_step_is_predicted(pcb):
    records, tcr, truth = pcb
    base, step_c = records[0], LOW_C + STEP_K
    moved = record_at_temperature(base, tcr, step_c)
    ok = tcr.valid
    true_change = np.log(truth[step_c] / truth[LOW_C])[ok]
    # The error the step adds to the calibration, with and without compensation.
    without = np.sqrt(np.mean(true_change**2))
    error = np.log(moved.conductance_s / base.conductance_s)[ok] - true_change
    with_ = np.sqrt(np.mean(error**2))
    assert with_ < 0.12 * without  # measured 9.3e-5 against 1.01e-3 (seeds 2, 3: 8.0e-5, 7.7e-5)
    # The propagated sigma covers the TCR's share.
    added = np.sqrt(np.maximum(moved.sigma_s**2 - base.sigma_s**2, 0))[ok] / moved.conductance_s[ok]
    assert 0.7 < np.sqrt(np.mean((error / added) ** 2)) < 1.4  # measured 1.15
    assert moved.header.temperature_end_c == step_c


def test_the_estimate_round_trips_and_is_a_record_of_its_own_kind(pcb, tmp_path):
    records, tcr, _ = pcb
    path = tmp_path / "tcr.npz"
    tcr.save(path)
    loaded = TcrEstimate.load(path)
    np.testing.assert_array_equal(loaded.tcr_per_k, tcr.tcr_per_k)
    assert loaded.header == tcr.header
    records[0].save(tmp_path / "cal.npz")
    with pytest.raises(RecordError, match="expected 'tcr'"):
        TcrEstimate.load(tmp_path / "cal.npz")


def test_bad_input_is_refused_with_one_line(pcb):
    records, _, _ = pcb
    with pcb_lab(seed=2) as lab:
        set_sim_temperature_c(lab, HIGH_C)
        other = calibrate(lab, options=OPTIONS)
    with pcb_lab() as lab:
        same_temperature = calibrate(lab, options=OPTIONS)
    cases = [([records[0]], "two or more temperatures, got 1"),
             ([records[0], other], "another array"),
             ([records[0], same_temperature], "span less than")]
    for given, message in cases:
        with pytest.raises(CalibrationError, match=message) as info:
            fit_tcr(given)
        assert "\n" not in str(info.value)
    with pytest.raises(CalibrationError, match="another array"):
        record_at_temperature(other, fit_tcr(records), 30.0)


def test_the_lab_file_key_and_the_api_set_the_temperature():
    with pcb_lab(temperature_c=40.0) as lab:
        assert lab.temperature_c() == pytest.approx(40.0, abs=0.05)  # the board's TEMP?
        g40 = lab.truth.branch_conductance_s()
        set_sim_temperature_c(lab, 30.0)
        assert lab.temperature_c() == pytest.approx(30.0, abs=0.05)
        assert np.median(lab.truth.branch_conductance_s() / g40) > 1  # positive TCR: colder conducts more
        with pytest.raises(ConfigError, match="-50, 150"):
            set_sim_temperature_c(lab, 400.0)

    class RealLab:
        sim = None

    with pytest.raises(ConfigError, match="a real lab records its own"):
        set_sim_temperature_c(RealLab(), 30.0)


def test_cli_calibrate_tcr_and_program_with_it(tmp_path, capsys):
    from crossbar_ctl.engine._network import build_network, save_network

    lab = tmp_path / "lab.toml"
    lab.write_text('name = "small"\n[sim]\nrows = 6\ncols = 6\nbranches = 4\nseed = 3\nprofile = "pcb"\n')
    cals = [tmp_path / f"cal{t:.0f}.npz" for t in (LOW_C, HIGH_C)]
    for path, temperature_c in zip(cals, (LOW_C, HIGH_C)):
        assert main(["calibrate", "--lab", str(lab), "--out", str(path), "--temperature-c", str(temperature_c),
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["temperature_c"] == pytest.approx(temperature_c, abs=0.1)
    out = tmp_path / "tcr.npz"
    assert main(["calibrate-tcr", "--calibration", *map(str, cals), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 2 and summary["branches_estimated"] > 0
    # Refusals: one line, exit 2, nothing written.
    bad = tmp_path / "bad.npz"
    assert main(["calibrate-tcr", "--calibration", str(cals[0]), "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crossbar: error:") and "two or more" in err and "\n" not in err
    assert not bad.exists()
    assert main(["calibrate", "--lab", str(lab), "--out", str(bad), "--temperature-c", "400"]) == 2
    assert "\n" not in capsys.readouterr().err.strip() and not bad.exists()
    # Program at +10 K (the lab-file key) with the conductances predicted there.
    hot = tmp_path / "hot.toml"
    hot.write_text(lab.read_text() + f"temperature_c = {LOW_C + STEP_K}\n")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(8, 3))
    net = build_network([rng.normal(size=(2, 3))], [np.zeros(2)], ["none"], input_shape=None, strides=[1],
                        paddings=[0], name="tiny", test_x=x, test_y=np.zeros(8, dtype=np.int64))
    weights, plan = tmp_path / "tiny.npz", tmp_path / "plan.npz"
    save_network(weights, net)
    assert main(["program", "--weights", str(weights), "--calibration", str(cals[0]), "--lab", str(hot),
                 "--tcr", str(out), "--out", str(plan), "--json"]) == 0
    assert plan.exists()


def test_programming_with_the_tcr_keeps_the_realized_bits_after_a_10_k_step():
    """On the ideal board with a TCR spread (so the step is what limits), program a layer fresh, at
    +10 K as calibrated, and at +10 K with the TCR estimate; score on the true circuit."""
    from crossbar_ctl.engine._network import build_network
    from crossbar_ctl.engine._plan import PlanOptions
    from crossbar_ctl.engine._program import ProgramOptions
    from crossbar_ctl.engine._workflow import check_network, program_network

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(32, 8))
    net = build_network([rng.normal(size=(4, 8))], [np.zeros(4)], ["none"], input_shape=None, strides=[1],
                        paddings=[0], name="layer", test_x=x, test_y=np.zeros(32, dtype=np.int64))
    config = SimArrayConfig(rows=16, cols=16, branches=8, profile="ideal", seed=2,
                            physics={"devices": {"tcr_spread_per_k": 1e-5}})
    with open_lab(LabConfig(sim=config)) as lab:
        records = []
        for temperature_c in (LOW_C, HIGH_C):
            set_sim_temperature_c(lab, temperature_c)
            records.append(calibrate(lab))
        tcr = fit_tcr(records)

        def realized_bits(temperature_c, estimate):
            set_sim_temperature_c(lab, temperature_c)
            # without the closed-loop refinement, which would measure much of the step away too
            # planned without the common-mode joint cost (the default): with it the figures below
            # are 13.00 fresh against 12.45 compensated, 0.55 bit, over the 0.5 on this
            # 60-pair layer
            plan = program_network(lab, net, records[0], recheck=False, tcr=estimate,
                                   plan_options=PlanOptions(common_mode_weight=0.0),
                                   program_options=ProgramOptions(refine_rounds=0))
            return check_network(lab, plan, x).layers[0].realized_bits.median

        fresh = realized_bits(LOW_C, None)
        stale = realized_bits(LOW_C + STEP_K, None)
        compensated = realized_bits(LOW_C + STEP_K, tcr)
    # measured 12.79 against 11.69 (12.93 against 11.14 before the drift probe's reference read the
    # tiles longer after programming, moving the simulated clock and noise; seeds 1, 3, 4: +0.7, +1.6, +0.8)
    assert compensated - stale > 0.85
    assert fresh - compensated < 0.5  # the target
