"""Analog inference checks on a fake lab: metrics, accuracy, agreement, the report file."""

import json

import numpy as np
import pytest

from crossbar_ctl.engine._check import CheckReport, effective_bits, run_check, sinad_db, snr_db
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.core.errors import EngineError
from tests.crossbar_ctl.engine.fakes import FakeLab, FakeTruth, array_model, exact_solver


def _quantized_sine(bits, offset, *, samples=4096):
    """A full-scale sine on ``offset`` and its error through an ideal ``bits``-bit mid-rise quantizer."""
    x = offset + np.sin(2 * np.pi * 0.0123456 * np.arange(samples))
    step = 2.0 / 2**bits
    code = np.clip(np.floor((x - offset + 1) / step), 0, 2**bits - 1)
    return x, offset - 1 + (code + 0.5) * step - x


@pytest.mark.parametrize("bits", [6, 8, 10])
@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_effective_bits_of_an_ideal_quantizer_are_its_bits_whatever_the_offset(bits, offset):
    # textbook: a full-scale sine through an ideal N-bit quantizer has SINAD 6.02 N + 1.76 dB; an
    # offset is not signal (the variance convention), so it must not add bits
    x, error = _quantized_sine(bits, offset)
    assert effective_bits(snr_db(x, error)) == pytest.approx(bits, abs=0.1)
    assert effective_bits(sinad_db(x, error)) == pytest.approx(bits, abs=0.1)


def test_sinad_uses_variances_per_output_and_snr_counts_the_errors_mean():
    rng = np.random.default_rng(0)
    t = np.arange(20000)
    amplitude, sigma, offset = np.array([1.0, 0.25]), 1e-3, 0.01
    signal = amplitude * np.sin(2 * np.pi * 0.00731 * t)[:, None] + np.array([5.0, -2.0])
    error = offset + sigma * rng.standard_normal(signal.shape)
    power = np.mean(amplitude**2 / 2)  # the outputs' means are not signal in either convention
    # SINAD: a constant error is free; the enob's SNR (issue 11): var(reference) / mean(error**2)
    assert sinad_db(signal, error) == pytest.approx(10 * np.log10(power / sigma**2), abs=0.05)
    assert snr_db(signal, error) == pytest.approx(10 * np.log10(power / (offset**2 + sigma**2)), abs=0.05)
    assert snr_db(signal, 0 * signal) == sinad_db(signal, 0 * signal) == float("inf")


def _tiny_programmed(rng):
    network = build_network([rng.normal(size=(4, 5)), rng.normal(size=(3, 4))],
                            [0.3 * rng.normal(size=4), 0.3 * rng.normal(size=3)], ["relu", "none"],
                            input_shape=None, strides=[1, 1], paddings=[0, 0], name="tiny")
    model = array_model(branches=6, wire_ohm=1.0, sense_ohm=5.0)
    lab = FakeLab(model, true_error=1e-3, noise=1e-4)
    plan = program_plan(lab, make_plan(network, model, solver=exact_solver), model,
                        options=ProgramOptions(max_iterations=1, affine_vectors=0), solver=exact_solver)
    # no affine correction: this fake has no channel gain or offset, only random errors per weight,
    # whose projection on each output the correction would fit (layer 1: rel error 2.5e-3 -> 3.1e-3);
    # the correction is measured on the simulated board (test_affine.py)
    return network, lab, plan


def test_check_runs_layer_by_layer_and_reports(tmp_path):
    rng = np.random.default_rng(0)
    network, lab, plan = _tiny_programmed(rng)
    x = rng.uniform(0, 1, size=(40, 5))
    digital = network.predict(x)
    y = digital.copy()
    y[:10] = (y[:10] + 1) % 3  # labels the network gets wrong: accuracy and agreement differ
    details = {}
    report = run_check(lab, plan, x, y, details=details)
    analog = np.argmax(details["analog"][-1], axis=1)
    assert report.samples == 40 and report.digital_accuracy == 0.75
    assert report.analog_accuracy == np.mean(analog == y)
    assert report.agreement == np.mean(analog == digital)
    assert [layer.tiles for layer in report.layers] == [1, 1]
    # measured (this fake: 1e-3 calibration error, 1e-4 read noise): relative errors 4.9e-3 and
    # 2.5e-3, 7.2 and 8.7 bits SINAD, enob 6.8 and 8.7, agreement 1.0
    assert report.agreement == 1.0
    for layer, rel_error, sinad, enob in zip(report.layers, (4.9e-3, 2.5e-3), (7.2, 8.7), (6.8, 8.7)):
        assert layer.relative_error < 1.2 * rel_error
        assert sinad - 1 < layer.sinad_bits < sinad + 1
        assert enob - 1 < layer.enob < enob + 1
        assert layer.enob <= layer.sinad_bits + 1e-9  # the error's mean only takes bits away
        assert layer.budget.source == "measurement only"
        assert layer.budget.total == pytest.approx(layer.relative_error * np.sqrt(
            np.mean(details["reference"][layer.index] ** 2)))
        assert layer.measured_weight_error_rms is not None
        assert layer.realized_bits is None  # no truth on hardware: absent, not zero
        # the closed loop's last reading of each pair: what the controller knows on hardware
        # (measured 10.3 / 11.0 bits median, 1e-4 read noise included; the twin's prediction
        # 9.8 / 11.9: this fake's twin is its circuit but for the 1e-3 calibration error)
        assert layer.measured_bits is not None and layer.measured_bits.pairs == layer.planned_bits.pairs
        assert layer.measured_bits.median > 9
        assert layer.planned_bits.pairs == layer.outputs * (network.layers[layer.index].matrix.shape[1] + 1)
    report.save(tmp_path / "report.json")
    again = CheckReport.model_validate(json.loads((tmp_path / "report.json").read_text()))
    assert again == report
    with pytest.raises(EngineError, match="shape"):
        run_check(lab, plan, x[:, :3])


