"""The byte-level core every simulated instrument shares, and a declarative SCPI interpreter.

:class:`LineDevice` is the framing and the fault injection: ``feed(data)`` buffers partial lines,
answers every complete ``\\n``-terminated line (a preceding ``\\r`` is ignored), survives garbage
and over-long lines, and can be told to misbehave (:meth:`LineDevice.inject_fault`).

:class:`ScpiDevice` interprets SCPI as IEEE 488.2 and the SCPI standard define it. An instrument
declares its commands as a table, one :func:`scpi` decorator per header in the manual's notation::

    @scpi(":SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", Number(-210, 210, unit="V"))
    def _source_voltage(self, volts): ...

- mnemonics in short or long form, any case; optional nodes in brackets may be left out; a
  numeric suffix ``1`` is the default instance (``SOUR1`` is ``SOUR``);
- a line carries program message units separated by ``;`` (empty units allowed); a unit without
  a leading colon continues the path of the previous one (``:SOUR:VOLT:LEV 1;ILIM 1e-3``); common
  commands (``*CLS``, also written ``:*CLS``) may appear anywhere and leave the path alone;
- the replies of all queries of a line are joined by ``;`` into one ``\\n``-terminated response;
- a unit that fails queues its SCPI error, sets its ``*ESR?`` bit, changes nothing, and the rest
  of the line is discarded (later units of a line usually depend on the failed one);
- ``*IDN? *RST *CLS *OPC *OPC? *WAI *ESR? *ESE *SRE *STB? *TST?``, ``:SYSTem:ERRor[:NEXT]?``,
  ``:SYSTem:ERRor:COUNt?`` and ``:STATus:PRESet`` come with every device.

Not modelled: -410 Query INTERRUPTED and -420 Query UNTERMINATED need GPIB-style read requests;
on a byte stream every response is sent as soon as its line is parsed (``*STB?`` bit 4, MAV,
therefore always reads 0).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "FAULT_KINDS",
    "SCPI_ERRORS",
    "Boolean",
    "Choice",
    "Integer",
    "LineDevice",
    "Number",
    "ScpiDevice",
    "ScpiError",
    "String",
    "scpi",
]

FAULT_KINDS = ("hang", "garbage", "error", "drop")

SCPI_ERRORS: dict[int, str] = {
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -112: "Program mnemonic too long",
    -113: "Undefined header",
    -120: "Numeric data error",
    -123: "Exponent too large",
    -131: "Invalid suffix",
    -141: "Invalid character data",
    -150: "String data error",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -225: "Out of memory",
    -230: "Data corrupt or stale",
    -240: "Hardware error",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
}


class ScpiError(Exception):
    """A command failed; ``code`` is the SCPI error number queued for ``SYST:ERR?``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"{code},{SCPI_ERRORS[code]}")
        self.code = code


# --------------------------------------------------------------------------------------------
# Framing and faults, shared by every simulated instrument (SCPI or the switch board)
# --------------------------------------------------------------------------------------------


class _Session:
    """The input buffer of one connection: whole lines go to the device, in order."""

    def __init__(self, device: LineDevice) -> None:
        self._device = device
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> bytes:
        device = self._device
        self._buffer += data
        replies = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > device.max_line_bytes:
                    self._buffer.clear()
                    self._discarding = True
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            too_long = self._discarding or end > device.max_line_bytes
            self._discarding = False
            replies.append(device._handle_line(line, too_long=too_long))
        return b"".join(replies)


