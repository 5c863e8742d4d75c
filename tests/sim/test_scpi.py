"""The SCPI core and the byte-level framing: exact replays on a small declared instrument."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim._scpi import Boolean, Choice, LineDevice, Number, ScpiDevice, String, scpi


def replay(device: LineDevice, exchanges: list[tuple[bytes, bytes]]) -> None:
    """Feed each message and require exactly the expected reply bytes."""
    for sent, expected in exchanges:
        assert device.feed(sent) == expected, f"after sending {sent!r}"


class Toy(ScpiDevice):
    """A tiny instrument declared the way the simulated instruments are."""

    idn = "ACME,TOY,42,1.0"

    def reset(self) -> None:
        self.volts = 0.0
        self.limit_a = 1e-4
        self.on = False
        self.mode = "FIX"
        self.values: tuple[float, ...] = ()
        self.label = ""

    @scpi(":SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", Number(-10, 10, unit="V"))
    def _volts(self, volts: float) -> None:
        self.volts = volts

    @scpi(":SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volts_query(self) -> str:
        return f"{self.volts:g}"

    @scpi(":SOURce:VOLTage:ILIMit", Number(1e-9, 1, unit="A"))
    def _limit(self, amps: float) -> None:
        self.limit_a = amps

    @scpi(":SOURce:VOLTage:ILIMit?")
    def _limit_query(self) -> str:
        return f"{self.limit_a:g}"

    @scpi(":OUTPut[:STATe]", Boolean())
    def _output(self, on: bool) -> None:
        self.on = on

    @scpi(":OUTPut[:STATe]?")
    def _output_query(self) -> str:
        return "1" if self.on else "0"

    @scpi(":SOURce:VOLTage:MODE", Choice("FIXed", "LIST"))
    def _mode(self, mode: str) -> None:
        self.mode = mode

    @scpi(":SOURce:LIST:VOLTage", Number(-10, 10), repeat_last=3)
    def _list(self, *values: float) -> None:
        self.values = values

    @scpi(":DISPlay:TEXT", String())
    def _text(self, label: str) -> None:
        self.label = label


@pytest.fixture
def toy() -> Toy:
    return Toy()


def test_identification_and_mnemonic_forms(toy: Toy) -> None:
    replay(toy, [
        (b"*IDN?\n", b"ACME,TOY,42,1.0\n"),
        (b":SOUR:VOLT 1.5\n", b""),
        (b":source:voltage:level?\n", b"1.5\n"),
        (b"SOURce:VOLTage:LEVel:IMMediate:AMPLitude 2\n", b""),
        (b"sour:volt:ampl?\n", b"2\n"),
        (b":SOUR1:VOLT 3\n", b""),
        (b":SOUR:VOLT?\n", b"3\n"),
        (b":SOUR:VOLT 250mV\r\n", b""),
        (b":SOUR:VOLT?\n", b"0.25\n"),
        (b"SYST:ERR?\n", b'0,"No error"\n'),
    ])


def test_compound_lines_follow_the_header_path(toy: Toy) -> None:
    replay(toy, [
        (b":SOUR:VOLT:LEV 1;ILIM 1e-3;:OUTP ON;*IDN?;:OUTP?;:SOUR:VOLT:ILIM?\n",
         b"ACME,TOY,42,1.0;1;0.001\n"),
        (b"*RST;:stat:pres;:*CLS;\n", b""),
        (b";;:OUTP?;;\n", b"0\n"),
        (b":SOUR:VOLT 1;ILIM?\n", b""),  # the path is SOUR: this is :SOUR:ILIM?
        (b":OUTP?;OUTP?;:SOUR:VOLT?;VOLT?\n", b"0;0;1;1\n"),  # root leaf: the path stays root
        (b"SYST:ERR?;:SYST:ERR?\n", b'-113,"Undefined header";0,"No error"\n'),
    ])


@pytest.mark.parametrize(("command", "code", "text"), [
    (b"BOGUS 1", -113, "Undefined header"),
    (b":SOUR:VOLT:LEVEL:FOO 1", -113, "Undefined header"),
    (b":SOUR:VOLT 11", -222, "Data out of range"),
    (b":SOUR:VOLT abc", -104, "Data type error"),
    (b":SOUR:VOLT 1mA", -131, "Invalid suffix"),
    (b":SOUR:VOLT 1,2", -108, "Parameter not allowed"),
    (b":SOUR:VOLT", -109, "Missing parameter"),
    (b":SOUR:VOLT:MODE SWEEP", -224, "Illegal parameter value"),
    (b":OUTP MAYBE", -224, "Illegal parameter value"),
    (b":SOUR:LIST:VOLT 1,2,3,4", -223, "Too much data"),
    (b":SOUR:VOLT 1,,2", -102, "Syntax error"),
    (b":SOUR::VOLT 1", -102, "Syntax error"),
    (b':DISP:TEXT "unterminated', -102, "Syntax error"),
    (b":SOURCEVOLTAGELEVEL 1", -112, "Program mnemonic too long"),
    (b":SOUR:VOLT \xb51", -101, "Invalid character"),
    (b":SOUR:VOLT 1\x07", -101, "Invalid character"),
    # Numbers beyond the float range or with absurd exponents never reach the handler.
    (b":OUTP 1e999", -222, "Data out of range"),
    (b":OUTP -1E999", -222, "Data out of range"),
    (b":SOUR:VOLT 1e999", -222, "Data out of range"),
    (b":SOUR:VOLT -1e999V", -222, "Data out of range"),
    (b":OUTP 1e32001", -123, "Exponent too large"),
    (b":SOUR:VOLT 1e-99999", -123, "Exponent too large"),
    (b":OUTP NaN", -224, "Illegal parameter value"),
    (b":SOUR:VOLT NaN", -104, "Data type error"),
    (b":SOUR:VOLT INF", -104, "Data type error"),
])
def test_bad_commands_queue_their_error_and_change_nothing(toy: Toy, command: bytes, code: int,
                                                           text: str) -> None:
    replay(toy, [(b":SOUR:VOLT 2;:OUTP ON\n", b"")])
    replay(toy, [
        (command + b";:OUTP OFF\n", b""),  # the rest of a failed line is discarded
        (b":SOUR:VOLT?;:OUTP?\n", b"2;1\n"),
        (b"SYST:ERR:COUN?\n", b"1\n"),
        (b"SYST:ERR?\n", f'{code},"{text}"\n'.encode()),
        (b"SYST:ERR?\n", b'0,"No error"\n'),
    ])


def test_status_bytes(toy: Toy) -> None:
    replay(toy, [
        (b"*ESR?;*STB?\n", b"0;0\n"),
        (b"BOGUS\n", b""),
        (b":SOUR:VOLT 99\n", b""),
        (b"*STB?\n", b"4\n"),  # EAV: the error queue holds something
        (b"*ESE 48;*ESE?;*STB?\n", b"48;36\n"),  # ESB once enabled
        (b"*SRE 32;*STB?\n", b"100\n"),  # MSS follows an enabled summary bit
        (b"*ESR?\n", b"48\n"),  # command error (32) and execution error (16)
        (b"*ESR?\n", b"0\n"),
        (b"*OPC;*ESR?;*OPC?;*WAI\n", b"1;1\n"),
        (b"*CLS;*STB?;SYST:ERR?\n", b'0;0,"No error"\n'),
    ])


def test_error_queue_overflow_keeps_the_oldest_and_marks_it(toy: Toy) -> None:
    toy.feed(b"BOGUS\n" * (toy.error_queue_size + 5))
    assert toy.errors == [-113] * (toy.error_queue_size - 1) + [-350]


def test_partial_lines_are_buffered(toy: Toy) -> None:
    assert toy.feed(b"*ID") == b""
    assert toy.feed(b"N?\n:SOUR:VO") == b"ACME,TOY,42,1.0\n"
    assert toy.feed(b"LT 4;:SOUR:VOLT?\n*IDN?\n") == b"4\nACME,TOY,42,1.0\n"


def test_over_long_lines_are_discarded_and_reported(toy: Toy) -> None:
    replay(toy, [
        (b":SOUR:VOLT 1" + b"0" * toy.max_line_bytes, b""),
        (b"1\n*IDN?\n", b"ACME,TOY,42,1.0\n"),
        (b"SYST:ERR?;:SOUR:VOLT?\n", b'-363,"Input buffer overrun";0\n'),
    ])


def test_faults(toy: Toy) -> None:
    toy.inject_fault("hang")
    assert toy.feed(b"*IDN?\n:SOUR:VOLT 3\n") == b""
    toy.clear_fault()
    replay(toy, [(b":SOUR:VOLT?\n", b"0\n")])  # a hung instrument acts on nothing

    toy.inject_fault("garbage")
    reply = toy.feed(b"*IDN?\n")
    assert reply.endswith(b"\n") and all(byte >= 0x80 for byte in reply[:-1])
    assert toy.feed(b":SOUR:VOLT 1\n") == b""  # no reply expected, none invented
    toy.clear_fault()

    toy.inject_fault("error")
    replay(toy, [
        (b":SOUR:VOLT 2;:OUTP ON\n", b""),
        (b":SOUR:VOLT?;:OUTP?\n", b"1;0\n"),  # one line failed, then normal again
        (b"SYST:ERR?\n", b'-240,"Hardware error"\n'),
    ])

    toy.inject_fault("drop", count=1)
    with pytest.raises(ConnectionAbortedError):
        toy.feed(b"*IDN?\n")
    assert toy.fault is None
    replay(toy, [(b"*IDN?\n", b"ACME,TOY,42,1.0\n")])

    with pytest.raises(ValueError, match="fault kind"):
        toy.inject_fault("smoke")


def test_sessions_buffer_separately(toy: Toy) -> None:
    first, second = toy.session(), toy.session()
    assert first.feed(b":SOUR:VO") == b""
    assert second.feed(b"*IDN?\n") == b"ACME,TOY,42,1.0\n"
    assert first.feed(b"LT 5;VOLT?\n") == b"5\n"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_no_input_crashes_the_parser(data: bytes) -> None:
    toy = Toy()
    toy.feed(data)
    assert toy.feed(b"\n*IDN?\n").endswith(b"ACME,TOY,42,1.0\n")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="*:;?, \"'()@SOURVLTIMPEDNQ019.-e", max_size=60))
def test_any_scpi_like_text_is_answered_or_queued(text: str) -> None:
    toy = Toy()
    reply = toy.feed(text.encode() + b"\n")
    assert reply == b"" or reply.endswith(b"\n")
    toy.feed(b"*CLS\n")
    assert toy.feed(b"*IDN?\n") == b"ACME,TOY,42,1.0\n"