@pytest.mark.parametrize("gain_error", [0.05, 0.2])
def test_effective_bits_of_a_known_gain_error(gain_error):
    # a readout that reads every current (1 + e) times too large makes every layer's output
    # (1 + e) times its float64 value: SINAD = -20 log10(e) (variances), whatever the means
    rng = np.random.default_rng(1)
    network, lab, plan = _tiny_programmed(rng)
    mvm = lab.readout.mvm
    lab.readout.mvm = lambda voltage_v: (1 + gain_error) * mvm(voltage_v)
    details = {}
    report = run_check(lab, plan, rng.uniform(0, 1, size=(200, 5)), details=details)
    expected = (-20 * np.log10(gain_error) - 1.76) / 6.02
    for layer, reference in zip(report.layers, details["reference"]):
        assert layer.sinad_bits == pytest.approx(expected, abs=0.1)
        # enob: the error e * reference keeps its mean, so mean(error**2) = e**2 mean(reference**2)
        snr = 10 * np.log10(np.mean(np.var(reference, axis=0)) / (gain_error**2 * np.mean(reference**2)))
        assert layer.enob == pytest.approx((snr - 1.76) / 6.02, abs=0.1)
        assert layer.enob < expected - 0.1  # the outputs' means are far from zero here


@pytest.mark.parametrize("true_error", [0.0, 1e-3, 4e-3])
def test_realized_bits_fall_with_the_true_conductances_error(true_error):
    """Realized bits score the true transfer of the programmed pairs: without an error they are
    the planned bits; each 4x the conductance error costs 2 bits; the calibration stage then
    carries the error budget."""
    rng = np.random.default_rng(2)
    network = build_network([rng.normal(size=(5, 5))], [0.3 * rng.normal(size=5)], ["none"],
                            input_shape=None, strides=[1], paddings=[0], name="one")
    model = array_model(rows=6, cols=10, branches=8, wire_ohm=1.0, sense_ohm=5.0)
    lab = FakeLab(model, true_error=true_error, noise=1e-5)
    lab.truth = FakeTruth(lab.readout)
    plan = make_plan(network, model, solver=exact_solver)  # not programmed: the truth keeps its error
    layer = run_check(lab, plan, rng.uniform(0, 1, size=(50, 5))).layers[0]
    realized, planned = layer.realized_bits, layer.planned_bits
    assert realized.pairs == planned.pairs == 30
    assert realized.worst <= realized.p01 <= realized.median
    budget = layer.budget
    parts = budget.programmed_share
    assert budget.source == "simulator truth" and parts["ir_drop"] == 0  # the true wires are the twin's
    assert sum(budget.share.values()) == pytest.approx(1.0) == sum(parts.values())
    if true_error == 0:
        assert realized.median == pytest.approx(planned.median, abs=1e-9)  # measured 13.0
        assert parts["calibration"] == pytest.approx(0, abs=1e-12)  # rounding of two circuit routes
    else:
        # measured 10.0 and 8.0 bits (planned 13.0): a relative error e of the cells, whose
        # conductances are about max|w| * cpw, leaves -log2(e) bits
        assert realized.median == pytest.approx(-np.log2(true_error), abs=0.5)
        assert parts["calibration"] > 0.9  # measured 1.07 and 1.02 (cross -0.09, -0.02)
        # the weights' error, not the 1e-5 read noise, carries the output's
        assert budget.share["programmed"] > 0.95 and abs(budget.share["cross"]) < 0.05