class LineDevice:
    """A simulated instrument at byte level: ``\\n``-framed lines in, reply bytes out.

    Subclasses implement :meth:`_execute` (one complete line, without its terminator, to the
    reply bytes) and :meth:`_too_long`, :meth:`_hardware_error` (the replies to an over-long line
    and to an injected error).

    Parameters
    ----------
    lock : threading.RLock, optional
        Guards the shared physics; a lab shares one lock among the devices of one array. Each
        line runs holding it, except where a long command yields it between chunks
        (:meth:`yield_lock`); a per-device lock keeps lines of one device in order.
    seed : int
        Seed of the garbage bytes produced by the ``garbage`` fault.
    """

    max_line_bytes: ClassVar[int] = 65536
    #: Kinds of :meth:`inject_fault` whose default is to fire once (others last until cleared).
    _ONE_SHOT: ClassVar[frozenset[str]] = frozenset({"error"})

    def __init__(self, *, lock: threading.RLock | None = None, seed: int = 0) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        self._line_lock = threading.Lock()  # one line at a time on this device, from any session
        self._garbage_rng = np.random.default_rng(seed)
        self._fault: str | None = None
        self._fault_left: int | None = None
        self._default_session = _Session(self)

    def feed(self, data: bytes) -> bytes:
        """Take bytes, return the reply bytes of every line they complete (possibly ``b""``).

        Raises
        ------
        ConnectionAbortedError
            A ``drop`` fault is active: the line is lost and the link should be closed.
        """
        return self._default_session.feed(data)

    def session(self) -> _Session:
        """A fresh input buffer for one connection (a server makes one per client)."""
        return _Session(self)

    def inject_fault(self, kind: str, *, count: int | None = None) -> None:
        """Make the device misbehave from the next complete line on.

        Parameters
        ----------
        kind : {"hang", "garbage", "error", "drop"}
            ``hang``: lines are swallowed, never answered. ``garbage``: every reply is replaced by
            random non-ASCII bytes (ending in ``\\n``). ``error``: the line fails with a real
            error (SCPI -240 Hardware error; board ``ERR 8``) and changes nothing. ``drop``:
            :meth:`feed` raises ``ConnectionAbortedError`` (a server closes the connection).
        count : int, optional
            Lines affected before the fault clears itself; default 1 for ``error``, otherwise
            until :meth:`clear_fault`.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self.lock:
            self._fault = kind
            self._fault_left = count if count is not None else (1 if kind in self._ONE_SHOT else None)

    def clear_fault(self) -> None:
        """Behave normally again."""
        with self.lock:
            self._fault = None
            self._fault_left = None

    @property
    def fault(self) -> str | None:
        """The active fault kind, or None."""
        return self._fault

    def yield_lock(self) -> None:
        """Let the other devices sharing :attr:`lock` run a line (between chunks of a long command).

        Call only from a handler, which runs holding this device's line lock and :attr:`lock`
        once: this device's own state stays private, the shared physics is released briefly.
        """
        self.lock.release()
        try:
            time.sleep(0)  # release the GIL so a waiting thread takes the lock
        finally:
            self.lock.acquire()

    def _handle_line(self, line: bytes, *, too_long: bool) -> bytes:
        # Lock order: the device's line lock, then the shared lock (never the other way round).
        with self._line_lock, self.lock:
            fault = self._fault
            if fault is not None and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault = self._fault_left = None
            if fault == "drop":
                raise ConnectionAbortedError("simulated instrument dropped the connection")
            if fault == "hang":
                return b""
            if fault == "error":
                return self._hardware_error()
            if line.endswith(b"\r"):
                line = line[:-1]
            reply = self._too_long() if too_long else self._execute(line)
            if fault == "garbage" and reply:
                size = int(self._garbage_rng.integers(4, 32))
                return self._garbage_rng.integers(0x80, 0x100, size, dtype=np.uint8).tobytes() + b"\n"
            return reply

    def _execute(self, line: bytes) -> bytes:
        raise NotImplementedError

    def _too_long(self) -> bytes:
        raise NotImplementedError

    def _hardware_error(self) -> bytes:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Parameter types: each converts the text of one parameter or raises the SCPI error
# --------------------------------------------------------------------------------------------

_NRF = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?")
_MAX_EXPONENT = 32000  # IEEE 488.2 7.7.2.4.1: a larger exponent magnitude is -123


def _decimal(match: re.Match[str]) -> float:
    """The value of a matched NRf: -123 for an exponent beyond 32000, -222 if it overflows."""
    exponent = match.group(1)
    if exponent is not None and abs(int(exponent)) > _MAX_EXPONENT:
        raise ScpiError(-123)
    value = float(match.group())
    if not math.isfinite(value):
        raise ScpiError(-222)
    return value
_PREFIX = {"": 1.0, "P": 1e-12, "N": 1e-9, "U": 1e-6, "M": 1e-3, "K": 1e3}
_KEYWORDS = {"MIN": "min", "MINIMUM": "min", "MAX": "max", "MAXIMUM": "max", "DEF": "default",
             "DEFAULT": "default"}


@dataclass(frozen=True)
class Number:
    """A decimal number (NRf) within ``[minimum, maximum]``, or ``MIN``/``MAX``/``DEF``.

    An optional suffix in ``unit`` with a prefix (``P N U M K``) scales it: ``10mV`` is 0.01.
    Not a number: -104 Data type error; bad suffix: -131; an exponent beyond 32000: -123;
    outside the bounds, or beyond the float range (``1e999``): -222.
    """

    minimum: float
    maximum: float
    unit: str = ""
    default: float | None = None

    def __call__(self, text: str) -> float:
        upper = text.upper()
        if upper in _KEYWORDS:
            kind = _KEYWORDS[upper]
            if kind == "default":
                return self.minimum if self.default is None else self.default
            return self.minimum if kind == "min" else self.maximum
        match = _NRF.match(text)
        if match is None:
            raise ScpiError(-104)
        value = _decimal(match)
        suffix = upper[match.end():].strip()
        if suffix:
            unit = self.unit.upper()
            if not unit or not suffix.endswith(unit) or suffix[: -len(unit)] not in _PREFIX:
                raise ScpiError(-131)
            value *= _PREFIX[suffix[: -len(unit)]]
        if not self.minimum <= value <= self.maximum:
            raise ScpiError(-222)
        return value


@dataclass(frozen=True)
class Integer:
    """An integer within ``[minimum, maximum]`` (an NRf is rounded, as IEEE 488.2 asks)."""

    minimum: int
    maximum: int

    def __call__(self, text: str) -> int:
        return int(round(Number(self.minimum, self.maximum)(text)))


@dataclass(frozen=True)
class Boolean:
    """``ON``/``OFF`` or a number (non-zero after rounding is ON); else -224 (``1e999``: -222)."""

    def __call__(self, text: str) -> bool:
        upper = text.upper()
        if upper in ("ON", "OFF"):
            return upper == "ON"
        match = _NRF.fullmatch(text)
        if match is None:
            raise ScpiError(-224)
        return round(_decimal(match)) != 0


class Choice:
    """Character data among mnemonics in manual notation (``"VOLTage"``); returns the short form."""

    def __init__(self, *mnemonics: str) -> None:
        self._forms: dict[str, str] = {}
        for mnemonic in mnemonics:
            short = _short_form(mnemonic)
            self._forms[short] = self._forms[mnemonic.upper()] = short

    def __call__(self, text: str) -> str:
        try:
            return self._forms[text.upper()]
        except KeyError:
            raise ScpiError(-224) from None


@dataclass(frozen=True)
class String:
    """String data, quoted with ``"`` or ``'`` (doubled quotes escape); bare text is accepted too."""

    def __call__(self, text: str) -> str:
        if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
            quote = text[0]
            return text[1:-1].replace(quote * 2, quote)
        if text[:1] in ("'", '"'):
            raise ScpiError(-150)
        return text


