"""Analog inference checks on a fake lab: metrics, accuracy, agreement, the report file."""

import json

import numpy as np
import pytest

from crossbar_ctl.engine._check import CheckReport, effective_bits, run_check, snr_db
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.core.errors import EngineError
from tests.crossbar_ctl.engine.fakes import FakeLab, array_model, exact_solver


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


def test_sinad_uses_variances_per_output():
    rng = np.random.default_rng(0)
    t = np.arange(20000)
    amplitude, sigma = np.array([1.0, 0.25]), 1e-3
    signal = amplitude * np.sin(2 * np.pi * 0.00731 * t)[:, None] + np.array([5.0, -2.0])
    error = 0.01 + sigma * rng.standard_normal(signal.shape)  # a constant offset is not SINAD
    expected = 10 * np.log10(np.mean(amplitude**2 / 2) / sigma**2)
    assert snr_db(signal, error) == pytest.approx(expected, abs=0.05)
    assert snr_db(signal, 0 * signal) == float("inf")


def _tiny_programmed(rng):
    network = build_network([rng.normal(size=(4, 5)), rng.normal(size=(3, 4))],
                            [0.3 * rng.normal(size=4), 0.3 * rng.normal(size=3)], ["relu", "none"],
                            input_shape=None, strides=[1, 1], paddings=[0, 0], name="tiny")
    model = array_model(branches=6, wire_ohm=1.0, sense_ohm=5.0)
    lab = FakeLab(model, true_error=1e-3, noise=1e-4)
    plan = program_plan(lab, make_plan(network, model, solver=exact_solver), model,
                        options=ProgramOptions(max_iterations=1), solver=exact_solver)
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
    # 2.5e-3, 7.2 and 8.7 effective bits, agreement 1.0
    assert report.agreement == 1.0
    for layer, rel_error, bits in zip(report.layers, (4.9e-3, 2.5e-3), (7.2, 8.7)):
        assert layer.relative_error < 1.2 * rel_error
        assert bits - 1 < layer.effective_bits < bits + 1
        assert layer.budget.source == "measurement only"
        assert layer.budget.total == pytest.approx(layer.relative_error * np.sqrt(
            np.mean(details["reference"][layer.index] ** 2)))
        assert layer.measured_weight_error_rms is not None
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
    report = run_check(lab, plan, rng.uniform(0, 1, size=(200, 5)))
    expected = (-20 * np.log10(gain_error) - 1.76) / 6.02
    for layer in report.layers:
        assert layer.effective_bits == pytest.approx(expected, abs=0.1)


def test_conv_network_runs_through_im2col_on_the_array():
    rng = np.random.default_rng(5)
    network = build_network([rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(3, 18))],
                            [0.2 * rng.normal(size=2), 0.2 * rng.normal(size=3)], ["relu", "none"],
                            input_shape=(1, 5, 5), strides=[1, 1], paddings=[0, 0], name="conv")
    model = array_model(rows=10, cols=8, branches=6)
    lab = FakeLab(model, true_error=1e-4, noise=1e-5)
    plan = program_plan(lab, make_plan(network, model, solver=exact_solver), model, solver=exact_solver)
    x = rng.uniform(0, 1, size=(12, 25))
    calls = lab.readout.calls
    report = run_check(lab, plan, x, network.predict(x))
    # layer 0: 12 images x 9 patches through 1 tile; layer 1: 19 rows on a 10-row array, 2 tiles
    assert lab.readout.calls - calls == 12 * 9 + 12 * 2
    assert report.agreement >= 11 / 12  # measured 1.0
    for layer, rel_error in zip(report.layers, (9.5e-4, 1.6e-3)):  # measured
        assert layer.relative_error < 1.2 * rel_error
