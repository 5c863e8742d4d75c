"""Protocol replays: every SourceMeter method, the exact strings sent and the replies consumed."""

import math

import numpy as np
import pytest

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import InstrumentReportedError, LimitError, ProtocolError
from drivers import Keithley2400, Keithley2450, SafetyGuard
from drivers._transport import _NoReply
from tests.drivers.scripted import NO_ERROR, ScriptedTransport, connect_2400, connect_2450


def test_2450_reset():
    smu, t = connect_2450([
        ("*RST", None), ("*CLS", None), (":SOUR:FUNC VOLT", None), (':SENS:FUNC "CURR"', None),
        (":SENS:CURR:RANG:AUTO ON", None), (":SOUR:VOLT 0", None), (":SOUR:VOLT:ILIM 0.000105", None),
        NO_ERROR,
    ])
    smu.reset()
    t.assert_done()
    assert smu.level_v == 0.0 and not smu.output_is_on


def test_2400_reset():
    smu, t = connect_2400([
        ("*RST", None), ("*CLS", None), (":SOUR:FUNC VOLT", None), (":SOUR:VOLT:MODE FIX", None),
        (':SENS:FUNC "CURR"', None), (":SENS:CURR:RANG:AUTO ON", None), (":FORM:ELEM CURR", None),
        (":SOUR:VOLT 0", None), (":SENS:CURR:PROT 0.000105", None), NO_ERROR,
    ])
    smu.reset()
    t.assert_done()


def test_reset_compliance_respects_a_lower_limit():
    guard = SafetyGuard(Limits(max_current_a=1e-5))
    smu, t = connect_2450([
        ("*RST", None), ("*CLS", None), (":SOUR:FUNC VOLT", None), (':SENS:FUNC "CURR"', None),
        (":SENS:CURR:RANG:AUTO ON", None), (":SOUR:VOLT 0", None), (":SOUR:VOLT:ILIM 1e-05", None),
        NO_ERROR,
    ], guard=guard)
    smu.reset()
    t.assert_done()


@pytest.mark.parametrize("connect, command", [(connect_2450, ":SOUR:VOLT:ILIM 0.0005"),
                                              (connect_2400, ":SENS:CURR:PROT 0.0005")])
def test_compliance(connect, command):
    smu, t = connect([(command, None), NO_ERROR])
    smu.set_compliance_current_a(5e-4)
    t.assert_done()


@pytest.mark.parametrize("connect", [connect_2450, connect_2400])
def test_source_voltage_output_nplc_range(connect):
    smu, t = connect([
        (":SOUR:VOLT 0.25", None), NO_ERROR,
        (":SENS:CURR:NPLC 0.01", None), NO_ERROR,
        (":SENS:CURR:RANG 0.0001", None), NO_ERROR,
        (":SENS:CURR:RANG:AUTO ON", None), NO_ERROR,
        (":OUTP ON", None), NO_ERROR,
        (":READ?", "+1.250000E-05"),
    ])
    smu.set_source_voltage_v(0.25)
    smu.set_nplc(0.01)
    smu.set_current_range_a(1e-4)
    smu.set_current_range_a(None)
    smu.output_on()
    assert smu.measure_current_a() == pytest.approx(1.25e-5)
    t.assert_done()


def test_large_change_ramps_while_output_on():
    smu, t = connect_2450([
        (":OUTP ON", None), NO_ERROR,
        (":SOUR:VOLT 0.5", None), (":SOUR:VOLT 1", None), NO_ERROR,   # ramp_step_v = 0.5
        (":SOUR:VOLT 0.5", None), (":SOUR:VOLT 0", None), NO_ERROR,
        (":OUTP OFF", None), NO_ERROR,
    ])
    smu.output_on()
    smu.set_source_voltage_v(1.0)
    smu.output_off()
    t.assert_done()
    assert smu.level_v == 0.0


def test_output_off_at_zero_sends_no_ramp():
    smu, t = connect_2400([(":OUTP OFF", None), NO_ERROR])
    smu.output_off()
    t.assert_done()


@pytest.mark.parametrize("connect, command", [(connect_2450, ":SOUR:VOLT:ILIM:TRIP?"),
                                              (connect_2400, ":SENS:CURR:PROT:TRIP?")])
def test_compliance_state(connect, command):
    smu, t = connect([(command, "1"), (command, "0")])
    assert smu.in_compliance() is True
    assert smu.in_compliance() is False
    t.assert_done()


def test_2450_list_sweep():
    smu, t = connect_2450([
        (":SOUR:LIST:VOLT 0,0.1,0.2,0", None), (":SOUR:SWE:VOLT:LIST 1, 0", None),
        (':TRAC:CLE "defbuffer1"', None), NO_ERROR,
        (":INIT", None), ("*WAI", None),
        (':TRAC:DATA? 1, 4, "defbuffer1", READ', "1e-9,1e-5,2e-5,2e-9"),
        (":OUTP OFF", None),
    ])
    current = smu.sweep_voltages_v([0.1, 0.2])
    np.testing.assert_allclose(current, [1e-5, 2e-5])
    assert not smu.output_is_on and smu.level_v == 0.0
    t.assert_done()


