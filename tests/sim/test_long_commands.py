"""Long commands: memory stays bounded, the manual's limits are refused cleanly, and one long
SMU sweep cannot starve the other instruments of the lab (the lab lock is held per chunk)."""

from __future__ import annotations

import select
import socket
import time
import tracemalloc

import pytest

from crossbar_ctl.core.config import SimArrayConfig
from sim._keithley import SimKeithley2450
from sim._lab import SimLab
from sim._serve import LabServer
from tests.sim.test_keithley import Resistor

CONFIG = SimArrayConfig(rows=4, cols=4, branches=2, seed=3)


def sweep_peak_bytes(count: int) -> int:
    """Peak bytes allocated by a one-level list sweep run ``count`` times into a 10-point buffer."""
    smu = SimKeithley2450(Resistor(1e-4))
    smu.feed(f':SENS:CURR:NPLC 0.01;:TRAC:POIN 10;:SOUR:LIST:VOLT 0.1;'
             f':SOUR:SWE:VOLT:LIST 1,0,{count}\n'.encode())
    tracemalloc.start()
    try:
        smu.feed(b":INIT\n")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert smu.errors == []
        assert smu.feed(b":TRAC:ACT?\n") == b"10\n"


def test_sweep_memory_does_not_grow_with_its_length() -> None:
    # Chunks of 10,000 points: about 1 MB at most, whatever the count (was 8 bytes and more per
    # point: a 268,435,455-run sweep asked for tens of GB).
    short, long = sweep_peak_bytes(20_000), sweep_peak_bytes(400_000)
    assert long < 1.2 * short
    assert long < 2e6


def test_sweeps_beyond_what_the_simulator_runs_are_refused() -> None:
    smu = SimKeithley2450(Resistor(1e-4))
    start = time.perf_counter()
    smu.feed(b":SOUR:LIST:VOLT 0.1;:SOUR:SWE:VOLT:LIST 1,0,268435455;:INIT\n"
             b":SOUR:SWE:VOLT:LIN 0,1,5,0,0;:INIT\n"  # count 0: run forever
             b":SOUR:SWE:VOLT:LIN 0,1,5,0,268435456\n"  # beyond the manual's maximum
             b":TRAC:POIN 5000000;:TRAC:MAKE \"big\",1000\n")
    assert time.perf_counter() - start < 1
    assert smu.errors == [-225, -225, -222, -225]
    assert smu.feed(b":TRAC:ACT?;:OUTP?\n") == b"0;0\n"  # nothing ran, the output stays off


def test_a_board_query_completes_while_a_long_sweep_runs() -> None:
    lab = SimLab(CONFIG)
    points = 3_000_000  # about 1 s of work on a 2-core machine
    step_s = 0.01 / 60
    with LabServer(lab) as server:
        ports = {name: int(uri.split("::")[2]) for name, uri in server.uris.items()}
        with socket.create_connection(("127.0.0.1", ports["smu"]), timeout=30) as smu, \
                socket.create_connection(("127.0.0.1", ports["board"]), timeout=30) as board:
            smu.sendall(f":SENS:CURR:NPLC 0.01;:SOUR:LIST:VOLT 0.1;"
                        f":SOUR:SWE:VOLT:LIST 1,0,{points}\n".encode())
            start_s = lab.time_s
            smu.sendall(b":INIT;*OPC?\n")
            while lab.time_s == start_s:  # the sweep has begun
                time.sleep(0.005)
            board.sendall(b"*IDN?\n")
            assert board.recv(100).startswith(b"OK CROSSBAR-CTL")
            progress = (lab.time_s - start_s) / (points * step_s)
            smu_done, _, _ = select.select([smu], [], [], 0)
            assert not smu_done and progress < 0.9  # answered mid-sweep, not after it
            assert smu.recv(100) == b"1\n"
    assert lab.time_s - start_s == pytest.approx(points * step_s, rel=1e-6)
