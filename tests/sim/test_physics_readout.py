"""Readout physics of the simulator (issue 11): the board's DACs, channels and ADCs, the SMU's
source and measure accuracy. Each effect is off in ``ideal``, on with the profile's value in
``pcb`` and ``harsh``, and moves the reading the way the physics says: sign, size and scaling.

The figures compared against come from the effect's own definition (docs/simulator.md); the
thresholds leave about 20 % for the finite samples a test can afford.
"""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.config import SimArrayConfig
from sim._array import PhysicalArray
from sim._board import SimSwitchBoard
from sim._keithley import SimKeithley2400, SimKeithley2450
from sim._lab import SimLab
from sim._physics import PROFILES

def quiet_board(readout: dict | None = None, *, rows: int = 1, cols: int = 64, seed: int = 5,
                **config) -> SimSwitchBoard:
    """A board whose only imperfections are ``readout`` (no read noise, drift or TCR), every
    branch closed; the ADC has 32 bits unless ``adc_bits`` says otherwise."""
    settings = dict(profile="ideal", rows=rows, cols=cols, branches=4, seed=seed, relative_noise=0.0,
                    noise_floor_fraction=0.0, drift_per_hour=0.0, tcr_per_k=0.0, adc_bits=32,
                    physics={"readout": readout or {}})
    settings.update(config)
    board = SimSwitchBoard(PhysicalArray(SimArrayConfig(**settings)))
    board.array.set_masks(np.full((rows, cols), 0b1111))
    return board


def true_current_a(board: SimSwitchBoard, voltage_v) -> np.ndarray:
    """The exact column currents of the array for the row voltages actually applied, A."""
    return board.array.circuit().solve(np.asarray(voltage_v, float)).col_current_a[0]


def relative_sd(values: np.ndarray, expected: float) -> float:
    return float(np.std(values) / expected)


# ---- column channels: gain, offset, offset drift ----------------------------------------------

