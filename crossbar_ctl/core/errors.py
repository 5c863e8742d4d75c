"""The one exception hierarchy of crossbar-ctl.

::

    CrossbarError
    ├── ConfigError(ValueError)            a configuration key, its value, what is allowed
    ├── LimitError(ValueError)             a request beyond a safety limit; nothing was sent
    ├── InstrumentError                    an instrument misbehaved (address, command)
    │   ├── InstrumentTimeout(TimeoutError)    no answer within the timeout
    │   ├── ConnectionLost(ConnectionError)    the link dropped and could not be reopened
    │   ├── ProtocolError                      an answer that cannot be parsed
    │   └── InstrumentReportedError            the instrument's own error code and text
    ├── RecordError(ValueError)            a file that is corrupt, truncated or of another version
    ├── CalibrationError                   a calibration that cannot go on
    ├── OptimizerError(ValueError)         bad input to the subset-sum optimizer
    └── EngineError(ValueError)            a network that cannot be mapped, programmed or checked

pyvisa and pyserial exceptions never escape the transport layer: they are translated there,
with ``raise ... from exc``, into :class:`InstrumentError` subclasses.
"""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "ConfigError",
    "ConnectionLost",
    "CrossbarError",
    "EngineError",
    "InstrumentError",
    "InstrumentReportedError",
    "InstrumentTimeout",
    "LimitError",
    "OptimizerError",
    "ProtocolError",
    "RecordError",
]


class CrossbarError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(CrossbarError, ValueError):
    """A configuration value is missing, misspelt or out of range.

    Parameters
    ----------
    message : str
        What is wrong, naming the key, the value and what is allowed.
    key : str, optional
        Dotted path of the offending key, e.g. ``"sim.rows"``.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class LimitError(CrossbarError, ValueError):
    """A request would exceed a safety limit. Nothing was sent to any instrument.

    Parameters
    ----------
    limit : str
        Name of the limit, e.g. ``"max_voltage_v"``.
    requested : float
        The value asked for.
    allowed : float
        The configured bound.
    """

    def __init__(self, limit: str, requested: float, allowed: float, detail: str = "") -> None:
        text = f"{limit}: requested {requested:g}, allowed {allowed:g}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.limit = limit
        self.requested = requested
        self.allowed = allowed


_SHOWN_CHARS = 60
"""Longest command an error message quotes whole (an MVM vector is abbreviated)."""


class InstrumentError(CrossbarError):
    """An instrument failed to do what was asked.

    Parameters
    ----------
    message : str
        What happened.
    address : str, optional
        The instrument's URI.
    command : str, optional
        The command being exchanged when it happened (kept whole; the message shows at most
        ``_SHOWN_CHARS`` of it).
    """

    def __init__(self, message: str, *, address: str = "", command: str = "") -> None:
        parts = [message]
        if address:
            parts.append(f"instrument {address}")
        if command:
            shown = command if len(command) <= _SHOWN_CHARS else f"{command[:_SHOWN_CHARS - 20]}..."
            extra = "" if shown == command else f" ({len(command)} characters)"
            parts.append(f"command {shown!r}{extra}")
        super().__init__(": ".join(parts[:1]) + (" (" + ", ".join(parts[1:]) + ")" if parts[1:] else ""))
        self.address = address
        self.command = command


class InstrumentTimeout(InstrumentError, TimeoutError):
    """The instrument did not answer within its timeout."""


class ConnectionLost(InstrumentError, ConnectionError):
    """The connection dropped and could not be reopened."""


class ProtocolError(InstrumentError):
    """The instrument answered something that cannot be parsed."""


class InstrumentReportedError(InstrumentError):
    """The instrument reported an error of its own (SCPI error queue or board ``ERR``).

    Parameters
    ----------
    code : int
        The instrument's error code, e.g. ``-222``.
    text : str
        The instrument's error text, e.g. ``"Data out of range"``.
    """

    def __init__(self, code: int, text: str, *, address: str = "", command: str = "") -> None:
        super().__init__(f"instrument error {code}, {text!r}", address=address, command=command)
        self.code = code
        self.text = text


class RecordError(CrossbarError, ValueError):
    """A record file is corrupt, truncated, of an unknown version or from another array."""


class CalibrationError(CrossbarError):
    """A calibration cannot go on or its result cannot be trusted."""


class OptimizerError(CrossbarError, ValueError):
    """Invalid input to the subset-sum optimizer, naming the argument."""


class EngineError(CrossbarError, ValueError):
    """A network cannot be mapped, programmed or checked on this lab."""
