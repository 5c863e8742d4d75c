"""Third-party drivers against the simulated SMUs: the exact command sequences QCoDeS's Keithley
2450 driver (``snapshot(update=True)``, a linear sweep) and PyMeasure's Keithley 2450 and 2400
drivers (start-up, measure, buffer, every property getter) send, replayed byte for byte.

The sequences were captured from QCoDeS 0.58 and PyMeasure 0.16 talking to ``crossbar sim
serve`` over pyvisa-py; these tests do not import those packages. Each query's reply must parse
the way the driver parses it, and no error may be queued, except where a real instrument queues
one too (noted where it happens).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sim._keithley import OVERFLOW, SimKeithley2400, SimKeithley2450
from tests.sim.test_keithley import Resistor

# What a driver does with a reply: None for a write (no reply), else a parser that raises on a
# reply the driver could not use.


def flag(text: str) -> bool:
    assert text in ("0", "1"), text
    return text == "1"


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        assert text in choices, text
        return text
    return parse


def floats(count: int) -> Callable[[str], list[float]]:
    def parse(text: str) -> list[float]:
        values = [float(part) for part in text.split(",")]
        assert len(values) == count, text
        return values
    return parse


def run(smu, sequence: list[tuple[str, Callable[[str], object] | None]]) -> list[object]:
    """Send each command as the driver does (one line each); parse every reply."""
    parsed = []
    for command, parse in sequence:
        reply = smu.feed(command.encode() + b"\n")
        if parse is None:
            assert reply == b"", f"{command!r} answered {reply!r}"
            continue
        assert reply.endswith(b"\n") and reply.count(b"\n") == 1, f"{command!r}: {reply!r}"
        parsed.append(parse(reply[:-1].decode()))
    assert smu.errors == [], f"errors queued: {smu.errors}"
    return parsed


IDN_2450 = one_of("KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b")

# QCoDeS Keithley2450: connect, then snapshot(update=True). Every source and sense submodule is
# read, the current source and the resistance and voltage sense included.
QCODES_2450_SNAPSHOT = [
    ("*LANG?", one_of("SCPI")),
    ("*IDN?", IDN_2450),
    (":SOUR:current:RANGe?", float),
    (":SOURce:current:RANGe:AUTO?", flag),
    ("SOUR:current:VLIM?", float),
    (":SOUR:current:VLIM:TRIPped?", int),
    (":SOURce:current:DELay?", float),
    (":SOURce:current:DELay:AUTO?", flag),
    (":SOURce:current:READ:BACK?", flag),
    (":SOUR:voltage:RANGe?", float),
    (":SOURce:voltage:RANGe:AUTO?", flag),
    ("SOUR:voltage:ILIM?", float),
    (":SOUR:voltage:ILIM:TRIPped?", int),
    (":SOURce:voltage:DELay?", float),
    (":SOURce:voltage:DELay:AUTO?", flag),
    (":SOURce:voltage:READ:BACK?", flag),
    *[item for function in ("current", "resistance", "voltage") for item in [
        (f":SENSe:{function}:RSENse?", flag),
        (f":SENSe:{function}:RANGe?", float),
        (f":SENSe:{function}:RANGe:AUTO?", flag),
        (f":SENSe:{function}:NPLCycles?", float),
        (f":SENSe:{function}:AZERo?", flag),
        (":SENSe:COUNt?", int),
    ]],
    (":TRACe:POINts? 'defbuffer1'", int),
    (":TRACe:ACTual? 'defbuffer1'", int),
    ("*IDN?", IDN_2450),
    (":SOUR:FUNC?", one_of("VOLT", "CURR")),
    (":SENS:FUNC?", one_of('"CURR:DC"', '"VOLT:DC"', '"RES"')),
    ("ROUTe:TERMinals?", one_of("FRON", "REAR")),
    (":OUTP?", flag),
    (":SYSTem:LFRequency?", int),
]

# QCoDeS Keithley2450: sense.function("current"), source.function("voltage"),
# source.sweep_setup(0, 1, 5, delay=0.01), output_enabled(True), sense.sweep(), then a reading.
QCODES_2450_SWEEP = [
    (':SENS:FUNC "CURR:DC"', None),
    (":SENS:FUNC?", one_of('"CURR:DC"')),
    (":SOUR:FUNC VOLT", None),
    (":OUTP 1", None),
    (":SOURce:SWEep:voltage:LINear 0,1,5,0.01,1,AUTO,ON,OFF,'defbuffer1'", None),
    (":INITiate", None),
    ("*WAI", None),
    (":TRACe:DATA? 1, 5, 'defbuffer1'", floats(5)),
    (":TRACe:CLEar 'defbuffer1'", None),
    ("SOUR:voltage 0.5", None),
    (":OUTP?", flag),
    (":MEASure? 'defbuffer1'", float),
]


def test_qcodes_2450_snapshot_is_answered_in_full() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    replies = run(smu, QCODES_2450_SNAPSHOT)
    assert replies[2:5] == [1e-8, True, 21.0]  # current source: range, auto range, VLIM default
    assert replies[-3:] == ["FRON", False, 60]
    # QCoDeS reads the user delay of an unset user number as ``DELay:USERNone?``: not a header
    # of the instrument, so a real 2450 queues -113 as the simulator does.
    smu.feed(b":SOURce:voltage:DELay:USERNone?\n:SENSe:current:DELay:USER3?\n")
    assert smu.errors == [-113]


def test_qcodes_2450_linear_sweep() -> None:
    load = Resistor(1e-4)
    smu = SimKeithley2450(load)
    currents, _ = run(smu, QCODES_2450_SWEEP)[1:3]
    assert currents == pytest.approx(1e-4 * np.linspace(0, 1, 5))
    assert load.time == pytest.approx(5 * (1 / 60 + 0.01) + 1 / 60)  # 1 NPLC + 10 ms per point


def test_2450_log_and_step_sweeps_follow_the_manual() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    run(smu, [
        (":SOUR:SWE:VOLT:LOG 0.01,10,4,0,1,BEST,OFF,ON", None),  # dual: there and back
        (":INIT;*WAI;:TRAC:ACT?", int),
    ])
    levels = run(smu, [(':TRAC:DATA? 1,8,"defbuffer1",SOUR', floats(8))])[0]
    assert levels == pytest.approx([0.01, 0.1, 1, 10, 10, 1, 0.1, 0.01])
    run(smu, [
        (":TRAC:CLE;:SOUR:SWE:VOLT:LOG -2,-0.2,3,0,1,BEST,OFF,OFF,\"defbuffer1\",-3", None),
        (":INIT", None),
    ])
    # Evenly spaced in log|V - asymptote|: 1 V to 2.8 V above the -3 V asymptote.
    levels = run(smu, [(':TRAC:DATA? 1,3,"defbuffer1",SOUR', floats(3))])[0]
    assert levels == pytest.approx(-3 + np.geomspace(1, 2.8, 3))
    run(smu, [(":TRAC:CLE;:SOUR:SWE:VOLT:LIN:STEP 1,0,0.25,0,2;:INIT;:TRAC:ACT?", one_of("10"))])
    levels = run(smu, [(':TRAC:DATA? 1,10,"defbuffer1",SOUR', floats(10))])[0]
    assert levels == pytest.approx([1, 0.75, 0.5, 0.25, 0] * 2)
    smu.feed(b":SOUR:SWE:VOLT:LOG 0,1,5\n:SOUR:SWE:VOLT:LOG -1,1,5\n"
             b":SOUR:SWE:VOLT:LIN 0,1,1\n:SOUR:SWE:VOLT:LIN:STEP 0,1,0\n"
             b":SOUR:SWE:VOLT:LIN 0,1,5,20e-6\n")
    assert smu.errors == [-222] * 5


PYMEASURE_2450 = [
    # reset(), apply_voltage(compliance_current=1e-3), measure_current(nplc=0.1, current=1e-3)
    ("*RST;:stat:pres;:*CLS;", None),
    (":SOUR:FUNC VOLT", None),
    (":SOUR:FUNC?", one_of("VOLT")),
    (":SOUR:VOLT:RANG:AUTO 1", None),
    (":SOUR:VOLT:ILIM 0.001", None),
    ("SYST:ERR?", one_of('0,"No error"')),
    (":SENS:FUNC 'CURR';:SENS:CURR:NPLC 0.100000;", None),
    (":SENS:CURR:RANG:AUTO 1;", None),
    ("SYST:ERR?", one_of('0,"No error"')),
    # enable_source(), source_voltage = 0.5, current, ramp_to_voltage(1, steps=3), current
    ("OUTPUT ON", None),
    (":SOUR:VOLT:LEV 0.5", None),
    (":READ?", float),
    (":SOUR:VOLT?", float),
    (":SOUR:VOLT:LEV 0.75", None),
    (":SOUR:VOLT:LEV 1", None),
    (":READ?", float),
    ("OUTPUT OFF", None),
    # every property getter
    (":TRAC:POIN?", int),
    (":SOUR:VOLT:ILIM?", float),
    (":SOUR:CURR:VLIM?", float),
    (":SENS:CURR:AVER:COUNT?", int),
    (":SENS:CURR:AVER?", flag),
    (":SENS:CURR:AVER:TCON?", one_of("REP", "MOV")),
    (":SENS:CURR:NPLC?", float),
    (":OUTP:CURR:SMOD?", one_of("NORM", "HIMP", "ZERO", "GUAR")),
    (":SENS:CURR:RANG?", float),
    (":TRACe:STATistics:MAXimum?", float),
    (":TRACe:STATistics:AVERage?", float),
    (":TRACe:STATistics:MINimum?", float),
    (":TRACe:STATistics:STDDev?", float),
    (":SENS:RES:NPLC?", float),
    (":SENS:RES:RANG?", float),
    (":SOUR:CURR?", float),
    (":SOUR:CURR:DEL?", float),
    (":SOUR:CURR:DEL:AUTO?", flag),
    (":SOUR:CURR:RANG?", float),
    ("OUTPUT?", flag),
    (":SOUR:VOLT:DEL?", float),
    (":SOUR:VOLT:DEL:AUTO?", flag),
    (":SOUR:VOLT:RANG?", float),
    ("*STB?", int),
    (":SENS:VOLT:AVER:COUNT?", int),
    (":SENS:VOLT:AVER:TCON?", one_of("REP", "MOV")),
    (":SENS:VOLT:NPLC?", float),
    (":OUTP:VOLT:SMOD?", one_of("NORM", "HIMP", "ZERO", "GUAR")),
    (":SENS:VOLT:RANG?", float),
    (":SENS:RES:RSENSE?", flag),
    # shutdown()
    (":ABOR", None),
]


def test_pymeasure_2450_startup_measure_and_properties() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    replies = run(smu, PYMEASURE_2450)
    assert replies[3] == pytest.approx(5e-5)  # 0.5 V on 10 kohm
    assert replies[5] == pytest.approx(1e-4)  # 1 V after the ramp
    # maximum, mean, minimum and standard deviation of the two readings in defbuffer1
    assert replies[15:19] == pytest.approx([1e-4, 7.5e-5, 5e-5, np.std([5e-5, 1e-4], ddof=1)])
    # PyMeasure's 2450 also reads ``buffer_data`` as a bare ``:TRAC:DATA?`` (a 2400 command) and
    # ``options`` as ``*OPT?``: the 2450 has neither, and queues -109 and -113.
    smu.feed(b":TRAC:DATA?\n*OPT?\n")
    assert smu.errors == [-109, -113]


IDN_2400 = one_of("KEITHLEY INSTRUMENTS INC.,MODEL 2400,4105270,C32   Oct  4 2010 14:20:11/A02  /S/K")

PYMEASURE_2400 = [
    # connect, reset(), apply_voltage(compliance_current=1e-3), measure_current(nplc=0.1, ...)
    (":FORMAT:ELEMENTS VOLTAGE, CURRENT, RESISTANCE, TIME, STATUS", None),
    ("*RST", None),
    (":SOURCE:FUNCTION VOLT", None),
    (":SOURCE:FUNCTION?", one_of("VOLT")),
    (":SOUR:VOLT:RANG:AUTO 1", None),
    (":SENSE:CURRENT:PROTECTION 0.001", None),
    ("SYST:ERR?", one_of('0,"No error"')),
    (":SENS:FUNC 'CURR';:SENS:CURR:NPLC 0.100000;", None),
    (":SENS:CURR:RANG:AUTO 1;", None),
    # enable_source(), source_voltage = 0.5, current
    ("OUTPUT 1", None),
    (":SOURCE:VOLTAGE 0.5", None),
    (":MEASURE:CURRENT?", floats(5)),
    # config_buffer(points=5), start_buffer(), wait_for_buffer(), means, standard_devs
    (":STAT:PRES;*CLS;*SRE 1;:STAT:MEAS:ENAB 512;", None),
    (":TRAC:CLEAR;", None),
    (":TRAC:POIN 5", None),
    (":ARM:COUNT?", int),
    (":TRIGGER:COUNT 5", None),
    (":TRIGGER:DELAY 0", None),
    (":TRAC:FEED SENSE;:TRAC:FEED:CONT NEXT;", None),
    (":INIT", None),
    ("*STB?", int),
    (":CALCULATE3:FORMAT MEAN;:CALCULATE3:DATA?;", floats(3)),
    (":CALCULATE3:FORMAT SDEVIATION;:CALCULATE3:DATA?;", floats(3)),
    (":FORM:DATA ASCII", None),
    (":TRAC:DATA?", floats(25)),
    ("OUTPUT 0", None),
    # every property getter
    (":ARM:ILINE?", int), (":ARM:OUTPUT?", one_of("NONE", "TENT", "TEX")), (":ARM:OLINE?", int),
    (":ARM:SOURCE?", one_of("IMM")), (":ARM:TIMER?", float), (":SOURCE:CLEAR:AUTO?", flag),
    (":SYSTEM:AZERO:STATE?", flag), (":SENSE:CURRENT:PROTECTION?", float),
    (":SENSE:VOLTAGE:PROTECTION?", float), (":SENSE:CURRENT:NPLCYCLES?", float),
    (":SENSE:CURRENT:RANGE?", float), (":SENSE:CURRENT:RANGE:AUTO?", flag),
    (":DISPLAY:ENABLE?", flag), (":SENSE:AVERAGE:COUNT?", int), (":SENSE:AVERAGE?", flag),
    (":SENS:AVER:TCON?", one_of("REP", "MOV")), (":ROUTE:TERMINALS?", one_of("FRON", "REAR")),
    ("*IDN?", IDN_2400), (":SYSTEM:LFREQUENCY?", int), (":SYSTEM:LFREQUENCY:AUTO?", flag),
    (":CALCULATE3:FORMAT MAX;:CALCULATE3:DATA?;", floats(3)),
    (":CALCULATE3:FORMAT MIN;:CALCULATE3:DATA?;", floats(3)),
    (":OUTPUT:SMODE?", one_of("NORM", "HIMP", "ZERO", "GUAR")),
    (":SENSE:AVERAGE:TCONTROL?", one_of("REP", "MOV")), (":MEASURE:RESISTANCE?", floats(25)),
    (":SENSE:RESISTANCE:MODE?", one_of("MAN", "AUTO")), (":SENSE:RESISTANCE:NPLCYCLES?", float),
    (":SENSE:RESISTANCE:RANGE?", float), (":SENSE:RESISTANCE:RANGE:AUTO?", flag),
    (":SOURCE:CURRENT?", float), (":SOURCE:CURRENT:RANGE?", float),
    (":SOURCE:CURRENT:RANGE:AUTO?", flag), (":SOURCE:DELAY?", float), (":SOUR:DEL:AUTO?", flag),
    ("OUTPUT?", flag), (":SOURCE:VOLTAGE?", float), (":SOURCE:VOLTAGE:RANGE?", float),
    (":SOURCE:VOLTAGE:RANGE:AUTO?", flag), (":TRIGGER:COUNT?", int), (":TRIGGER:DELAY?", float),
    (":TRIGGER:ILINE?", int), (":TRIGGER:OUTPUT?", one_of("NONE", "SOUR", "DEL", "SENS")),
    (":TRIGGER:OLINE?", int), (":TRIGGER:SOURCE?", one_of("IMM")),
    (":MEASURE:VOLTAGE?", floats(25)), (":SENSE:VOLTAGE:NPLCYCLES?", float),
    (":SENSE:VOLTAGE:RANGE?", float), (":SENSE:VOLTAGE:RANGE:AUTO?", flag),
    (":SYSTEM:RSENSE?", flag),
    # shutdown()
    (":ABOR", None),
]


def test_pymeasure_2400_startup_measure_buffer_and_properties() -> None:
    smu = SimKeithley2400(Resistor(1e-4))
    replies = run(smu, PYMEASURE_2400)
    volts, amps, ohms, _, status = replies[2]
    assert (volts, amps, ohms, status) == pytest.approx((0.5, 5e-5, OVERFLOW, 0))
    assert replies[3] == 1  # arm count
    assert replies[4] & 65 == 65  # buffer full: measurement summary and request service
    assert replies[5] == pytest.approx([0.5, 5e-5, OVERFLOW])  # means of V, I, R
    assert replies[6] == pytest.approx([0, 0, 0], abs=1e-12)  # a noise-free resistor
    assert np.reshape(replies[7], (5, 5))[:, 1] == pytest.approx([5e-5] * 5)
    smu.feed(b":TRIG:COUN 2500;:ARM:COUN 2\n")  # at most 2,500 points per :READ?
    assert smu.errors == [-221]
