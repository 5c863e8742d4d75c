"""What every SCPI driver shares: identification, parsing of replies, the error queue."""

from __future__ import annotations

import re

from crossbar_ctl.core.errors import InstrumentReportedError, ProtocolError
from drivers._transport import Transport

__all__ = ["OVERFLOW", "ScpiInstrument", "format_number"]

OVERFLOW = 9.91e37
"""The SCPI "not a number / overflow" value; readings equal to it are returned as NaN."""

_ERROR_REPLY = re.compile(r'\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')
_MAX_QUEUED_ERRORS = 64


def format_number(value: float) -> str:
    """A number as sent on the wire: shortest exact-enough decimal (``0.5``, ``1e-05``)."""
    return format(float(value), ".10g")


class ScpiInstrument:
    """A SCPI instrument behind a transport: identify on connect, parse replies, check errors.

    Parameters
    ----------
    transport : Transport
        An open transport; the driver does not own it beyond :meth:`close`.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._last_command = ""
        self.idn = self._query("*IDN?").strip()
        self._check_identity(self.idn)

    # ---- subclasses -------------------------------------------------------------------------
    def _check_identity(self, idn: str) -> None:
        """Refuse an instrument of another model (raise :class:`ProtocolError`)."""

    # ---- shared helpers ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The instrument's URI."""
        return self.transport.address

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"

    def _write(self, command: str) -> None:
        self._last_command = command
        self.transport.write(command)

    def _query(self, command: str) -> str:
        self._last_command = command
        return self.transport.query(command)

    def _protocol_error(self, what: str, reply: str, command: str) -> ProtocolError:
        shown = reply if len(reply) <= 60 else reply[:57] + "..."
        return ProtocolError(f"{what}: {shown!r}", address=self.address, command=command)

    def _floats(self, command: str) -> list[float]:
        """Query and parse a comma-separated list of numbers (overflow as NaN)."""
        reply = self._query(command)
        try:
            values = [float(item) for item in reply.split(",")] if reply.strip() else []
        except ValueError:
            raise self._protocol_error("expected numbers", reply, command) from None
        return [float("nan") if abs(value) >= OVERFLOW else value for value in values]

    def _float(self, command: str) -> float:
        values = self._floats(command)
        if len(values) != 1:
            raise self._protocol_error("expected one number", ",".join(map(str, values)), command)
        return values[0]

    def _bool(self, command: str) -> bool:
        reply = self._query(command).strip()
        if reply not in ("0", "1"):
            raise self._protocol_error("expected 0 or 1", reply, command)
        return reply == "1"

    def _configure(self, *commands: str, resend: tuple[str, ...] | None = None) -> None:
        """Write configuration commands, then check the error queue.

        A link reopened meanwhile may have lost the writes: then ``resend`` (default: every
        command) is written and checked once more.
        """
        reopened = self.transport.reopened
        for command in commands:
            self._write(command)
        self.check_errors()
        if self.transport.reopened != reopened:
            for command in commands if resend is None else resend:
                self._write(command)
            self.check_errors()

    # ---- common commands ----------------------------------------------------------------------
    def clear_status(self) -> None:
        """``*CLS``: clear the error queue and the event registers."""
        self._write("*CLS")

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (``:SYST:ERR?`` until ``0,"No error"``), oldest first."""
        found = []
        for _ in range(_MAX_QUEUED_ERRORS):
            reply = self._query(":SYST:ERR?")
            match = _ERROR_REPLY.match(reply)
            if match is None:
                raise self._protocol_error("expected <code>,\"<text>\"", reply, ":SYST:ERR?")
            code = int(match.group(1))
            if code == 0:
                return found
            found.append((code, match.group(2)))
        raise self._protocol_error("error queue does not empty", reply, ":SYST:ERR?")

    def check_errors(self) -> None:
        """Raise :class:`InstrumentReportedError` with the oldest queued error, if any.

        The error names the last command written before the check (the likely culprit).
        """
        culprit = self._last_command
        found = self.errors()
        if found:
            code, text = found[0]
            extra = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            raise InstrumentReportedError(code, text + extra, address=self.address, command=culprit)

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()
