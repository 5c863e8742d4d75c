"""Serve simulated instruments on loopback TCP (raw SCPI, as LAN instruments serve port 5025) and
on pseudo-terminals (the serial board), so the real pyvisa and pyserial stacks talk to them.

Every connection gets its own input buffer (:meth:`LineDevice.session`): a client that sends half
a command and disconnects leaves nothing behind for the next one. A device that raises
``ConnectionAbortedError`` (the ``drop`` fault) gets its TCP connection closed; on a pty, where
there is no connection to close, the line is lost. Nothing a client sends or fails to read can
stop a server: a slow reader only blocks its own connection's thread. An idle server sleeps in
``select`` without a timeout and :meth:`stop` wakes it through a pipe: a thread that woke every
0.1 s to look for a stop took the interpreter lock from the client in the same process (five such
threads in a served lab: 50 wake-ups a second during the client's computations).

While a :class:`SimServer` runs, the process uses one BLAS thread (the circuit solver's own
``_one_blas_thread``, held from :meth:`SimServer.start` to :meth:`SimServer.stop`): OpenBLAS's
thread pool, switched between one thread in the simulator's solves and two in the client's work
from different threads, made a served demo's solves many times slower (a 64 x 64 x 8 board's
first readouts 1-7 s against 0.04 s; the served demo 84-119 s against 36 s with
``OPENBLAS_NUM_THREADS=1``, the same figures bit for bit).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import tty
from collections.abc import Mapping
from typing import Any

from crossbar_ctl.core.circuit import _one_blas_thread
from sim._scpi import LineDevice

__all__ = ["LabServer", "PtyServer", "SimServer", "TcpServer"]

_log = logging.getLogger(__name__)
_POLL_S = 0.1
_CHUNK = 65536


class _Waker:
    """A pipe whose read end becomes readable when :meth:`wake` is called: ``select`` on it beside
    a socket or a terminal, without a timeout, and stop at once."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()

    def wake(self) -> None:
        if self._write_fd >= 0:
            os.write(self._write_fd, b"x")

    def close(self) -> None:
        for fd in (self.fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._write_fd = -1


def _readable(fd: Any, waker: _Waker) -> bool:
    """Wait until ``fd`` is readable (True: what has arrived is still taken, a connection waiting
    in the backlog accepted and closed in order rather than reset) or else the server is woken to
    stop, or ``fd`` was closed meanwhile (False)."""
    try:
        readable, _, _ = select.select([fd, waker.fd], [], [])
    except (OSError, ValueError):
        return False
    return fd in readable


class TcpServer:
    """One device on one loopback TCP port, a thread per connection.

    Parameters
    ----------
    device : LineDevice
        The instrument to serve.
    host : str
        Address to bind (loopback by default).
    port : int
        Port to bind; 0 takes a free ephemeral port (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, device: LineDevice, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.device = device
        self.host = host
        self.port = port
        self._waker = _Waker()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()

    @property
    def resource(self) -> str:
        """The VISA resource name pyvisa-py opens: ``TCPIP0::<host>::<port>::SOCKET``."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        """Bind, listen and accept in a background thread."""
        self._listener = socket.create_server((self.host, self.port))
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept, daemon=True,
                                               name=f"sim-tcp-{self.port}-accept")
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the threads."""
        self._waker.wake()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._guard:
            connections, workers = list(self._connections), list(self._workers)
        for connection in connections:
            _shutdown(connection)
        for worker in workers:
            worker.join(timeout=5)
        self._waker.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while _readable(self._listener, self._waker):
            try:
                connection, peer = self._listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(target=self._serve, args=(connection,), daemon=True,
                                      name=f"sim-tcp-{self.port}-{peer[1]}")
            with self._guard:
                self._connections.add(connection)
                self._workers = [t for t in self._workers if t.is_alive()] + [worker]
            worker.start()

    def _serve(self, connection: socket.socket) -> None:
        session = self.device.session()
        try:
            while _readable(connection, self._waker):
                data = connection.recv(_CHUNK)
                if not data:
                    return
                reply = session.feed(data)
                if reply:
                    connection.sendall(reply)
        except ConnectionAbortedError:
            _log.debug("port %d: device dropped the connection", self.port)
        except OSError as exc:
            _log.debug("port %d: connection ended: %s", self.port, exc)
        except Exception:  # a device bug must not take the server down
            _log.exception("port %d: device failed", self.port)
        finally:
            with self._guard:
                self._connections.discard(connection)
            _shutdown(connection)


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


class PtyServer:
    """One device on a pseudo-terminal in raw mode: open :attr:`path` with pyserial.

    The server keeps its own handle on the terminal, so clients may open and close it any number
    of times.
    """

    def __init__(self, device: LineDevice) -> None:
        self.device = device
        self.path = ""
        self._stop = threading.Event()
        self._waker = _Waker()
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1

    def start(self) -> None:
        """Open the pseudo-terminal and serve it in a background thread."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"sim-pty-{self.path}")
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the terminal."""
        self._stop.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        self._waker.close()

    def _serve(self) -> None:
        session = self.device.session()
        while not self._stop.is_set() and _readable(self._master, self._waker):
            try:
                data = os.read(self._master, _CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                return
            try:
                reply = session.feed(data)
            except ConnectionAbortedError:
                session = self.device.session()  # the line is lost; a serial link has no connection
                continue
            except Exception:
                _log.exception("%s: device failed", self.path)
                continue
            self._write_all(reply)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [self._master], [], _POLL_S)
            if not writable:
                continue
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                continue
            except OSError:
                return


class SimServer:
    """Serve several devices at once: each on its own TCP port, some also on a pty.

    A context manager: ``with SimServer(devices) as server: server.uris["smu"]``.

    Parameters
    ----------
    devices : mapping of str to LineDevice
        The instruments by name.
    host : str
        Address to bind.
    ports : mapping of str to int, optional
        Fixed ports by device name; the others take ephemeral ports.
    pty : iterable of str
        Names of the devices also served on a pseudo-terminal.
    """

    def __init__(self, devices: Mapping[str, LineDevice], *, host: str = "127.0.0.1",
                 ports: Mapping[str, int] | None = None, pty: tuple[str, ...] = ()) -> None:
        ports = dict(ports or {})
        unknown = sorted(set(ports) - set(devices)) + sorted(set(pty) - set(devices))
        if unknown:
            raise ValueError(f"no device named {', '.join(unknown)}; have {', '.join(devices)}")
        self._tcp = {name: TcpServer(device, host=host, port=ports.get(name, 0))
                     for name, device in devices.items()}
        self._blas_held = False
        self._pty = {name: PtyServer(devices[name]) for name in pty}

    @property
    def uris(self) -> dict[str, str]:
        """VISA resource of every device: ``TCPIP0::127.0.0.1::<port>::SOCKET``."""
        return {name: server.resource for name, server in self._tcp.items()}

    @property
    def pty_paths(self) -> dict[str, str]:
        """Pseudo-terminal path of every device served on one (open it with ``serial.Serial``)."""
        return {name: server.path for name, server in self._pty.items()}

    def lab_uris(self) -> dict[str, str]:
        """URIs for a lab file: ``visa://TCPIP0::...::SOCKET``, the pty as ``serial://<path>``."""
        uris = {name: f"visa://{resource}" for name, resource in self.uris.items()}
        uris.update({name: f"serial://{path}" for name, path in self.pty_paths.items()})
        return uris

    def start(self) -> SimServer:
        """Start every server (stopping those already started if one fails); one BLAS thread until
        :meth:`stop`."""
        started: list[Any] = []
        _one_blas_thread.__enter__()
        try:
            for server in [*self._tcp.values(), *self._pty.values()]:
                server.start()
                started.append(server)
        except BaseException:
            for server in started:
                server.stop()
            _one_blas_thread.__exit__(None, None, None)
            raise
        self._blas_held = True
        return self

    def stop(self) -> None:
        """Stop every server and wait for its threads (idempotent); BLAS threads as before :meth:`start`."""
        for server in [*self._tcp.values(), *self._pty.values()]:
            server.stop()
        if self._blas_held:
            self._blas_held = False
            _one_blas_thread.__exit__(None, None, None)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LabServer(SimServer):
    """A :class:`SimServer` for a whole :class:`SimLab`: every device on TCP, the board on a pty.

    ``server.lab`` is the lab, so tests can read the truth and inject faults while clients talk.
    """

    def __init__(self, lab: Any, *, host: str = "127.0.0.1",
                 ports: Mapping[str, int] | None = None) -> None:
        super().__init__(lab.devices, host=host, ports=ports, pty=("board",))
        self.lab = lab