class Integrating(ScriptedTransport):
    """A 2450 that takes a sweep's real time: the readings arrive only if the link waits that long.

    Worst case on 50 Hz mains with autozero on: each point integrates three apertures (the
    reading, and expired zero and reference readings) and settles for about a millisecond.
    """

    def __init__(self, steps, *, nplc, timeout_s):
        super().__init__(steps)
        self.nplc, self.link_timeout_s, self.waited_s = nplc, timeout_s, []

    def _receive(self):
        if self.sent[-1].startswith(":TRAC:DATA?"):
            points = int(self.sent[-1].split(",")[1])
            self.waited_s.append(self.timeout_s)
            if self.timeout_s < self.link_timeout_s + points * (3 * self.nplc / 50 + 1e-3):
                raise _NoReply
        return super()._receive()


@pytest.mark.parametrize("nplc", [1.0, 10.0])
def test_2450_sweep_waits_for_the_sweeps_worst_case_duration(nplc):
    smu, _ = connect_2450()
    t = Integrating([(f":SENS:CURR:NPLC {nplc:g}", None), NO_ERROR,
                     (":SOUR:LIST:VOLT 0,0.1,0.2,0", None), (":SOUR:SWE:VOLT:LIST 1, 0", None),
                     (':TRAC:CLE "defbuffer1"', None), NO_ERROR, (":INIT", None), ("*WAI", None),
                     (':TRAC:DATA? 1, 4, "defbuffer1", READ', "1e-9,1e-5,2e-5,2e-9"), (":OUTP OFF", None)],
                    nplc=nplc, timeout_s=2.0)
    t.timeout_s = 2.0
    smu.transport = t
    smu.set_nplc(nplc)
    np.testing.assert_allclose(smu.sweep_voltages_v([0.1, 0.2]), [1e-5, 2e-5])
    t.assert_done()
    assert t.timeout_s == 2.0  # restored
    duration_s = 4 * (3 * nplc / 50 + 1e-3)
    assert t.waited_s[0] - 2.0 < 4 * duration_s  # sized from the sweep, not unbounded


def test_2450_list_sweep_inserts_ramp_points_and_drops_their_readings():
    smu, t = connect_2450([
        (":SOUR:LIST:VOLT 0,0.5,1,0.5,0", None), (":SOUR:SWE:VOLT:LIST 1, 0", None),
        (':TRAC:CLE "defbuffer1"', None), NO_ERROR,
        (":INIT", None), ("*WAI", None),
        (':TRAC:DATA? 1, 5, "defbuffer1", READ', "0,5e-5,1e-4,5e-5,0"),
        (":OUTP OFF", None),
    ])
    np.testing.assert_allclose(smu.sweep_voltages_v([1.0]), [1e-4])
    t.assert_done()


def test_2450_long_list_is_sent_100_values_a_command():
    voltages = np.linspace(0.01, 0.5, 250)
    points = np.concatenate([[0.0], voltages, [0.0]])
    texts = [format(v, ".10g") for v in points]
    smu, t = connect_2450([
        (":SOUR:LIST:VOLT " + ",".join(texts[:100]), None),
        (":SOUR:LIST:VOLT:APP " + ",".join(texts[100:200]), None),
        (":SOUR:LIST:VOLT:APP " + ",".join(texts[200:]), None),
        (":SOUR:SWE:VOLT:LIST 1, 0", None), (':TRAC:CLE "defbuffer1"', None), NO_ERROR,
        (":INIT", None), ("*WAI", None),
        (':TRAC:DATA? 1, 252, "defbuffer1", READ', ",".join(repr(float(v) * 1e-4) for v in points)),
        (":OUTP OFF", None),
    ])
    np.testing.assert_allclose(smu.sweep_voltages_v(voltages), voltages * 1e-4)
    t.assert_done()


def test_2400_list_sweep():
    smu, t = connect_2400([
        (":SOUR:VOLT:MODE LIST", None), (":SOUR:LIST:VOLT 0,0.1,-0.2,0", None), (":TRIG:COUN 4", None),
        (":OUTP ON", None), NO_ERROR,
        (":READ?", "+0.0E+00,+1.0E-05,-2.0E-05,+0.0E+00"),
        (":SOUR:VOLT:MODE FIX", None), (":TRIG:COUN 1", None), NO_ERROR,
        (":OUTP OFF", None),
    ])
    np.testing.assert_allclose(smu.sweep_voltages_v([0.1, -0.2]), [1e-5, -2e-5])
    t.assert_done()


