"""The simulated Keithley 2450 and 2400: protocol replays against a resistor of known conductance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim._keithley import SimKeithley2400, SimKeithley2450
from tests.sim.test_scpi import replay


class Resistor:
    """A load of fixed conductance; noise (relative, 1 NPLC) from a seeded generator."""

    def __init__(self, conductance_s: float, *, relative_noise: float = 0.0, seed: int = 0) -> None:
        self.conductance = conductance_s
        self.relative_noise = relative_noise
        self.rng = np.random.default_rng(seed)
        self.time = 0.0

    def conductance_s(self) -> float:
        return self.conductance

    def current_a(self, source_v, integration_s, step_s):
        return self.conductance * np.asarray(source_v)

    def read_noise(self, current_a, range_a, nplc):
        std = self.relative_noise * range_a / np.sqrt(nplc)
        return current_a + std * self.rng.standard_normal(np.shape(current_a))

    def advance_time(self, duration_s: float) -> None:
        self.time += duration_s

    @property
    def time_s(self) -> float:
        return self.time


def test_2450_identifies_and_reports_its_language() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    replay(smu, [
        (b"*IDN?\n", b"KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b\n"),
        (b"*LANG?\n", b"SCPI\n"),
        (b"*LANG TSP\n", b""),
        (b"*LANG?\n", b"SCPI\n"),  # the new language needs a power cycle
    ])
    smu.power_cycle()
    replay(smu, [
        (b"*LANG?\n", b"TSP\n"),
        (b":SOUR:VOLT 1\n", b""),
        (b"SYST:ERR?\n", b""),  # not SCPI any more: refused too
        (b"*IDN?\n", b"KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b\n"),
    ])
    assert smu.errors == [-113, -113]


def test_2450_configure_measure_and_compliance() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    replay(smu, [
        (b'*RST;:SOUR:FUNC VOLT;:SOUR:VOLT:RANG 2;:SOUR:VOLT 0.5;:SOUR:VOLT:ILIM 1e-3;'
         b':SENS:FUNC "CURR";:SENS:CURR:NPLC 0.1;:SENS:CURR:RANG:AUTO ON;:OUTP ON\n', b""),
        (b":SOUR:VOLT?;:SOUR:VOLT:RANG?;:SOUR:VOLT:ILIM?;:SENS:FUNC?;:SENS:CURR:NPLC?;:OUTP?\n",
         b'5.000000000E-01;2.000000000E+00;1.000000000E-03;"CURR:DC";1.000000000E-01;1\n'),
        (b":READ?\n", b"5.000000000E-05\n"),
        (b":SOUR:VOLT:ILIM:TRIP?\n", b"0\n"),
        (b":SOUR:VOLT 1.5;:MEAS:CURR?;:SOUR:VOLT:ILIM:TRIP?\n", b"1.500000000E-04;0\n"),
        # 20 V into 10 kohm would be 2 mA: the source clamps at the 1 mA limit.
        (b":SOUR:VOLT:RANG 20;:SOUR:VOLT 20;:READ?;:SOUR:VOLT:ILIM:TRIP?\n", b"1.000000000E-03;1\n"),
        (b':READ? "defbuffer1",SOUR,READ\n', b"2.000000000E+01,1.000000000E-03\n"),
        (b':MEAS:VOLT?\n', b"1.000000000E+01\n"),  # the terminal voltage in compliance
        # A fixed range below the current overflows.
        (b':SOUR:VOLT 1;:SENS:FUNC "CURR";:SENS:CURR:RANG 10e-6;:SENS:CURR:RANG?;:READ?\n',
         b"1.000000000E-05;9.910000000E+37\n"),
        (b":OUTP OFF;:SENS:CURR:RANG:AUTO 1;:READ?\n", b"0.000000000E+00\n"),
        (b"SYST:ERR?\n", b'0,"No error"\n'),
    ])


def test_2450_source_list_sweep_into_the_buffer() -> None:
    load = Resistor(2e-4)
    smu = SimKeithley2450(load)
    values = ",".join(f"{v:g}" for v in np.linspace(-0.5, 0.5, 100)).encode()
    replay(smu, [
        (b":SOUR:LIST:VOLT " + values + b"\n", b""),
        (b":SOUR:LIST:VOLT:APP 0.7,0.8\n", b""),
        (b":SOUR:LIST:VOLT:POIN?\n", b"102\n"),
        (b":SOUR:VOLT:ILIM 1e-3;:SENS:CURR:NPLC 0.01;:SOUR:SWE:VOLT:LIST 100,0\n", b""),
        (b":TRAC:CLE;:INIT;*WAI;:TRAC:ACT?;*OPC?\n", b"3;1\n"),
        (b':TRAC:DATA? 1,3,"defbuffer1",SOUR,READ\n',
         b"5.000000000E-01,1.000000000E-04,7.000000000E-01,1.400000000E-04,"
         b"8.000000000E-01,1.600000000E-04\n"),
        (b":OUTP?\n", b"1\n"),  # the sweep turned the output on
        (b':TRAC:DATA? 2,4,"defbuffer1",READ\n', b""),
        (b":SOUR:LIST:VOLT " + b",".join([b"1"] * 101) + b"\n", b""),
        (b":SOUR:SWE:VOLT:LIST 200,0\n", b""),
        (b':TRAC:DATA? 1,1,"nobuffer",READ\n', b""),
        (b"SYST:ERR?;:SYST:ERR?;:SYST:ERR?;:SYST:ERR?\n",
         b'-222,"Data out of range";-223,"Too much data";-221,"Settings conflict";'
         b'-224,"Illegal parameter value"\n'),
    ])
    assert load.time == pytest.approx(3 * 0.01 / 60)  # three points at 0.01 NPLC
    assert smu.source_list[-1] == 0.8


def test_2450_time_and_noise_follow_nplc() -> None:
    load = Resistor(1e-4, relative_noise=1e-3, seed=1)
    smu = SimKeithley2450(load)
    smu.feed(b":SOUR:VOLT 1;:SOUR:VOLT:ILIM 1e-3;:SENS:CURR:RANG 1e-3;:OUTP ON\n")
    spreads = {}
    for nplc in (0.01, 10):
        smu.feed(f":SENS:CURR:NPLC {nplc}\n".encode())
        before = load.time
        readings = [float(smu.feed(b":READ?\n")) for _ in range(200)]
        assert load.time - before == pytest.approx(200 * nplc / 60)
        spreads[nplc] = np.std(readings)
    assert spreads[0.01] / spreads[10] == pytest.approx(np.sqrt(1000), rel=0.25)


def test_2450_out_of_range_settings_are_refused() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    replay(smu, [
        (b":SOUR:VOLT:ILIM 2\n", b""),
        (b":SENS:CURR:NPLC 0.001\n", b""),
        (b":SOUR:VOLT 300\n", b""),
        (b":SOUR:FUNC CURR\n", b""),
        (b':SENS:FUNC "TEMP"\n', b""),
        (b":SOUR:VOLT:RANG 0.2;:SOUR:VOLT 1\n", b""),
        (b":SOUR:VOLT:ILIM?;:SENS:CURR:NPLC?;:SOUR:VOLT?;:SOUR:FUNC?\n",
         b"1.050000000E-04;1.000000000E+00;0.000000000E+00;VOLT\n"),
    ])
    assert smu.errors == [-222, -222, -222, -224, -224, -222]


def test_2400_elements_compliance_and_lists() -> None:
    load = Resistor(1e-3)
    smu = SimKeithley2400(load)
    replay(smu, [
        (b"*IDN?\n", b"KEITHLEY INSTRUMENTS INC.,MODEL 2400,4105270,C32   Oct  4 2010 14:20:11/A02  /S/K\n"),
        (b":FORM:ELEM?\n", b"VOLT,CURR,RES,TIME,STAT\n"),
        (b":SOUR:FUNC VOLT;:SOUR:VOLT 0.1;:SENS:FUNC \"CURR\";:SENS:CURR:PROT 0.05;"
         b":SENS:CURR:NPLC 0.01;:FORM:ELEM STAT,CURR,VOLT;:OUTP ON\n", b""),
        (b":FORM:ELEM?\n", b"VOLT,CURR,STAT\n"),  # the fixed order, whatever the request
        (b":READ?\n", b"+1.000000E-01,+1.000000E-04,+0.000000E+00\n"),
        # 10 V into 1 kohm would be 10 mA: compliance at 5 mA, status bit 3.
        (b":SENS:CURR:PROT 5e-3;:SOUR:VOLT 10;:READ?;:SENS:CURR:PROT:TRIP?\n",
         b"+5.000000E+00,+5.000000E-03,+8.000000E+00;1\n"),
        (b":SENS:CURR:RANG 1e-4;:SOUR:VOLT 1;:MEAS:CURR?\n",
         b"+1.000000E+00,+9.910000E+37,+1.000000E+00\n"),  # overflow, status bit 0
        (b":SENS:CURR:RANG:AUTO ON;:FORM:ELEM CURR\n", b""),
        (b":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,0.2,0.3;:TRIG:COUN 5;:READ?\n",
         b"+1.000000E-04,+2.000000E-04,+3.000000E-04,+1.000000E-04,+2.000000E-04\n"),
        (b":INIT;:FETC?\n", b"+1.000000E-04,+2.000000E-04,+3.000000E-04,+1.000000E-04,+2.000000E-04\n"),
        (b":FORM:ELEM TIME;:TRIG:COUN 1;:SOUR:VOLT:MODE FIX;:SYST:TIME:RES;:READ?\n",
         b"+1.666667E-04\n"),
        (b":TRIG:COUN 2501\n", b""),
        (b":SOUR:VOLT:MODE SWE\n", b""),
        (b"SYST:ERR?;:SYST:ERR?;:SYST:ERR?\n",
         b'-222,"Data out of range";-224,"Illegal parameter value";0,"No error"\n'),
    ])


def test_2400_list_capacity() -> None:
    smu = SimKeithley2400(Resistor(1e-3))
    chunk = b",".join([b"0.1"] * 100)
    smu.feed(b":SOUR:LIST:VOLT " + chunk + b"\n")
    for _ in range(24):
        smu.feed(b":SOUR:LIST:VOLT:APP " + chunk + b"\n")
    replay(smu, [
        (b":SOUR:LIST:VOLT:POIN?\n", b"2500\n"),
        (b":SOUR:LIST:VOLT:APP 0.1\n", b""),
        (b":SOUR:LIST:VOLT:POIN?;:SYST:ERR?\n", b'2500;-223,"Too much data"\n'),
    ])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([":SOUR", ":VOLT", ":LEV", ":ILIM", ":SENS", ":CURR", ":NPLC", ":RANG",
                                 ":AUTO", ":OUTP", ":READ", ":TRAC", ":DATA", ":LIST", ":SWE", ":INIT",
                                 ":FORM", ":ELEM", ":TRIG", ":COUN", ":MEAS", "?", " ", "1", "0.5",
                                 ",", ";", '"defbuffer1"', "ON", "LIST", "1e9", "*RST", "*LANG"]),
                max_size=12),
       st.sampled_from([SimKeithley2450, SimKeithley2400]))
def test_no_command_crashes_either_smu(tokens: list[str], model) -> None:
    smu = model(Resistor(1e-4))
    reply = smu.feed("".join(tokens).encode() + b"\n")
    assert reply == b"" or reply.endswith(b"\n")
    assert smu.feed(b"*CLS;*IDN?\n").startswith(b"KEITHLEY")
