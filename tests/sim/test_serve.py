"""One suite over the three ways of serving the lab: in process, TCP through pyvisa, pty through
pyserial; then what a server must survive, and ``crossbar sim serve`` itself."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvisa
import serial

from crossbar_ctl.core.config import SimArrayConfig
from sim._lab import SimLab
from sim._serve import LabServer, TcpServer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = SimArrayConfig(rows=6, cols=5, branches=4, seed=5, relative_noise=0.0,  # ideal: exact readings
                        noise_floor_fraction=0.0, drift_per_hour=0.0, profile="ideal")


class InProcess:
    def __init__(self, device) -> None:
        self.device = device

    def write(self, text: str) -> None:
        assert self.device.feed(text.encode() + b"\n") == b""

    def query(self, text: str) -> str:
        reply = self.device.feed(text.encode() + b"\n")
        assert reply.endswith(b"\n") and reply.count(b"\n") == 1
        return reply[:-1].decode()

    def close(self) -> None:
        pass


class Visa:
    def __init__(self, manager: pyvisa.ResourceManager, resource: str) -> None:
        self.inst = manager.open_resource(resource, read_termination="\n",
                                          write_termination="\n", timeout=2000)

    def write(self, text: str) -> None:
        self.inst.write(text)

    def query(self, text: str) -> str:
        return self.inst.query(text)

    def close(self) -> None:
        self.inst.close()


class Serial:
    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=2)

    def write(self, text: str) -> None:
        self.port.write(text.encode() + b"\n")

    def query(self, text: str) -> str:
        self.write(text)
        line = self.port.readline()
        assert line.endswith(b"\n"), f"no reply to {text!r}"
        return line[:-1].decode()

    def close(self) -> None:
        self.port.close()


@pytest.fixture(scope="module")
def visa() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


@pytest.fixture
def served() -> Iterator[LabServer]:
    with LabServer(SimLab(CONFIG)) as server:
        yield server


def connect(kind: str, name: str, server: LabServer, visa: pyvisa.ResourceManager):
    if kind == "inproc":
        return InProcess(server.lab.devices[name])
    if kind == "tcp":
        return Visa(visa, server.uris[name])
    return Serial(server.pty_paths[name])


@pytest.mark.parametrize("kind", ["inproc", "tcp", "pty"])
def test_board_over_every_transport(kind: str, served: LabServer, visa) -> None:
    board = connect(kind, "board", served, visa)
    try:
        assert board.query("*IDN?") == "OK CROSSBAR-CTL,SB-1,0001,1.0"
        assert board.query("GEOM?") == "OK 6 5 4"
        assert board.query("SET 2 3 5") == "OK"
        assert board.query("GET? 2 3") == "OK 5"
        assert board.query("ROUTE ROW 2 SRC") == "OK"
        reply = board.query("MVM 0,0,0.5,0,0,0")
        assert reply.startswith("OK ")
        currents = np.array([float(x) for x in reply[3:].split(",")])
        assert currents[3] == pytest.approx(0.5 * served.lab.array.cell_conductance_s()[2, 3],
                                             rel=0.01)
        assert board.query("SET 9 9 1") == "ERR 3 out of range"
        assert board.query("ERR?") == "OK 3 out of range"
        assert board.query("ERR?") == "OK 0 No error"
    finally:
        board.close()


@pytest.mark.parametrize("kind", ["inproc", "tcp"])
def test_smu_and_matrix_over_every_transport(kind: str, served: LabServer, visa) -> None:
    smu, matrix = connect(kind, "smu", served, visa), connect(kind, "matrix", served, visa)
    try:
        assert smu.query("*IDN?").startswith("KEITHLEY INSTRUMENTS,MODEL 2450")
        assert matrix.query("*IDN?") == "Agilent Technologies,E5250A,0,B.01.06"
        matrix.write(":CLOS (@00101,00207)")
        assert matrix.query(":CLOS:CARD? 0") == "(@00101,00207)"
        served.lab.devices["board"].feed(b"SET 0 0 1\nROUTE ROW 0 SRC\nROUTE COL 0 SENSE\n")
        smu.write(":SOUR:VOLT 0.25;:SOUR:VOLT:ILIM 1e-2;:SENS:CURR:NPLC 0.1;:OUTP ON")
        assert float(smu.query(":READ?")) == pytest.approx(0.25 * served.lab.conductance_s(),
                                                           rel=1e-8)
        smu.write(":SOUR:VOLT 500")
        assert smu.query(":SOUR:VOLT?;:SYST:ERR?") == '2.500000000E-01;-222,"Data out of range"'
        assert smu.query("SYST:ERR?") == '0,"No error"'
    finally:
        smu.close()
        matrix.close()


def test_measure_a_branch_through_pyserial_and_pyvisa(served: LabServer, visa) -> None:
    board, smu = Serial(served.pty_paths["board"]), Visa(visa, served.uris["smu"])
    try:
        for command in ("SET 4 1 8", "ROUTE ROW 4 SRC", "ROUTE COL 1 SENSE"):
            assert board.query(command) == "OK"
        smu.write(":SOUR:VOLT 0.1;:SOUR:VOLT:ILIM 1e-2;:OUTP ON")
        measured = float(smu.query(":READ?")) / 0.1
    finally:
        board.close()
        smu.close()
    assert measured == pytest.approx(served.lab.array.branch_conductance_s()[4, 1, 3], rel=0.01)


# --------------------------------------------------------------------------------------------
# What the TCP server survives
# --------------------------------------------------------------------------------------------


def raw(server: LabServer, name: str) -> socket.socket:
    port = int(server.uris[name].split("::")[2])
    return socket.create_connection(("127.0.0.1", port), timeout=2)


def read_line(sock: socket.socket, lines: int = 1) -> bytes:
    data = b""
    while data.count(b"\n") < lines:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_disconnect_mid_command_garbage_and_long_lines(served: LabServer) -> None:
    with raw(served, "smu") as sock:
        sock.sendall(b":SOUR:VOLT 0.1;:OUTP O")  # and vanish mid-command
    with raw(served, "smu") as sock:
        sock.sendall(bytes(range(256)) * 1000 + b"\n")  # 256 kB of garbage, one line
        sock.sendall(b"\xff" * 100_000)  # a line that never ends...
        sock.sendall(b"\n*IDN?;:OUTP?;:SOUR:VOLT?\n")
        assert read_line(sock) == (b"KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b;0;"
                                   b"0.000000000E+00\n")
    with raw(served, "board") as sock:
        sock.sendall(b"SET 0 0 1" + b"1" * 70_000 + b"\nGET? 0 0\n")
        assert read_line(sock, 2) == b"ERR 4 line too long\nOK 0\n"


def test_overflowing_parameters_keep_the_connection(served: LabServer) -> None:
    with raw(served, "smu") as sock:
        sock.sendall(b":OUTP 1e999\n:SOUR:VOLT:RANG:AUTO 1e999\n:SOUR:VOLT 1e40000\n"
                     b"SYST:ERR?;:SYST:ERR?;:SYST:ERR?;:OUTP?\n")
        assert read_line(sock) == (b'-222,"Data out of range";-222,"Data out of range";'
                                   b'-123,"Exponent too large";0\n')
    with raw(served, "matrix") as sock:
        sock.sendall(b":AGND 0,1e999\n:CLOS (@" + b",".join([b"00101:01011"] * 1000) + b")\n"
                     b"SYST:ERR?;:SYST:ERR?;:CLOS:CARD? 0\n")
        assert read_line(sock) == b'-222,"Data out of range";-223,"Too much data";(@)\n'


def test_half_closed_client_still_gets_its_reply(served: LabServer) -> None:
    with raw(served, "matrix") as sock:
        sock.sendall(b"*IDN?\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_line(sock) == b"Agilent Technologies,E5250A,0,B.01.06\n"
        assert sock.recv(10) == b""  # then the server closes its side


def test_drop_and_hang_faults_over_pyvisa(served: LabServer, visa) -> None:
    smu = served.lab.devices["smu"]
    smu.inject_fault("drop", count=1)
    client = Visa(visa, served.uris["smu"])
    client.inst.timeout = 500
    try:
        with pytest.raises(pyvisa.errors.VisaIOError):
            client.query("*IDN?")
    finally:
        client.close()
    client = Visa(visa, served.uris["smu"])  # a new connection works
    try:
        assert client.query("*IDN?").startswith("KEITHLEY")
        smu.inject_fault("hang")
        client.inst.timeout = 200
        with pytest.raises(pyvisa.errors.VisaIOError):
            client.query("*IDN?")
        smu.clear_fault()
    finally:
        client.close()


def test_garbage_fault_reaches_pyserial(served: LabServer) -> None:
    served.lab.devices["board"].inject_fault("garbage", count=1)
    board = Serial(served.pty_paths["board"])
    try:
        board.write("*IDN?")
        line = board.port.readline()
        assert line.endswith(b"\n") and not line.startswith(b"OK")
        assert board.query("*IDN?") == "OK CROSSBAR-CTL,SB-1,0001,1.0"
    finally:
        board.close()


def test_server_stops_with_clients_connected() -> None:
    lab = SimLab(CONFIG)
    server = LabServer(lab).start()
    idle = raw(server, "smu")
    busy = raw(server, "board")
    busy.sendall(b"*IDN?\n")
    pty = serial.Serial(server.pty_paths["board"], timeout=1)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    assert read_line(idle) == b""  # closed by the server
    idle.close()
    busy.close()
    pty.close()


def _fixed_port_candidates() -> Iterator[int]:
    """Ports below Linux's ephemeral range (32768 up), which the kernel never hands out for a port
    0 bind or an outgoing connection; the start depends on the process so parallel runs differ."""
    start = os.getpid() % 10_000
    for attempt in range(50):
        yield 20_000 + (start + 211 * attempt) % 10_000


def test_fixed_ports_and_unknown_names() -> None:
    # A port probed free and closed can be taken before the server binds it (another process, or
    # an ephemeral port of any connection): take fixed ports the kernel never assigns, and try
    # the next one if someone bound it explicitly.
    for port in _fixed_port_candidates():
        try:
            server = LabServer(SimLab(CONFIG), ports={"matrix": port}).start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        break
    else:
        pytest.fail("no free fixed port among 50 candidates")
    try:
        assert server.uris["matrix"] == f"TCPIP0::127.0.0.1::{port}::SOCKET"
        assert server.lab_uris()["board"] == f"serial://{server.pty_paths['board']}"
    finally:
        server.stop()
    with pytest.raises(ValueError, match="no device named"):
        LabServer(SimLab(CONFIG), ports={"dmm": 5025})
    server = TcpServer(SimLab(CONFIG).devices["smu"])
    server.start()
    server.stop()


# --------------------------------------------------------------------------------------------
# crossbar sim serve
# --------------------------------------------------------------------------------------------


def test_cli_serves_until_interrupted(tmp_path: Path, visa) -> None:
    lab_file = tmp_path / "lab.toml"
    lab_file.write_text('[sim]\nrows = 4\ncols = 4\nbranches = 2\n\n'
                        '[instruments.source_meter]\nuri = "sim://smu"\nmodel = "keithley2400"\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "crossbar_ctl.cli._main", "sim", "serve", "--config", str(lab_file),
         "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        text = ""
        while not text.rstrip().endswith("]"):
            line = process.stdout.readline()
            assert line, process.stderr.read()
            text += line
        rows = {(row["device"], row["uri"].split(":", 1)[0]): row for row in json.loads(text)}
        smu = Visa(visa, rows["smu", "visa"]["address"])
        try:
            assert smu.query("*IDN?").startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400")
        finally:
            smu.close()
        board = Serial(rows["board", "serial"]["address"])
        try:
            assert board.query("GEOM?") == "OK 4 4 2"
        finally:
            board.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_bad_config_is_one_line(tmp_path: Path) -> None:
    lab_file = tmp_path / "lab.toml"
    lab_file.write_text("[sim]\nrows = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "crossbar_ctl.cli._main", "sim", "serve", "--config", str(lab_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "sim.rows" in result.stderr


def test_an_idle_server_sleeps_until_a_line_or_stop(monkeypatch):
    import select as real_select

    import sim._serve as serve

    calls = []

    def counting_select(*args):
        calls.append(args[3] if len(args) > 3 else None)  # the timeout (None: blocking)
        return real_select.select(*args)

    monkeypatch.setattr(serve, "select", type("select", (), {"select": staticmethod(counting_select)}))
    lab = SimLab(CONFIG)
    server = LabServer(lab).start()
    try:
        port = serial.Serial(server.pty_paths["board"], timeout=2)
        port.write(b"GEOM?\n")
        assert port.read_until(b"\n") == b"OK 6 5 4\n"
        time.sleep(0.5)  # idle: with a 0.1 s poll, 4 accept and pty threads made about 20 calls
        idle = len(calls)
        time.sleep(0.5)
        assert len(calls) == idle and calls.count(None) >= 4  # no call since: 4 threads blocked
        port.close()
    finally:
        server.stop()
    assert len(calls) <= idle + 2


def test_a_served_lab_holds_blas_to_one_thread_until_it_stops():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl controls")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # as on a 2-core machine
        server = LabServer(SimLab(CONFIG)).start()
        assert blas_threads() == {1}   # the client's and the simulator's threads share no pool
        server.stop()
        assert blas_threads() == {2}
        server.stop()                   # idempotent: released once
        assert blas_threads() == {2}
