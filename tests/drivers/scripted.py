"""A transport that replays an exact script of exchanges (PyMeasure's ``expected_protocol``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from drivers import Transport
from drivers._transport import _NoReply


class ScriptedTransport(Transport):
    """Each step is ``(sent, reply)``: ``reply`` None for a write, a string for a query.

    Anything sent out of order fails the test at once; :meth:`assert_done` fails if steps remain.
    """

    def __init__(self, steps: Iterable[tuple[str, str | None]], *, address: str = "scripted://x") -> None:
        self.steps: deque[tuple[str, str | None]] = deque(steps)
        self.sent: list[str] = []
        self._reply: str | None = None
        super().__init__(address, timeout_s=1.0, reconnects=0)

    def extend(self, steps: Iterable[tuple[str, str | None]]) -> None:
        self.steps.extend(steps)

    def _connect(self) -> None:
        pass

    def _send(self, command: str) -> None:
        self.sent.append(command)
        assert self.steps, f"unexpected command {command!r}: the script is finished"
        expected, reply = self.steps.popleft()
        assert command == expected, f"sent {command!r}, expected {expected!r}"
        self._reply = reply

    def _receive(self) -> str:
        if self._reply is None:
            raise _NoReply
        reply, self._reply = self._reply, None
        return reply

    def _disconnect(self) -> None:
        pass

    def assert_done(self) -> None:
        assert not self.steps, f"expected exchanges left over: {list(self.steps)}"


def connect_2450(steps=(), **kwargs):
    """A Keithley2450 on a script that starts with its connect sequence."""
    from drivers import Keithley2450

    transport = ScriptedTransport([
        ("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b"),
        ("*LANG?", "SCPI"),
        (":SOUR:VOLT?", "0"),
        (":OUTP?", "0"),
        (":SOUR:VOLT:ILIM?", "1.050000E-04"),
    ])
    smu = Keithley2450(transport, **kwargs)
    transport.assert_done()
    transport.extend(steps)
    return smu, transport


def connect_2400(steps=(), **kwargs):
    """A Keithley2400 on a script that starts with its connect sequence."""
    from drivers import Keithley2400

    transport = ScriptedTransport([
        ("*IDN?", "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4105270,C32   Oct  4 2010 14:20:11/A02  /S/K"),
        (":SOUR:VOLT?", "+0.000000E+00"),
        (":OUTP?", "0"),
        (":SENS:CURR:PROT?", "+1.050000E-04"),
        (":FORM:ELEM CURR", None),
        (":SYST:ERR?", '0,"No error"'),
    ])
    smu = Keithley2400(transport, **kwargs)
    transport.assert_done()
    transport.extend(steps)
    return smu, transport


NO_ERROR = (":SYST:ERR?", '0,"No error"')