def gain_and_offset(board: SimSwitchBoard, voltage_v: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's gain and offset (fraction of the ADC range) from readings at +-V."""
    high, low = board.read_columns([voltage_v]), board.read_columns([-voltage_v])
    current_a = true_current_a(board, [voltage_v])
    return (high - low) / (2 * current_a), (high + low) / 2 / board.adc_range_a


def test_channel_gain_and_offset_are_drawn_per_column_with_the_configured_spread() -> None:
    gain, offset = gain_and_offset(quiet_board({"gain_error": 1e-3, "offset_fraction": 1e-5}))
    assert 0.8 < relative_sd(gain - 1, 1e-3) < 1.2
    assert 0.8 < relative_sd(offset, 1e-5) < 1.2
    assert np.all(np.abs(gain - 1) < 4e-3) and abs(np.mean(gain - 1)) < 4e-4
    # Doubling the spreads doubles every channel's error (the same draws, scaled), to within
    # the 32-bit ADC's step.
    gain2, offset2 = gain_and_offset(quiet_board({"gain_error": 2e-3, "offset_fraction": 2e-5}))
    np.testing.assert_allclose(gain2 - 1, 2 * (gain - 1), rtol=0, atol=1e-8)
    np.testing.assert_allclose(offset2, 2 * offset, rtol=0, atol=1e-9)
    # Fixed per board: the same seed gives the same channels, another seed others.
    np.testing.assert_array_equal(gain_and_offset(quiet_board({"gain_error": 1e-3}))[0],
                                  gain_and_offset(quiet_board({"gain_error": 1e-3}))[0])
    other = gain_and_offset(quiet_board({"gain_error": 1e-3}, seed=6))[0]
    assert np.corrcoef(other - 1, gain - 1)[0, 1] < 0.5


def test_channel_offset_scales_with_the_adc_range() -> None:
    board = quiet_board({"offset_fraction": 1e-5})
    at_1ma = board.read_columns([0.0])
    board.adc_range_a = 2e-3
    np.testing.assert_allclose(board.read_columns([0.0]), 2 * at_1ma, rtol=0, atol=2e-12)
    assert 0.8 < relative_sd(at_1ma, 1e-5 * 1e-3) < 1.2


def test_channel_offset_drifts_linearly_with_temperature() -> None:
    drift = 1e-6
    board = quiet_board({"offset_drift_fraction_per_k": drift})
    assert np.all(board.read_columns([0.0]) == 0)  # no offset at the reference temperature
    readings = {}
    for delta_k in (-10.0, 10.0, 20.0):
        board.array.temperature_c = 25.0 + delta_k
        readings[delta_k] = board.read_columns([0.0]) / board.adc_range_a
    assert 0.8 < relative_sd(readings[10.0], drift * 10) < 1.2
    np.testing.assert_allclose(readings[20.0], 2 * readings[10.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(readings[-10.0], -readings[10.0], rtol=0, atol=1e-9)


# ---- the ADC: INL and DNL -----------------------------------------------------------------------

def test_adc_inl_is_a_bow_of_the_configured_peak() -> None:
    def bow_lsb(inl_lsb: float) -> tuple[float, np.ndarray, np.ndarray]:
        board = quiet_board({"adc_inl_lsb": inl_lsb}, cols=8, adc_bits=16)
        voltages = np.linspace(-1.0, 1.0, 401)
        board.adc_range_a = np.abs(true_current_a(board, [1.0])).max() / 0.999
        lsb_a = 2 * board.adc_range_a / 2**16
        true = np.array([true_current_a(board, [v]) for v in voltages]).ravel()
        read = np.array([board.read_columns([v]) for v in voltages]).ravel()
        x, error = true / board.adc_range_a, (read - true) / lsb_a
        shape = 1 - x**2
        return float(error @ shape / (shape @ shape)), x, error

    peak, x, error = bow_lsb(8.0)
    assert 7.6 < peak < 8.4  # least-squares amplitude of the bow, LSB
    assert 7.0 < np.mean(error[np.abs(x) < 0.1]) < 8.5  # largest at mid-scale, positive
    assert abs(np.mean(error[np.abs(x) > 0.95])) < 1.0  # vanishes at the ends of the range
    assert 15.2 < bow_lsb(16.0)[0] < 16.8  # twice the peak, twice the bow
    assert abs(bow_lsb(0.0)[0]) < 0.05  # off: quantization alone


def code_widths_lsb(dnl_lsb: float, *, codes: int = 2000, steps: int = 64) -> np.ndarray:
    """The width of every ADC code in a ramp over ``codes`` codes, LSB (to 1/``steps`` LSB)."""
    board = quiet_board({"adc_dnl_lsb": dnl_lsb}, cols=1, adc_bits=16)
    lsb_a = 2 * board.adc_range_a / 2**16
    ramp_a = (np.arange(-codes / 2 * steps, codes / 2 * steps) + 0.5) / steps * lsb_a
    reading = board.adc_reading_a(ramp_a)
    transitions = ramp_a[1:][np.diff(reading) != 0]
    assert np.all(np.diff(reading) >= 0)  # monotonic: no code is skipped back
    return np.diff(transitions) / lsb_a


def test_adc_dnl_moves_code_widths_by_up_to_the_configured_peak() -> None:
    widths = code_widths_lsb(0.5)
    assert abs(widths.mean() - 1) < 1e-3  # widths telescope: the range stays the range
    assert 0.4 < np.max(np.abs(widths - 1)) <= 0.5 + 1 / 64  # the peak DNL, LSB
    # Code widths are the difference of two uniform edge errors: sd = dnl / sqrt(6).
    assert 0.8 < relative_sd(widths - 1, 0.5 / np.sqrt(6)) < 1.2
    np.testing.assert_allclose(np.std(code_widths_lsb(1.0) - 1), 2 * np.std(widths - 1),
                               rtol=0.05)
    assert np.max(np.abs(code_widths_lsb(0.0) - 1)) <= 1 / 64  # off: every code one LSB


# ---- the row DACs: resolution and INL ----------------------------------------------------------

def applied_v(board: SimSwitchBoard, voltages) -> np.ndarray:
    """The row voltage the board applied for each requested one, from its 32-bit readings."""
    per_volt = true_current_a(board, [1.0])
    return np.array([np.mean(board.read_columns([v]) / per_volt) for v in voltages])


@pytest.mark.parametrize("bits", [8, 12])
def test_dac_applies_the_nearest_code_not_the_requested_voltage(bits: int) -> None:
    board = quiet_board({"dac_bits": bits}, cols=8)
    lsb_v = 1.0 / 2 ** (bits - 1)  # +-1 V (DACMAX?) over 2**bits codes
    requested = np.linspace(-0.99, 0.99, 1001)
    applied = applied_v(board, requested)
    np.testing.assert_allclose(applied / lsb_v, np.round(requested / lsb_v), atol=1e-4)
    error = applied - requested
    assert 0.45 < np.max(np.abs(error)) / lsb_v <= 0.5 + 1e-4
    assert 0.8 < relative_sd(error, lsb_v / np.sqrt(12)) < 1.2  # uniform quantization error


@pytest.mark.parametrize("bits", [None, 12, 16])
def test_dacbits_reports_the_resolution_the_board_applies(bits) -> None:
    board = quiet_board({"dac_bits": bits}, cols=8)
    assert board.feed(b"DACBITS?\n") == f"OK {bits or 0}\n".encode()
    if bits:  # a whole number of steps is applied as it is
        lsb_v = 1.0 / 2 ** (bits - 1)
        requested = lsb_v * np.array([-300.0, -7.0, 1.0, 1234.0])
        np.testing.assert_allclose(applied_v(board, requested), requested, atol=1e-3 * lsb_v)  # not half a step off


def test_mvm_text_with_ten_digits_is_applied_as_a_dac_code() -> None:
    board = quiet_board({"dac_bits": 8}, rows=2, cols=4)
    reply = board.feed(b"MVM 0.1234567891,-0.5\n").decode().split()
    assert reply[0] == "OK"
    lsb_v = 1.0 / 128
    coded = [np.round(0.1234567891 / lsb_v) * lsb_v, -0.5]
    reading = np.array(reply[1].split(","), float)
    np.testing.assert_allclose(reading, true_current_a(board, coded), rtol=1e-8)
    assert np.max(np.abs(reading / true_current_a(board, [0.1234567891, -0.5]) - 1)) > 1e-3


def test_dac_inl_is_a_bow_of_the_configured_peak() -> None:
    def inl_lsb(peak: float) -> np.ndarray:
        board = quiet_board({"dac_bits": 8, "dac_inl_lsb": peak}, cols=8)
        codes = np.arange(-128, 128)
        return applied_v(board, codes / 128) * 128 - codes

    codes = np.arange(-128, 128)
    np.testing.assert_allclose(inl_lsb(2.0), 2.0 * (1 - (codes / 128) ** 2), atol=1e-4)
    np.testing.assert_allclose(inl_lsb(4.0), 2 * inl_lsb(2.0), atol=1e-4)


# ---- profiles and streams ----------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["ideal", "pcb", "harsh"])
def test_each_profile_sets_the_readout_it_names(profile: str) -> None:
    readout = PROFILES[profile].readout
    board = quiet_board(readout.model_dump(), cols=256)
    gain, offset = gain_and_offset(board)
    if profile == "ideal":
        assert np.all(board.channel_gain == 1) and np.all(board.channel_offset_a() == 0)
        np.testing.assert_array_equal(board.dac_output_v([0.123456789]), [0.123456789])
        return
    # DAC and ADC INL move the +-V pair a little; the channel spreads dominate.
    assert 0.8 < relative_sd(gain - 1, readout.gain_error) < 1.2
    assert 0.8 < relative_sd(offset, readout.offset_fraction) < 1.3
    lsb_v = 1.0 / 2 ** (readout.dac_bits - 1)
    assert abs(board.dac_output_v([0.5]) - 0.5 - readout.dac_inl_lsb * 0.75 * lsb_v) < lsb_v


def test_the_ideal_board_reads_the_plain_rounded_current() -> None:
    config = SimArrayConfig(rows=8, cols=8, branches=4, seed=2, profile="ideal")  # default noise and drift
    board, twin = SimSwitchBoard(PhysicalArray(config)), PhysicalArray(config)
    masks = np.random.default_rng(0).integers(0, 16, size=(8, 8))
    board.array.set_masks(masks), twin.set_masks(masks)
    voltage_v, lsb_a = np.linspace(-1.0, 1.0, 8) / 3, 2 * 1e-3 / 2**18
    for _ in range(3):  # the same noise and drift draws, step by step
        current_a = twin.read_noise(twin.circuit().solve(voltage_v).col_current_a[0], 1e-3, 1.0)
        np.testing.assert_array_equal(board.read_columns(voltage_v),
                                      np.round(current_a / lsb_a) * lsb_a)
        twin.advance_time(1 / 60)


def test_the_readout_stream_leaves_the_other_draws_alone() -> None:
    def array(physics: dict) -> PhysicalArray:
        return PhysicalArray(SimArrayConfig(rows=4, cols=4, branches=4, seed=9, physics=physics))

    ideal, harsh = array({}), array({"readout": PROFILES["harsh"].readout.model_dump()})
    SimSwitchBoard(harsh)  # the board draws its channels
    np.testing.assert_array_equal(ideal.resistance_ohm(), harsh.resistance_ohm())
    np.testing.assert_array_equal(ideal.switch_on_resistance_ohm, harsh.switch_on_resistance_ohm)
    np.testing.assert_array_equal(ideal.read_noise(np.ones(8), 1e-3, 1.0),
                                  harsh.read_noise(np.ones(8), 1e-3, 1.0))
    ideal.advance_time(3600.0), harsh.advance_time(3600.0)
    np.testing.assert_array_equal(ideal.resistance_ohm(), harsh.resistance_ohm())


# ---- the SMU path: the 2450's and 2400's source and measure accuracy -------------------------

class Conductance:
    """A noiseless fixed conductance between HI and LO (a :class:`sim._keithley.Load`)."""

    def __init__(self, conductance_s: float) -> None:
        self.value_s, self.time_s = conductance_s, 0.0

    def conductance_s(self) -> float:
        return self.value_s

    def current_a(self, source_v, integration_s, step_s) -> np.ndarray:
        return self.value_s * np.asarray(source_v, float)

    def read_noise(self, current_a, range_a, nplc) -> np.ndarray:
        return np.asarray(current_a, float)

    def advance_time(self, duration_s: float) -> None:
        self.time_s += duration_s


SMUS = {"keithley2450": SimKeithley2450, "keithley2400": SimKeithley2400}


def smu_on(model: str, seed: int | None, conductance_s: float = 1e-3):
    """An SMU with its output on into ``conductance_s``; ``seed`` None: an exact instrument."""
    accuracy = None if seed is None else np.random.default_rng(seed)
    smu = SMUS[model](Conductance(conductance_s), accuracy=accuracy)
    smu.output_on, smu.limit_a = True, 1.0
    return smu


@pytest.mark.parametrize("model", SMUS)
def test_smu_sources_the_range_resolution(model: str) -> None:
    smu = smu_on(model, seed=1)
    for range_v in (0.2, 2.0):
        resolution_v = smu.SOURCE_VOLTAGE_SPEC[range_v][0]
        smu.source_range_v = range_v
        levels = 0.1 + np.arange(400) * resolution_v / 20  # 20 levels a step
        steps = np.diff(np.unique(smu.measure(levels).voltage_v))
        assert len(steps) == 20
        np.testing.assert_allclose(steps, resolution_v, rtol=3e-3)  # the step, times 1 + gain
    exact = smu_on(model, seed=None)
    np.testing.assert_array_equal(exact.measure(levels).voltage_v, levels)


def draws(model: str, read) -> np.ndarray:
    """``read(smu)`` for 300 instruments of ``model``, each with its own draw."""
    return np.array([read(smu_on(model, seed)) for seed in range(300)])


@pytest.mark.parametrize("model", SMUS)
def test_smu_source_error_is_a_fixed_draw_within_the_datasheet(model: str) -> None:
    def gain_offset(smu, range_v: float) -> tuple[float, float]:
        smu.source_range_v = range_v
        low, zero, high = smu.measure(np.array([-range_v, 0.0, range_v])).voltage_v
        return (high - low) / (2 * range_v) - 1, zero

    spec = SMUS[model].SOURCE_VOLTAGE_SPEC
    for range_v in (0.2, 20.0):
        _, gain_spec, offset_spec = spec[range_v]
        gain, offset = draws(model, lambda smu: gain_offset(smu, range_v)).T
        assert np.all(np.abs(gain) <= gain_spec) and np.all(np.abs(offset) <= offset_spec)
        # Uniform within +-spec: sd = spec / sqrt(3), both signs.
        assert 0.8 < relative_sd(gain, gain_spec / np.sqrt(3)) < 1.2
        assert 0.8 < relative_sd(offset, offset_spec / np.sqrt(3)) < 1.2
    smu = smu_on(model, seed=7)  # fixed: the same every time, and through *RST
    first = gain_offset(smu, 0.2)
    smu.reset()
    smu.output_on, smu.limit_a = True, 1.0
    assert gain_offset(smu, 0.2) == first


@pytest.mark.parametrize("model", SMUS)
def test_smu_measure_error_is_a_fixed_draw_within_the_datasheet(model: str) -> None:
    def gain_offset(smu, range_a: float) -> tuple[float, float]:
        smu.current_range_a = range_a
        points = smu.measure(np.array([-0.5, 0.5]) * range_a / 1e-3)  # +-half the range
        true_a = 1e-3 * points.voltage_v  # the current the sourced voltage drives
        slope = (points.current_a[1] - points.current_a[0]) / (true_a[1] - true_a[0])
        return slope - 1, points.current_a[1] - slope * true_a[1]

    spec = SMUS[model].MEASURE_CURRENT_SPEC
    for range_a in (100e-6, 1e-3):
        gain_spec, offset_spec = spec[range_a]
        gain, offset = draws(model, lambda smu: gain_offset(smu, range_a)).T
        assert np.all(np.abs(gain) <= gain_spec * 1.001)
        assert np.all(np.abs(offset) <= offset_spec * 1.001)
        assert 0.8 < relative_sd(gain, gain_spec / np.sqrt(3)) < 1.2
        assert 0.8 < relative_sd(offset, offset_spec / np.sqrt(3)) < 1.2
    exact = smu_on(model, seed=None)
    assert gain_offset(exact, 1e-3) == (0.0, 0.0)


@pytest.mark.parametrize("profile", ["ideal", "pcb", "harsh"])
def test_the_lab_gives_its_smu_the_profile_accuracy(profile: str) -> None:
    def lab(seed: int = 4) -> SimLab:
        config = SimArrayConfig(rows=2, cols=2, branches=2, seed=seed,
                                physics={"readout": PROFILES[profile].readout.model_dump()})
        return SimLab(config, smu_model="keithley2400")

    smu = lab().smu
    if profile == "ideal":
        assert smu.source_error is None and smu.measure_error is None
        return
    assert smu.source_error == lab().smu.source_error  # drawn from the config seed
    assert smu.measure_error != lab(seed=5).smu.measure_error
    np.testing.assert_array_equal(lab().array.resistance_ohm(),
                                  PhysicalArray(SimArrayConfig(rows=2, cols=2, branches=2,
                                                               seed=4)).resistance_ohm())
