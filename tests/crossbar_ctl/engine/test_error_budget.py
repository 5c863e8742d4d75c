"""The error budget's chain on fakes: each effect switched on alone grows its own stage, the stages
add up (small cross term), and a correction is applied to every evaluation alike."""

import numpy as np
import pytest

from crossbar_ctl.engine._affine import measure_affine
from crossbar_ctl.engine._check import run_check
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from calibration import TwinParameters
from tests.crossbar_ctl.engine.fakes import FakeLab, FakeTruth, array_model, exact_solver


def _setup(*, branches=6, true_error=0.0, true_wire_ohm=1.0, noise=0.0, seed=3):
    rng = np.random.default_rng(seed)
    network = build_network([rng.normal(size=(4, 5))], [0.3 * rng.normal(size=4)], ["none"],
                            input_shape=None, strides=[1], paddings=[0], name="one")
    model = array_model(rows=6, cols=8, branches=branches, wire_ohm=1.0, sense_ohm=5.0)
    true_twin = TwinParameters(row_wire_resistance_ohm=true_wire_ohm, col_wire_resistance_ohm=true_wire_ohm,
                               sense_resistance_ohm=5.0)
    lab = FakeLab(model, true_error=true_error, true_twin=true_twin, noise=noise)
    lab.truth = FakeTruth(lab.readout)
    return network, model, lab, rng.uniform(0, 1, size=(60, 5))


@pytest.mark.parametrize("effect, stage", [
    ({"branches": 3}, "quantization"),
    ({"true_error": 1e-2}, "calibration"),
    ({"true_wire_ohm": 8.0}, "ir_drop"),
    ({"noise": 3e-3}, "read_noise"),
])
def test_each_effect_alone_grows_its_own_stage_of_the_open_loop_chain(effect, stage):
    network, model, lab, x = _setup(**effect)
    plan = make_plan(network, model, solver=exact_solver)  # open loop: the twin's prediction
    budget = run_check(lab, plan, x).layers[0].budget
    assert budget.source == "simulator truth" and budget.prediction == "twin" and budget.measurement is None
    assert sum(budget.share.values()) == pytest.approx(1.0) == sum(budget.programmed_share.values())
    # measured: the effect's stage 0.995-1.05 of its level, |cross| <= 0.052
    assert abs(budget.share["cross"]) < 0.15
    if stage == "read_noise":
        assert budget.share["read_noise"] > 0.8
    else:
        assert budget.share["programmed"] > 0.8 and budget.programmed_share[stage] > 0.8
        assert abs(budget.programmed_share["cross"]) < 0.15
    # an effect switched off leaves its stage at rounding
    off = {"calibration": "true_error" not in effect, "ir_drop": "true_wire_ohm" not in effect,
           "read_noise": "noise" not in effect}
    for name, quiet in off.items():
        if quiet:
            assert getattr(budget, name) < 1e-9 * budget.quantization


def test_closed_loop_budget_splits_by_what_the_loops_measurement_saw():
    """A plan the closed loop programmed against wrong wires and calibration: the twin's stages
    would be large and cancel; the programmed error splits instead into the part the loop's
    measured residual accounts for and the part it could not see, which grows with the read
    noise of the loop's probes."""
    shares = {}
    for noise in (1e-5, 1e-3):
        network, model, lab, x = _setup(true_error=2e-3, true_wire_ohm=6.0, noise=noise)
        plan = program_plan(lab, make_plan(network, model, solver=exact_solver), model, solver=exact_solver,
                            options=ProgramOptions(max_iterations=2, affine_vectors=0, refine_rounds=0))
        budget = run_check(lab, plan, x).layers[0].budget
        assert budget.prediction == "closed loop" and budget.calibration is None and budget.ir_drop is None
        assert budget.quantization**2 + budget.measurement**2 == pytest.approx(budget.programmed**2)
        shares[noise] = budget.programmed_share["measurement"]
    # measured: 6e-5 of the programmed error's mean square unseen at 1e-5 read noise, 0.33 at 1e-3
    assert shares[1e-5] < 0.01 and shares[1e-3] > 0.15


def test_the_correction_applies_to_every_evaluation():
    """A readout 2 % high with an offset, taken out by the affine correction: each truth evaluation
    is corrected as the measurement is, so the readout stage stays at the read noise and the
    parts add up (applied to the measurement alone, the correction would land in the readout
    stage as minus the programmed error's gain and offset)."""
    network, model, lab, x = _setup(true_error=2e-3, noise=1e-5)
    mvm = lab.readout.mvm
    lab.readout.mvm = lambda voltage_v: 1.02 * mvm(voltage_v) + 1e-7
    plan = measure_affine(lab, make_plan(network, model, solver=exact_solver), vectors=32)
    details: dict = {}
    report = run_check(lab, plan, x, details=details)
    budget = report.layers[0].budget
    stages = details["stages"][0]
    assert budget.total == pytest.approx(np.sqrt(np.mean((stages["analog"] - details["reference"][0]) ** 2)))
    # measured: read noise 1.5e-3 of the total's mean square, cross -5e-4 (correcting the
    # measurement alone, as before: read noise 2.76, programmed 3.11, cross -4.87)
    assert budget.share["read_noise"] < 0.05 and abs(budget.share["cross"]) < 0.05
    assert budget.programmed <= budget.total * 1.05
