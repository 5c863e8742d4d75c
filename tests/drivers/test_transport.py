"""The transport layer: URIs, framing, logging, locking, Ctrl-C, error translation, reconnects."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from crossbar_ctl.core.errors import ConfigError, ConnectionLost, InstrumentTimeout, ProtocolError
from drivers import SerialTransport, SimTransport, open_transport


class Echo:
    """Answers every line with ``echo <line>``; can be told to misbehave."""

    def __init__(self):
        self.mode = None
        self.lines = []
        self.drops_left = 0

    def feed(self, data):
        self.lines.append(data)
        if self.drops_left:
            self.drops_left -= 1
            raise ConnectionAbortedError("dropped")
        if self.mode == "hang" or data.startswith(b"W"):
            return b""
        if self.mode == "garbage":
            return b"\xff\xfe\n"
        if self.mode == "two":
            return b"first\nsecond\n"
        return b"echo " + data


def test_sim_transport_query_write_read():
    device = Echo()
    t = open_transport("sim://dev", devices={"dev": device})
    assert isinstance(t, SimTransport) and t.address == "sim://dev"
    assert t.query("*IDN?") == "echo *IDN?"
    t.write("WRITE ONLY")
    assert device.lines[-1] == b"WRITE ONLY\n"
    device.mode = "two"
    assert t.query("Q") == "first"
    assert t.read() == "second"
    assert t.round_trips == 3


def test_hang_is_a_timeout_naming_address_and_command():
    device = Echo()
    device.mode = "hang"
    t = open_transport("sim://dev", devices={"dev": device}, timeout_s=0.01)
    with pytest.raises(InstrumentTimeout) as info:
        t.query("MEAS?")
    assert isinstance(info.value, TimeoutError)
    assert info.value.address == "sim://dev" and info.value.command == "MEAS?"


def test_garbage_is_a_protocol_error():
    device = Echo()
    device.mode = "garbage"
    t = open_transport("sim://dev", devices={"dev": device})
    with pytest.raises(ProtocolError, match="not ASCII.*MEAS"):
        t.query("MEAS?")


def test_a_dropped_connection_is_reopened_then_given_up():
    device = Echo()
    t = open_transport("sim://dev", devices={"dev": device}, reconnects=1)
    device.drops_left = 1
    assert t.query("A?") == "echo A?"            # dropped once, reopened, resent
    device.drops_left = 2
    with pytest.raises(ConnectionLost, match="^link lost: connection dropped .*again after reopening it 1x") as info:
        t.query("B?")
    assert isinstance(info.value, ConnectionError) and info.value.command == "B?"
    assert t.query("C?") == "echo C?"            # the next exchange reopens again


def test_no_reconnects_means_the_first_drop_is_final():
    device = Echo()
    t = open_transport("sim://dev", devices={"dev": device}, reconnects=0)
    device.drops_left = 1
    with pytest.raises(ConnectionLost, match=r"^link lost: connection dropped \(dropped\) \(instrument"):
        t.query("A?")


class Unreachable(Echo):
    """Drops the link, then refuses to reopen it (the instrument was switched off)."""

    def __init__(self):
        super().__init__()
        self.off = False

    def session(self):
        if self.off:
            raise ConnectionRefusedError("connection refused")
        return self


def test_a_lost_link_says_so_first_names_role_and_address_and_abbreviates_the_command():
    device = Unreachable()
    t = open_transport("sim://board", devices={"board": device}, role="switch_board")
    device.drops_left, device.off = 1, True
    command = "MVM " + ",".join(["0.125"] * 64)
    with pytest.raises(ConnectionLost) as info:
        t.query(command)
    message = str(info.value)
    assert message.startswith("link to the switch_board lost: connection dropped (dropped); "
                              "reopening failed: connection refused (instrument sim://board, ")
    assert "0.125,0.125" in message and command not in message and f"({len(command)} characters)" in message
    assert info.value.command == command and len(message) < 200
    with pytest.raises(ConnectionLost, match="^link to the switch_board lost: dropped earlier; reopening failed"):
        t.query("B?")


def test_a_timeout_names_the_lab_file_setting_to_raise():
    device = Echo()
    device.mode = "hang"
    t = open_transport("sim://smu", devices={"smu": device}, timeout_s=0.01, role="source_meter")
    with pytest.raises(InstrumentTimeout, match=r"no reply within 0\.01 s; if the instrument needs longer, "
                                                r"raise instruments\.source_meter\.timeout_s in the lab file"):
        t.query(":TRAC:DATA? 1, 4")


def test_closed_transport_refuses():
    t = open_transport("sim://dev", devices={"dev": Echo()})
    t.close()
    t.close()
    with pytest.raises(ConnectionLost, match="closed"):
        t.query("A?")


@pytest.mark.parametrize("uri", ["nonsense", "ftp://x", "sim://missing", "sim://"])
def test_bad_uris(uri):
    with pytest.raises(ConfigError):
        open_transport(uri, devices={"dev": Echo()})


def test_unreachable_visa_instrument_is_connection_lost():
    with pytest.raises(ConnectionLost, match="cannot open"):
        open_transport("visa://TCPIP0::127.0.0.1::1::SOCKET", timeout_s=0.2)


def test_unreachable_serial_port_is_connection_lost():
    with pytest.raises(ConnectionLost, match="cannot open"):
        open_transport("serial:///dev/does-not-exist", timeout_s=0.2)


def test_serial_loop_url_and_timeout():
    t = open_transport("serial://loop://", timeout_s=0.05)
    assert isinstance(t, SerialTransport)
    t.write("hello")
    assert t.read() == "hello"
    with pytest.raises(InstrumentTimeout, match="read"):
        t.read()
    t.close()


def test_serial_replies_are_read_in_chunks_not_bytes():
    t = open_transport("serial://loop://", timeout_s=0.5)
    line = ",".join(f"{k:.9e}" for k in range(64))  # a readout reply's length, about 1 kB
    t.write(line + "\n" + "next")                   # two lines arrive at once: the second is kept
    assert t.read() == line
    assert t.read() == "next"
    assert t.port_reads <= 3  # pyserial's read_until: one read per byte, over 1,000
    t.close()


def test_every_exchange_is_logged_at_debug(caplog):
    t = open_transport("sim://dev", devices={"dev": Echo()})
    with caplog.at_level(logging.DEBUG, logger="drivers.transport"):
        t.query("X?")
    assert "sim://dev <- X?" in caplog.text and "sim://dev -> echo X?" in caplog.text


def test_timeout_must_be_positive():
    t = open_transport("sim://dev", devices={"dev": Echo()})
    with pytest.raises(ValueError):
        t.timeout_s = 0
    t.timeout_s = 0.5
    assert t.timeout_s == 0.5


def test_queries_from_threads_do_not_interleave():
    class Slow:
        def feed(self, data):
            threading.Event().wait(0.0005)   # let the other thread run mid-exchange
            return b"re " + data

    t = open_transport("sim://dev", devices={"dev": Slow()})
    mismatches = []

    def worker(name):
        for k in range(50):
            command = f"{name}{k}"
            if t.query(command) != "re " + command:
                mismatches.append(command)

    threads = [threading.Thread(target=worker, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not mismatches


def test_ctrl_c_is_deferred_until_the_exchange_completes():
    class InterruptedMidway:
        def __init__(self):
            self.completed = False

        def feed(self, data):
            os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C arrives while the instrument works
            self.completed = True
            return b"done\n"

    device = InterruptedMidway()
    t = open_transport("sim://dev", devices={"dev": device})
    with pytest.raises(KeyboardInterrupt):
        t.query("LONG?")
    assert device.completed


def test_ctrl_c_outside_an_exchange_is_immediate():
    """In a fresh interpreter, as a lab user's command runs: after an exchange has installed the
    shield, a Ctrl-C between exchanges interrupts a 10 s wait at once. (In process it depended on
    the SIGINT handler that whatever ran before in the same test worker had left.)"""
    program = textwrap.dedent("""
        import os, signal, threading, time
        from drivers import open_transport
        class Echo:
            def feed(self, data):
                return b"echo " + data
        open_transport("sim://dev", devices={"dev": Echo()}).query("X?")
        start = time.monotonic()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(10.0)
        except KeyboardInterrupt:
            print(f"interrupted after {time.monotonic() - start:.3f} s")
        """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                          check=False, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interrupted after ")
    assert float(done.stdout.split()[2]) < 1.0


class _LateServer:
    """A loopback TCP instrument that answers ``SLOW`` lines only after ``delay_s``."""

    def __init__(self, delay_s):
        import socket

        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection):
        buffer = b""
        with connection:
            try:
                while data := connection.recv(4096):
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.startswith(b"SLOW"):
                            threading.Event().wait(self.delay_s)
                        connection.sendall(b"reply " + line + b"\n")
            except OSError:
                pass  # the client went away


@pytest.mark.parametrize("scheme", ["visa", "serial"])
def test_a_late_reply_after_a_timeout_is_discarded(scheme):
    server = _LateServer(delay_s=0.3)
    uri = (f"visa://TCPIP0::127.0.0.1::{server.port}::SOCKET" if scheme == "visa"
           else f"serial://socket://127.0.0.1:{server.port}")
    t = open_transport(uri, timeout_s=0.15)
    with pytest.raises(InstrumentTimeout):
        t.query("SLOW?")
    threading.Event().wait(0.3)                # the late reply arrives now
    assert t.query("FAST?") == "reply FAST?"   # not "reply SLOW?"
    t.close()
    server.listener.close()
