"""Switch matrices (role ``SwitchMatrix``): Keysight E5250A / B2200, SCPI channel lists.

Channels are ``(@ciioo)``: card (0 = auto configuration), two-digit input, two-digit output (three
digits when the matrix has more than 99 outputs). The driver keeps the channels it closed and the
connection rule, and refuses, before sending, a closure that would put two inputs on one output
while the rule is FREE (two sources shorted through the matrix).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from crossbar_ctl.core.errors import LimitError, ProtocolError
from drivers._safety import check_choice, check_int
from drivers._scpi import ScpiInstrument
from drivers._transport import Transport

__all__ = ["KeysightE5250A", "SwitchMatrix"]

_CHANNELS = re.compile(r"\s*\(@(.*)\)\s*")

Channel = tuple[int, int]
"""(input, output), both 1-based."""


class SwitchMatrix(ScpiInstrument):
    """Role: connect instrument inputs to array lines (outputs), ground the unused lines.

    Parameters
    ----------
    transport : Transport
        An open transport to the matrix.
    inputs, outputs : int
        Ports of the matrix (auto configuration: every card as one).
    """

    INPUTS = 10

    def __init__(self, transport: Transport, *, outputs: int = 48, inputs: int | None = None) -> None:
        self.inputs = inputs if inputs is not None else self.INPUTS
        self.outputs = check_int("outputs", outputs, 1, 999)
        self._digits = 2 if self.outputs <= 99 else 3
        super().__init__(transport)
        self._rule = self._query(":ROUT:CONN:RULE? 0").strip().upper()
        self._closed: set[Channel] = self.closed_channels()
        self.version = 0
        """Increases whenever the driver changes a connection or the ground mode."""

    # ---- channel lists ------------------------------------------------------------------------
    def _check_channels(self, channels: Iterable[Channel]) -> list[Channel]:
        checked = []
        for channel in channels:
            try:
                inp, out = channel
            except (TypeError, ValueError):
                raise LimitError("channel", float("nan"), float("nan"), f"expected (input, output), got {channel!r}") from None
            checked.append((check_int("input", inp, 1, self.inputs), check_int("output", out, 1, self.outputs)))
        if not checked:
            raise LimitError("channels", 0, 1, "no channel given")
        return checked

    def channel_list(self, channels: Iterable[Channel]) -> str:
        """``(@ciioo,...)`` for card 0 (auto configuration)."""
        return "(@" + ",".join(f"0{inp:02d}{out:0{self._digits}d}" for inp, out in channels) + ")"

    def _parse_channel_list(self, reply: str, command: str) -> set[Channel]:
        match = _CHANNELS.fullmatch(reply)
        if match is None:
            raise self._protocol_error("expected a channel list (@...)", reply, command)
        found: set[Channel] = set()
        for item in filter(None, (part.strip() for part in match.group(1).split(","))):
            first, sep, last = item.partition(":")
            try:
                a = (int(first[1:3]), int(first[3:]))
                b = (int(last[1:3]), int(last[3:])) if sep else a
            except ValueError:
                raise self._protocol_error("bad channel", item, command) from None
            found.update((i, o) for i in range(a[0], b[0] + 1) for o in range(a[1], b[1] + 1))
        return found

    # ---- relays ---------------------------------------------------------------------------------
    def close_channels(self, channels: Iterable[Channel]) -> None:
        """``:ROUT:CLOS (@...)``: connect each (input, output).

        Raises
        ------
        LimitError
            In FREE rule, the closure would connect two inputs to one output; nothing is sent.
        """
        wanted = self._check_channels(channels)
        if self._rule == "FREE":
            owner = {out: inp for inp, out in self._closed}
            for inp, out in wanted:
                if owner.setdefault(out, inp) != inp:
                    raise LimitError("short", out, 0, f"output {out} would join inputs {owner[out]} and {inp}; "
                                     "open one first")
        self._configure(f":ROUT:CLOS {self.channel_list(wanted)}")
        if self._rule == "SROU":
            self._closed = {(i, o) for i, o in self._closed if not any(i == a or o == b for a, b in wanted)}
        self._closed.update(wanted)
        self.version += 1

    def open_channels(self, channels: Iterable[Channel]) -> None:
        """``:ROUT:OPEN (@...)``: disconnect each (input, output)."""
        wanted = self._check_channels(channels)
        self._configure(f":ROUT:OPEN {self.channel_list(wanted)}")
        self._closed.difference_update(wanted)
        self.version += 1

    def open_all(self) -> None:
        """``:ROUT:OPEN:CARD 0``: disconnect every channel."""
        self._write(":ROUT:OPEN:CARD 0")
        self._closed.clear()
        self.version += 1

    def closed_channels(self) -> set[Channel]:
        """``:ROUT:CLOS:CARD? 0``: every closed channel."""
        command = ":ROUT:CLOS:CARD? 0"
        return self._parse_channel_list(self._query(command), command)

    def set_connection_rule(self, rule: str) -> None:
        """``:ROUT:CONN:RULE 0,<FREE|SROU>``: SROU allows one output per input and vice versa."""
        value = check_choice("rule", rule, ("FREE", "SROU"))
        self._configure(f":ROUT:CONN:RULE 0,{value}")
        self._rule = value

    @property
    def connection_rule(self) -> str:
        """The connection rule last set (``FREE`` or ``SROU``)."""
        return self._rule

    def set_connection_sequence(self, sequence: str) -> None:
        """``:ROUT:CONN:SEQ 0,<NSEQ|BBM|MBBR>``: how a replaced connection switches."""
        value = check_choice("sequence", sequence, ("NSEQ", "BBM", "MBBR"))
        self._configure(f":ROUT:CONN:SEQ 0,{value}")

    def set_ground_unused(self, on: bool) -> None:
        """``:ROUT:AGND 0,<ON|OFF>``: tie every output on no input to ground."""
        if not isinstance(on, bool):
            raise LimitError("ground", float("nan"), float("nan"), f"expected True or False, got {on!r}")
        self._configure(f":ROUT:AGND 0,{'ON' if on else 'OFF'}")
        self.version += 1

    def reset(self) -> None:
        """``*RST`` and ``*CLS``: every channel open, rule FREE."""
        self._configure("*RST", "*CLS")
        self._closed.clear()
        self.version += 1
        self._rule = self._query(":ROUT:CONN:RULE? 0").strip().upper()


class KeysightE5250A(SwitchMatrix):
    """Keysight (Agilent) E5250A low-leakage switch mainframe; also accepts a B2200A/B2201A."""

    def _check_identity(self, idn: str) -> None:
        if not re.search(r"\b(E5250A|B220[01]A?)\b", idn, re.IGNORECASE):
            raise ProtocolError(f"expected a Keysight E5250A or B2200 switch matrix, got {idn!r}; "
                                "check the address and the configured model", address=self.address, command="*IDN?")