# --------------------------------------------------------------------------------------------
# The command table
# --------------------------------------------------------------------------------------------

_NODE = re.compile(r"(\[:?([A-Za-z*][A-Za-z0-9]*)\]|:?([A-Za-z*][A-Za-z0-9]*))")
_MNEMONIC = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_HEADER = re.compile(r"(\S*)\s*(.*)", re.S)
_COMMON = re.compile(r"\*[A-Za-z]+")


def _short_form(mnemonic: str) -> str:
    short = "".join(ch for ch in mnemonic if not ch.islower())
    return short.upper() or mnemonic.upper()


@dataclass(frozen=True)
class _Command:
    name: str
    params: tuple[Callable[[str], Any], ...]
    required: int
    repeat_last: int  # how many times the last parameter type may repeat (1: no repetition)
    bind: tuple[Any, ...] = ()  # leading arguments fixed by the header (``CURR`` in the path)


def scpi(
    pattern: str,
    *params: Callable[[str], Any],
    required: int | None = None,
    repeat_last: int = 1,
    bind: tuple[Any, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a method as the handler of one SCPI header.

    Parameters
    ----------
    pattern : str
        The header as the manual writes it: ``[:SOURce]:VOLTage[:LEVel]``, with a trailing ``?``
        for the query form; ``*IDN?`` for a common command.
    *params : callable
        One converter per parameter (:class:`Number`, :class:`Choice`, ...); the handler gets
        the converted values as positional arguments.
    required : int, optional
        How many parameters are mandatory (default: all); the handler supplies defaults.
    repeat_last : int
        The last converter applies to up to this many trailing parameters (lists of values).
    bind : tuple
        Arguments passed before the parameters: one handler serves several headers
        (``:SENSe:CURRent:NPLC`` and ``:SENSe:VOLTage:NPLC`` with ``bind=("CURR",)`` and
        ``bind=("VOLT",)``).
    """

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__dict__.setdefault("_scpi_patterns", []).append(
            (pattern, _Command(func.__name__, params, len(params) if required is None else required,
                               repeat_last, tuple(bind)))
        )
        return func

    return mark


def _expand(pattern: str) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every accepted spelling of a pattern, as (upper-case tokens, is_query)."""
    query = pattern.endswith("?")
    body = pattern[:-1] if query else pattern
    choices = []
    for match in _NODE.finditer(body):
        word = match.group(2) or match.group(3)
        forms = {_short_form(word), word.upper()}
        choices.append(sorted(forms) + ([""] if match.group(2) else []))
    for combo in itertools.product(*choices):
        yield tuple(token for token in combo if token), query


def _split(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside quotes and parentheses; -102 if unbalanced."""
    parts, start, depth, quote = [], 0, 0, ""
    for index, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScpiError(-102)
        elif ch == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if quote or depth:
        raise ScpiError(-102)
    parts.append(text[start:])
    return parts


# ESR bit set by each class of error (IEEE 488.2): command, execution, device-specific, query.
_ESR_OPC, _ESR_QYE, _ESR_DDE, _ESR_EXE, _ESR_CME = 1, 4, 8, 16, 32


def _esr_bit(code: int) -> int:
    if -199 <= code <= -100:
        return _ESR_CME
    if -299 <= code <= -200:
        return _ESR_EXE
    if -499 <= code <= -400:
        return _ESR_QYE
    return _ESR_DDE


class ScpiDevice(LineDevice):
    """An SCPI instrument: the common commands, the error queue and the status bytes.

    Subclasses set :attr:`idn`, declare their commands with :func:`scpi` and implement
    :meth:`reset` (the ``*RST`` state).
    """

    idn: ClassVar[str] = "SIMULATED,SCPI,0,1.0"
    error_queue_size: ClassVar[int] = 32
    _table: ClassVar[dict[tuple[tuple[str, ...], bool], _Command]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[tuple[tuple[str, ...], bool], _Command] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                for pattern, command in getattr(value, "_scpi_patterns", ()):
                    for key in _expand(pattern):
                        table[key] = command
        cls._table = table

    def __init__(self, *, lock: threading.RLock | None = None, seed: int = 0) -> None:
        super().__init__(lock=lock, seed=seed)
        self._errors: deque[int] = deque()
        self._esr = 0
        self._ese = 0
        self._sre = 0
        self.reset()

    def reset(self) -> None:
        """Return to the ``*RST`` state (the error queue and status bytes are kept)."""

    # ---- error queue -------------------------------------------------------------------------
    def push_error(self, code: int) -> None:
        """Queue an error and set its ``*ESR?`` bit (a full queue ends in -350 Queue overflow)."""
        self._esr |= _esr_bit(code)
        if len(self._errors) >= self.error_queue_size:
            self._errors[-1] = -350
        else:
            self._errors.append(code)

    @property
    def errors(self) -> list[int]:
        """The queued error codes, oldest first (a view for tests; ``SYST:ERR?`` pops them)."""
        return list(self._errors)

    # ---- line execution ----------------------------------------------------------------------
    def _execute(self, line: bytes) -> bytes:
        try:
            text = line.decode("ascii")
            if not text.replace("\t", " ").isprintable():
                raise ScpiError(-101)
            units = _split(text, ";")
        except UnicodeDecodeError:
            self.push_error(-101)
            return b""
        except ScpiError as exc:
            self.push_error(exc.code)
            return b""
        replies = []
        path: tuple[str, ...] = ()
        for unit in units:
            if not unit.strip():
                continue
            try:
                reply, path = self._execute_unit(unit.strip(), path)
            except ScpiError as exc:
                self.push_error(exc.code)
                break
            if reply is not None:
                replies.append(reply)
        return (";".join(replies) + "\n").encode("ascii") if replies else b""

    def _execute_unit(self, unit: str, path: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
        header, rest = _HEADER.match(unit).groups()
        query = header.endswith("?")
        if query:
            header = header[:-1]
        absolute = header.startswith(":")
        if absolute:
            header = header[1:]
        if header.startswith("*"):
            tokens: tuple[str, ...] = (header.upper(),)
            new_path = path
            if _COMMON.fullmatch(header) is None:
                raise ScpiError(-102)
        else:
            words = header.split(":")
            if not all(_MNEMONIC.fullmatch(word) for word in words):
                raise ScpiError(-102)
            if any(len(word) > 12 for word in words):
                raise ScpiError(-112)
            tokens = (() if absolute else path) + tuple(word.upper() for word in words)
            new_path = tokens[:-1]
        command = self._table.get((tokens, query))
        if command is None:
            stripped = tuple(t[:-1] if t.endswith("1") and not t[:-1][-1:].isdigit() else t
                             for t in tokens)
            command = self._table.get((stripped, query))
        if command is None or not self._accepts(tokens):
            raise ScpiError(-113)
        args = _split(rest, ",") if rest.strip() else []
        args = [arg.strip() for arg in args]
        if any(not arg for arg in args):
            raise ScpiError(-102)
        params = command.params
        limit = len(params) + command.repeat_last - 1 if params else 0
        if len(args) < command.required:
            raise ScpiError(-109)
        if len(args) > limit:
            raise ScpiError(-223 if command.repeat_last > 1 else -108)
        values = [params[min(index, len(params) - 1)](arg) for index, arg in enumerate(args)]
        reply = getattr(self, command.name)(*command.bind, *values)
        if query and reply is None:
            raise AssertionError(f"query handler {command.name} returned no reply")
        return reply, new_path

    def _accepts(self, tokens: tuple[str, ...]) -> bool:
        """Whether a header is accepted in the present mode (a language setting may refuse it)."""
        return True

    def _too_long(self) -> bytes:
        self.push_error(-363)
        return b""

    def _hardware_error(self) -> bytes:
        self.push_error(-240)
        return b""

    # ---- common commands (IEEE 488.2) and the SYSTem/STATus basics ---------------------------
    @scpi("*IDN?")
    def _idn(self) -> str:
        return self.idn

    @scpi("*RST")
    def _rst(self) -> None:
        self.reset()

    @scpi("*CLS")
    def _cls(self) -> None:
        self._errors.clear()
        self._esr = 0

    @scpi("*OPC")
    def _opc(self) -> None:
        self._esr |= _ESR_OPC  # every operation completes before the next line is read

    @scpi("*OPC?")
    def _opc_query(self) -> str:
        return "1"

    @scpi("*WAI")
    def _wai(self) -> None:
        """Nothing is pending: the simulator finishes each command before reading the next."""

    @scpi("*TST?")
    def _tst(self) -> str:
        return "0"

    @scpi("*ESR?")
    def _esr_query(self) -> str:
        value, self._esr = self._esr, 0
        return str(value)

    @scpi("*ESE", Integer(0, 255))
    def _ese_set(self, value: int) -> None:
        self._ese = value

    @scpi("*ESE?")
    def _ese_query(self) -> str:
        return str(self._ese)

    @scpi("*SRE", Integer(0, 255))
    def _sre_set(self, value: int) -> None:
        self._sre = value & ~64

    @scpi("*SRE?")
    def _sre_query(self) -> str:
        return str(self._sre)

    def _summary_bits(self) -> int:
        """Device-specific ``*STB?`` summary bits (e.g. bit 0, measurement summary)."""
        return 0

    @scpi("*STB?")
    def _stb(self) -> str:
        stb = (4 if self._errors else 0) | (32 if self._esr & self._ese else 0) | self._summary_bits()
        return str(stb | (64 if stb & self._sre else 0))

    @scpi(":SYSTem:ERRor[:NEXT]?")
    def _system_error(self) -> str:
        code = self._errors.popleft() if self._errors else 0
        return f'{code},"{SCPI_ERRORS.get(code, "No error") if code else "No error"}"'

    @scpi(":SYSTem:ERRor:COUNt?")
    def _system_error_count(self) -> str:
        return str(len(self._errors))

    @scpi(":STATus:PRESet")
    def _status_preset(self) -> None:
        """The SCPI operation/questionable registers are not modelled: nothing to preset."""
