"""Property tests: every header of every simulated SCPI instrument, given hostile parameters
(overflowing and malformed numbers, keywords, strings, channel lists), is answered or queues an
error; the interpreter never raises, so a served connection is never dropped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim._keithley import SimKeithley2400, SimKeithley2450
from sim._matrix import SimSwitchMatrix
from tests.sim.test_keithley import Resistor


class Small2450(SimKeithley2450):
    """Sweeps capped small so that random sweeps run fast (the cap itself is tested elsewhere)."""

    MAX_SWEEP_POINTS = 2000


def make(kind: str):
    if kind == "matrix":
        return SimSwitchMatrix(12)
    return {"2450": Small2450, "2400": SimKeithley2400}[kind](Resistor(1e-4))


KINDS = {"2450": Small2450, "2400": SimKeithley2400, "matrix": SimSwitchMatrix}


def headers(cls) -> list[str]:
    """One spelling (the shortest) of every command and query the instrument declares."""
    chosen: dict[tuple[object, bool], str] = {}
    for (tokens, query), command in cls._table.items():
        text = ":".join(tokens) + ("?" if query else "")
        key = (command, query)
        if key not in chosen or len(text) < len(chosen[key]):
            chosen[key] = text
    return sorted(chosen.values())


HEADERS = {kind: headers(cls) for kind, cls in KINDS.items()}

EDGE_VALUES = [
    "1e999", "-1e999", "1E-999", "1e32001", "1e-40000", "NaN", "nan", "INF", "-INF", "0", "-0",
    "1", "2", "10", "2500", "300000", "268435455", "-1", "0.5", ".5", "5.", "1e9", "9.91e37",
    "MAX", "MIN", "DEF", "ON", "OFF", "1 mV", "5mA", "2KHZ", "1e", "e5", "+", "--1", "0x10",
    "1_000"]
EDGES = st.sampled_from(EDGE_VALUES)
NUMBERS = st.one_of(
    EDGES, EDGES, EDGES,  # weighted: the hostile spellings are what this test is for
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
)
WORDS = st.sampled_from(['"defbuffer1"', "'defbuffer2'", '"nobuffer"', '"CURR"', '"RES"',
                         '"VOLT:DC"', '""', '"', "'unterminated", "READ", "SOUR", "REL", "SEC",
                         "VOLT", "CURR", "LIST", "FIX", "AUTO", "BEST", "NEXT", "MEAN", "ALL",
                         "FREE", "SROU", "BBM", "(@00101)", "(@00101:01012)", "(@)", "(@1e999)",
                         "(@00101,", "(@001010)", "(@00113)", "(@0:1)", "(", ")", "@", "#H1F"])
PARAMETERS = st.lists(st.one_of(NUMBERS, NUMBERS, WORDS), max_size=11)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(KINDS)), st.data())
def test_any_header_with_any_parameters_is_answered_or_queued(kind: str, data) -> None:
    device = make(kind)
    for _ in range(data.draw(st.integers(1, 3), label="commands")):
        header = data.draw(st.sampled_from(HEADERS[kind]), label="header")
        parameters = data.draw(PARAMETERS, label="parameters")
        line = (header + (" " + ",".join(parameters) if parameters else "")).encode()
        reply = device.feed(line + b"\n")
        assert reply == b"" or (reply.endswith(b"\n") and reply.count(b"\n") == 1)
    device.feed(b"*CLS\n")
    assert device.feed(b"*IDN?\n") == device.idn.encode() + b"\n"


def test_every_header_with_every_hostile_number_is_answered_or_queued() -> None:
    # Exhaustive where the random test is thin: each declared header, each hostile spelling as
    # the first, a middle and every parameter.
    for kind in KINDS:
        for header in HEADERS[kind]:
            device = make(kind)
            for value in EDGE_VALUES:
                for parameters in (value, f"1,{value}", ",".join([value] * 5)):
                    reply = device.feed(f"{header} {parameters}\n".encode())
                    assert reply == b"" or reply.endswith(b"\n"), (header, parameters)
            assert device.feed(b"*IDN?\n") == device.idn.encode() + b"\n"