def test_2400_sweep_longer_than_2500_points_runs_in_chunks_that_each_start_and_end_at_rest():
    voltages = np.full(2600, 0.1)
    smu, t = connect_2400()

    def script(values):
        count = len(values)
        texts = [format(v, ".10g") for v in values]
        steps = [(":SOUR:VOLT:MODE LIST", None), (":SOUR:LIST:VOLT " + ",".join(texts[:100]), None)]
        steps += [(":SOUR:LIST:VOLT:APP " + ",".join(texts[i:i + 100]), None) for i in range(100, count, 100)]
        steps += [(f":TRIG:COUN {count}", None), (":OUTP ON", None), NO_ERROR,
                  (":READ?", ",".join(["1e-5"] * count)),
                  (":SOUR:VOLT:MODE FIX", None), (":TRIG:COUN 1", None), NO_ERROR]
        return steps

    # 2498 points + the rest level at both ends, then the remaining 102 the same way
    t.extend(script([0.0] + [0.1] * 2498 + [0.0]) + script([0.0] + [0.1] * 102 + [0.0]) + [(":OUTP OFF", None)])
    current = smu.sweep_voltages_v(voltages)
    assert current.shape == (2600,)
    t.assert_done()


def test_reported_error_carries_code_text_and_command():
    smu, t = connect_2450([(":SENS:CURR:NPLC 5", None), (":SYST:ERR?", '-222,"Data out of range"'),
                           (":SYST:ERR?", '0,"No error"')])
    with pytest.raises(InstrumentReportedError) as info:
        smu.set_nplc(5)
    assert info.value.code == -222 and info.value.text == "Data out of range"
    assert ":SENS:CURR:NPLC 5" in str(info.value) and "scripted://x" in str(info.value)
    t.assert_done()


def test_overflow_reads_nan():
    smu, t = connect_2450([(":READ?", "9.91e37")])
    assert math.isnan(smu.measure_current_a())
    t.assert_done()


def test_garbage_reading_is_a_protocol_error():
    smu, t = connect_2450([(":READ?", "hello")])
    with pytest.raises(ProtocolError, match=r":READ\?"):
        smu.measure_current_a()


def test_2450_in_tsp_mode_is_refused_with_the_fix():
    t = ScriptedTransport([("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,1,1"), ("*LANG?", "TSP")])
    with pytest.raises(ProtocolError, match=r"\*LANG SCPI.*reboot"):
        Keithley2450(t)
    t.assert_done()


@pytest.mark.parametrize("cls, idn", [
    (Keithley2450, "KEITHLEY INSTRUMENTS INC.,MODEL 2400,1,C32"),
    (Keithley2400, "KEITHLEY INSTRUMENTS,MODEL 2450,1,1.7"),
    (Keithley2450, "Agilent Technologies,E5250A,0,B.01.06"),
])
def test_wrong_model_is_refused(cls, idn):
    t = ScriptedTransport([("*IDN?", idn)])
    with pytest.raises(ProtocolError, match="identifies as|is a 2450"):
        cls(t)
    t.assert_done()


@pytest.mark.parametrize("call", [
    lambda smu: smu.set_source_voltage_v(1.5),        # max_voltage_v = 1
    lambda smu: smu.set_source_voltage_v(math.nan),
    lambda smu: smu.set_compliance_current_a(2e-3),   # max_current_a = 1e-3
    lambda smu: smu.set_compliance_current_a(0),
    lambda smu: smu.set_nplc(0.001),
    lambda smu: smu.set_nplc(11),
    lambda smu: smu.set_current_range_a(5),
    lambda smu: smu.sweep_voltages_v([0.1, 2.0]),
    lambda smu: smu.sweep_voltages_v([]),
    lambda smu: smu.sweep_voltages_v([[0.1], [0.2]]),
])
def test_invalid_values_raise_and_send_nothing(call):
    smu, t = connect_2450()
    sent = len(t.sent)
    with pytest.raises(LimitError):
        call(smu)
    assert len(t.sent) == sent


def test_power_limit_uses_the_smallest_resistance():
    guard = SafetyGuard(Limits(max_voltage_v=10, max_power_w=0.01), min_resistance_ohm=100)
    smu, t = connect_2450(guard=guard)
    with pytest.raises(LimitError, match="max_power_w"):
        smu.set_source_voltage_v(1.1)   # 1.21 V^2 / 100 ohm = 12 mW
    t.assert_done()
    assert len(t.sent) == 5   # the connect sequence only


@pytest.mark.parametrize("connect, query", [(connect_2450, ":SOUR:VOLT:ILIM?"), (connect_2400, ":SENS:CURR:PROT?")])
def test_a_compliance_above_the_limit_found_on_connect_is_refused_before_sourcing(connect, query):
    # the connect sequence reads 105 uA; this lab allows 10 uA: nothing may switch the output on
    guard = SafetyGuard(Limits(max_current_a=1e-5))
    smu, t = connect(guard=guard)
    assert query in t.sent
    sent = len(t.sent)
    with pytest.raises(LimitError, match="max_current_a"):
        smu.output_on()
    with pytest.raises(LimitError, match="max_current_a"):
        smu.sweep_voltages_v([0.1, 0.2])
    assert len(t.sent) == sent
    command = ":SOUR:VOLT:ILIM 1e-05" if connect is connect_2450 else ":SENS:CURR:PROT 1e-05"
    t.extend([(command, None), NO_ERROR, (":OUTP ON", None), NO_ERROR])
    smu.set_compliance_current_a(1e-5)
    smu.output_on()
    t.assert_done()
