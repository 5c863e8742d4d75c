"""Transports: the one small interface every driver talks through, opened from a URI.

``visa://<resource>`` (pyvisa, backend ``@py`` by default), ``serial://<port or pyserial url>``
(``serial_for_url``: a device path, ``socket://host:port``, ``loop://``) and ``sim://<name>``
(in process, on a simulated device's ``feed(bytes) -> bytes``).

The public methods of :class:`Transport` are the only place that locks, logs, shields an exchange
from Ctrl-C, reconnects and translates foreign errors; subclasses implement four primitives
(``_connect``, ``_send``, ``_receive``, ``_disconnect``) and raise only :class:`_Dropped`,
:class:`_NoReply` or :class:`UnicodeDecodeError` from them.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from crossbar_ctl.core.errors import ConnectionLost, InstrumentTimeout, ProtocolError

__all__ = ["Device", "SerialTransport", "SimTransport", "Transport", "VisaTransport", "interrupts_deferred",
           "open_transport"]

_log = logging.getLogger("drivers.transport")


class Device(Protocol):
    """A byte-level instrument living in this process (the simulator's devices)."""

    def feed(self, data: bytes) -> bytes: ...


class _Dropped(Exception):
    """Primitive-level: the link is gone (the base class reconnects or raises ConnectionLost)."""


class _NoReply(Exception):
    """Primitive-level: no complete reply within the timeout."""


_MAIN_THREAD = threading.main_thread()


class _InterruptShield:
    """Defers Ctrl-C (SIGINT) while the main thread is inside an exchange.

    Installed once, lazily, in front of the previous handler: outside an exchange a SIGINT goes to
    the previous handler at once; inside one it is remembered and raised as KeyboardInterrupt when
    the exchange completes. Only the main thread receives signals, so only its exchanges count.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.installed = False
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
            return
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def enter(self) -> None:
        if not self.installed:
            self.installed = True
            try:
                self.previous = signal.signal(signal.SIGINT, self._handle)
            except (ValueError, TypeError):  # signals unavailable (embedded interpreter)
                pass
        self.depth += 1

    def leave(self) -> None:
        self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            raise KeyboardInterrupt


_SHIELD = _InterruptShield()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Defer Ctrl-C (SIGINT) for the whole block, as during one exchange.

    A SIGINT arriving inside the block is raised as :class:`KeyboardInterrupt` when the block ends
    (after whatever the block raised, which becomes its context). Only the main thread is shielded:
    elsewhere this does nothing.
    """
    shielded = threading.current_thread() is _MAIN_THREAD
    if shielded:
        _SHIELD.enter()
    try:
        yield
    finally:
        if shielded:
            _SHIELD.leave()


class Transport(ABC):
    """Write, read and query text lines on one instrument.

    Parameters
    ----------
    address : str
        The URI the transport was opened from; it names the instrument in every error.
    timeout_s : float
        Longest wait for a reply, in seconds.
    reconnects : int
        How many times a dropped connection is reopened before :class:`ConnectionLost`.
    role : str
        The instrument's role in the lab (``"switch_board"``, ``"source_meter"``...), named in
        errors with the lab-file setting to change; ``""`` when not part of a lab.

    Notes
    -----
    Every public method holds the instrument's lock (a query is atomic across threads), logs the
    exchange at DEBUG on the ``drivers.transport`` logger, and defers Ctrl-C until it completes.
    """

    def __init__(self, address: str, *, timeout_s: float = 2.0, reconnects: int = 1, role: str = "") -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if reconnects < 0:
            raise ValueError(f"reconnects must be >= 0, got {reconnects!r}")
        self.address = address
        self.role = role
        self._timeout_s = float(timeout_s)
        self.reconnects = int(reconnects)
        self.lock = threading.RLock()
        self.round_trips = 0
        """Replies awaited so far (each ``read`` or ``query``)."""
        self.reopened = 0
        """Times the link was reopened after a drop: writes sent before may have been lost."""
        self._closed = False
        self._connected = False
        self._stale = False  # a reply may still arrive for an exchange that timed out
        self._connect_or_raise()

    # ---- public face --------------------------------------------------------------------------
    @property
    def timeout_s(self) -> float:
        """Longest wait for a reply, in seconds."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"timeout_s must be > 0, got {value!r}")
        with self.lock:
            self._timeout_s = float(value)  # applied now if the link is open, else when it is (re)opened
            if self._connected:
                self._apply_timeout()

    @contextmanager
    def patience(self, duration_s: float) -> Iterator[None]:
        """Lengthen :attr:`timeout_s` by ``duration_s`` for a long operation (a sweep, a batch)."""
        original = self.timeout_s
        self.timeout_s = original + duration_s
        try:
            yield
        finally:
            self.timeout_s = original

    def write(self, command: str) -> None:
        """Send one command line (the terminator is added here)."""
        self._exchange(command, expect_reply=False)

    def read(self) -> str:
        """Read one reply line (without its terminator)."""
        return self._exchange(None, expect_reply=True)

    def query(self, command: str) -> str:
        """Send one command line and read its one reply line, atomically."""
        return self._exchange(command, expect_reply=True)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self.lock:
            if not self._closed:
                self._closed = True
                self._disconnect_quietly()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"

    # ---- the one place that locks, logs, shields, reconnects and translates --------------------
    def _exchange(self, command: str | None, *, expect_reply: bool) -> str:
        shielded = threading.current_thread() is _MAIN_THREAD
        if shielded:
            _SHIELD.enter()
        try:
            with self.lock:
                return self._locked_exchange(command, expect_reply)
        finally:
            if shielded:
                _SHIELD.leave()

    def _locked_exchange(self, command: str | None, expect_reply: bool) -> str:
        if self._closed:
            raise ConnectionLost("transport is closed", address=self.address, command=command or "")
        attempts = 0
        self.round_trips += expect_reply
        if not self._connected:  # dropped earlier: try to reopen once more
            self._reopen("dropped earlier", command or "read")
        if self._stale and command is not None:
            self._stale = False
            self._discard_input()
        while True:
            try:
                if command is not None:
                    self._send(command)
                reply = self._receive() if expect_reply else ""
                break
            except _NoReply:
                self._stale = True
                raise InstrumentTimeout(
                    f"no reply within {self._timeout_s:.3g} s; if the instrument needs longer, raise "
                    + (f"instruments.{self.role}.timeout_s in the lab file" if self.role else "its timeout_s"),
                    address=self.address, command=command or "read") from None
            except UnicodeDecodeError as exc:
                raise ProtocolError(
                    f"reply is not ASCII text ({exc.object[:16]!r}...)",
                    address=self.address, command=command or "read",
                ) from exc
            except _Dropped as exc:
                attempts += 1
                self._disconnect_quietly()
                dropped = f"connection dropped ({exc})"
                if command is None or attempts > self.reconnects:
                    again = f", again after reopening it {attempts - 1}x" if attempts > 1 else ""
                    raise ConnectionLost(f"{self._link()} lost: {dropped}{again}", address=self.address,
                                         command=command or "read") from exc
                _log.warning("%s: %s; reopening", self.address, dropped)
                self._reopen(dropped, command)
        if _log.isEnabledFor(logging.DEBUG):
            if command is not None:
                _log.debug("%s <- %s", self.address, command)
            if expect_reply:
                _log.debug("%s -> %s", self.address, reply)
        return reply

    def _link(self) -> str:
        return f"link to the {self.role}" if self.role else "link"

    def _connect_or_raise(self) -> None:
        try:
            self._connect()
        except _Dropped as exc:
            raise ConnectionLost(f"cannot open the {self._link()}: {exc}", address=self.address) from exc
        self._connected = True
        self._apply_timeout()

    def _reopen(self, why: str, command: str) -> None:
        """Reopen a dropped link; if that fails, the link is lost (said first, then why)."""
        try:
            self._connect()
        except _Dropped as exc:
            raise ConnectionLost(f"{self._link()} lost: {why}; reopening failed: {exc}",
                                 address=self.address, command=command) from exc
        self._connected = True
        self._apply_timeout()
        self.reopened += 1

    def _disconnect_quietly(self) -> None:
        self._connected = False
        try:
            self._disconnect()
        except Exception as exc:  # closing a broken link must not hide the original error
            _log.debug("%s: error while closing: %s", self.address, exc)

    # ---- primitives -----------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> None:
        """Open the link; raise :class:`_Dropped` if it cannot be opened."""

    @abstractmethod
    def _send(self, command: str) -> None:
        """Send ``command`` plus the terminator; :class:`_Dropped` if the link is gone."""

    @abstractmethod
    def _receive(self) -> str:
        """One reply line; :class:`_NoReply` on timeout, :class:`_Dropped` if the link is gone."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the link."""

    def _apply_timeout(self) -> None:
        """Push :attr:`timeout_s` down to the link (default: nothing to do)."""

    def _discard_input(self) -> None:
        """Drop whatever arrived late (a reply to an exchange that timed out)."""


class SimTransport(Transport):
    """A transport on an in-process device: ``device.feed(line + b"\\n")`` returns the reply bytes.

    A device that swallows a line (a hung instrument) leaves nothing to read: the read raises
    :class:`InstrumentTimeout` at once, since nothing can arrive later in process.
    ``device_time_s`` accumulates the time spent inside the device (the simulator's own compute),
    so benchmarks can report the controller's overhead alone.
    """

    def __init__(self, address: str, device: Device, *, timeout_s: float = 2.0, reconnects: int = 1,
                 role: str = "") -> None:
        self._device = device
        self._pending = bytearray()
        self._lines: deque[bytes] = deque()
        self.device_time_s = 0.0
        super().__init__(address, timeout_s=timeout_s, reconnects=reconnects, role=role)

    def _connect(self) -> None:
        session = getattr(self._device, "session", None)
        try:
            self._feed: Callable[[bytes], bytes] = session().feed if session else self._device.feed
        except (ConnectionError, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from exc
        self._pending.clear()
        self._lines.clear()

    def _send(self, command: str) -> None:
        start = time.perf_counter()
        try:
            reply = self._feed(command.encode("ascii") + b"\n")
        except (ConnectionError, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from exc
        finally:
            self.device_time_s += time.perf_counter() - start
        if reply:
            self._pending += reply
            *complete, rest = self._pending.split(b"\n")
            self._lines.extend(complete)
            self._pending = bytearray(rest)

    def _receive(self) -> str:
        if not self._lines:
            raise _NoReply
        return self._lines.popleft().rstrip(b"\r").decode("ascii")

    def _disconnect(self) -> None:
        self._lines.clear()

    def _discard_input(self) -> None:
        self._lines.clear()


class VisaTransport(Transport):
    """A transport over pyvisa (any VISA resource), ``\\n`` terminations set explicitly.

    Parameters
    ----------
    resource : str
        A VISA resource name, e.g. ``TCPIP0::127.0.0.1::5025::SOCKET``.
    backend : str
        The pyvisa backend, ``@py`` (pyvisa-py) by default.
    """

    _managers: dict[str, Any] = {}

    def __init__(self, address: str, resource: str, *, backend: str = "@py", timeout_s: float = 2.0,
                 reconnects: int = 1, role: str = "") -> None:
        self._resource_name = resource
        self._backend = backend
        self._resource: Any = None
        super().__init__(address, timeout_s=timeout_s, reconnects=reconnects, role=role)

    @classmethod
    def _manager(cls, backend: str) -> Any:
        import pyvisa

        if backend not in cls._managers:
            cls._managers[backend] = pyvisa.ResourceManager(backend)
        return cls._managers[backend]

    def _connect(self) -> None:
        import pyvisa

        try:
            self._resource = self._manager(self._backend).open_resource(
                self._resource_name, read_termination="\n", write_termination="\n", encoding="ascii",
            )
        except (pyvisa.Error, OSError, ValueError) as exc:
            raise _Dropped(str(exc)) from exc
        if self._peer_closed():  # pyvisa-py opens a refused socket without complaint
            self._disconnect_quietly()
            raise _Dropped("connection refused or closed at once")
        sock = self._socket()
        if sock is not None:  # commands go out at once, not held back for the last one's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _apply_timeout(self) -> None:
        self._resource.timeout = self._timeout_s * 1000.0  # pyvisa counts milliseconds

    def _socket(self) -> socket.socket | None:
        """The TCP socket of a pyvisa-py ``::SOCKET`` session (None for other sessions)."""
        try:
            sock = self._resource.visalib.sessions[self._resource.session].interface
        except (AttributeError, KeyError, TypeError):
            return None
        return sock if isinstance(sock, socket.socket) else None

    def _peer_closed(self) -> bool:
        """Whether a raw TCP socket (pyvisa-py ``::SOCKET``) was closed by the instrument.

        pyvisa-py reads an orderly close as silence (a timeout); a peek tells the two apart.
        """
        try:
            sock = self._resource.visalib.sessions[self._resource.session].interface
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (AttributeError, KeyError, TypeError, ValueError):
            return False  # not a pyvisa-py socket session
        except OSError:
            return True

    def _send(self, command: str) -> None:
        import pyvisa

        if self._peer_closed():
            raise _Dropped("the instrument closed the connection")
        try:
            self._resource.write(command)
        except pyvisa.errors.VisaIOError as exc:
            raise self._translate(exc) from exc
        except (OSError, pyvisa.Error) as exc:
            raise _Dropped(str(exc)) from exc

    def _receive(self) -> str:
        import pyvisa

        try:
            raw = self._resource.read_raw()
        except pyvisa.errors.VisaIOError as exc:
            raise self._translate(exc) from exc
        except (OSError, pyvisa.Error) as exc:
            raise _Dropped(str(exc)) from exc
        return raw.rstrip(b"\n").rstrip(b"\r").decode("ascii")

    def _translate(self, exc: Any) -> Exception:
        from pyvisa import constants

        if exc.error_code == constants.StatusCode.error_timeout:
            return _Dropped("the instrument closed the connection") if self._peer_closed() else _NoReply()
        return _Dropped(exc.description or str(exc))

    def _discard_input(self) -> None:
        import pyvisa

        self._resource.timeout = 1  # ms: take what is already there, wait for nothing
        try:
            for _ in range(1000):
                self._resource.read_raw()
        except (pyvisa.Error, OSError):
            pass
        finally:
            self._apply_timeout()

    def _disconnect(self) -> None:
        if self._resource is not None:
            resource, self._resource = self._resource, None
            resource.close()


class SerialTransport(Transport):
    """A transport over pyserial's ``serial_for_url`` (a port, ``socket://``, ``loop://``...).

    Parameters
    ----------
    url : str
        A serial port (``/dev/ttyUSB0``) or a pyserial URL.
    baudrate : int
        Line speed; 115200 as the switch board protocol specifies.
    """

    def __init__(self, address: str, url: str, *, baudrate: int = 115200, timeout_s: float = 2.0,
                 reconnects: int = 1, role: str = "") -> None:
        self._url = url
        self._baudrate = baudrate
        self._port: Any = None
        self._buffer = bytearray()  # bytes received past the last complete line
        self.port_reads = 0
        """Reads from the port so far (a reply is read in chunks, not byte by byte)."""
        super().__init__(address, timeout_s=timeout_s, reconnects=reconnects, role=role)

    def _connect(self) -> None:
        import serial

        try:
            self._port = serial.serial_for_url(self._url, baudrate=self._baudrate, timeout=self._timeout_s,
                                               write_timeout=self._timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _Dropped(str(exc)) from exc
        self._buffer.clear()

    def _apply_timeout(self) -> None:
        self._port.timeout = self._timeout_s
        self._port.write_timeout = self._timeout_s

    def _send(self, command: str) -> None:
        import serial

        try:
            self._port.write(command.encode("ascii") + b"\n")
        except serial.SerialTimeoutException as exc:
            raise _NoReply() from exc
        except (serial.SerialException, OSError) as exc:
            raise _Dropped(str(exc)) from exc

    def _receive(self) -> str:
        """One line, read in chunks: the first byte (waiting up to the timeout), then whatever else
        has arrived. pyserial's ``read_until`` reads a byte per call, a select and a read each: a
        readout reply of 1 kB cost 10 ms of CPU that way."""
        import serial

        deadline = time.monotonic() + self._timeout_s
        buffer = self._buffer
        while (end := buffer.find(b"\n")) < 0:
            try:
                chunk = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise _Dropped(str(exc)) from exc
            self.port_reads += 1
            if not chunk or (b"\n" not in chunk and time.monotonic() > deadline):
                buffer += chunk  # a partial reply stays, to be discarded before the next command
                raise _NoReply
            buffer += chunk
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        return line.rstrip(b"\r").decode("ascii")

    def _discard_input(self) -> None:
        import serial

        self._buffer.clear()
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass

    def _disconnect(self) -> None:
        if self._port is not None:
            port, self._port = self._port, None
            port.close()


def open_transport(uri: str, *, timeout_s: float = 2.0, reconnects: int = 1,
                   devices: Mapping[str, Device] | None = None, role: str = "") -> Transport:
    """Open a transport from a URI.

    Parameters
    ----------
    uri : str
        ``visa://<resource>`` (e.g. ``visa://TCPIP0::127.0.0.1::5025::SOCKET``; append
        ``@<backend>`` to pick a pyvisa backend other than ``@py``), ``serial://<port or url>``
        (e.g. ``serial:///dev/ttyUSB0``, ``serial://socket://127.0.0.1:7000``) or
        ``sim://<name>`` (in process, on ``devices[name]``).
    timeout_s : float
        Longest wait for a reply, in seconds.
    reconnects : int
        How many times a dropped connection is reopened before giving up.
    devices : mapping of str to device, optional
        The in-process devices ``sim://`` names refer to (a simulated lab's ``.devices``).
    role : str
        The instrument's role in the lab, named in its errors.

    Raises
    ------
    ConfigError
        The URI's scheme is unknown, or ``sim://<name>`` names no device.
    ConnectionLost
        The instrument cannot be reached.
    """
    from crossbar_ctl.core.errors import ConfigError

    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise ConfigError(f"instrument URI {uri!r} is not of the form visa://..., serial://... or sim://...")
    options = {"timeout_s": timeout_s, "reconnects": reconnects, "role": role}
    if scheme == "visa":
        resource, at, backend = rest.rpartition("@") if "@" in rest else (rest, "", "py")
        return VisaTransport(uri, resource, backend="@" + backend, **options)
    if scheme == "serial":
        return SerialTransport(uri, rest, **options)
    if scheme == "sim":
        if devices is None or rest not in devices:
            known = ", ".join(sorted(devices)) if devices else "none"
            raise ConfigError(f"instrument URI {uri!r}: no simulated device {rest!r} (known: {known})")
        return SimTransport(uri, devices[rest], **options)
    raise ConfigError(f"instrument URI {uri!r}: unknown scheme {scheme!r} (visa, serial or sim)")
