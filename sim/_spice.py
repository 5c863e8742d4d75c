"""A crossbar circuit as an ngspice netlist: the golden reference for the solver.

Every cell, wire segment (each with its own value), driver and sense resistance becomes a
resistor; a zero resistance becomes a 0 V source (as SPICE wants), a cell of zero conductance is
left out, and every connected line's terminal is a voltage source to ground whose current is the
terminal current.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from crossbar_ctl.core.errors import CrossbarError
from crossbar_ctl.core.circuit import CrossbarCircuit

__all__ = ["find_ngspice", "solve_with_ngspice", "spice_netlist"]

_PRINTED = re.compile(r"^i\((v[rc])(\d+)\)\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def find_ngspice() -> str | None:
    """Path of the ``ngspice`` executable, or ``None`` when it is not installed."""
    return shutil.which("ngspice")


def spice_netlist(circuit: CrossbarCircuit, row_voltage_v, col_voltage_v=None) -> str:
    """The circuit with one set of terminal voltages as an ngspice batch netlist.

    Parameters
    ----------
    circuit : CrossbarCircuit
        The prepared circuit (its conductances, wires, driver and sense resistances, scalars or
        per element, and connections are used).
    row_voltage_v : array_like, float (rows,)
        Source voltage of each row, V.
    col_voltage_v : array_like, float (cols,), optional
        Voltage held at each column's sense terminal, V (default 0 V).

    Returns
    -------
    str
        A netlist that runs an operating point and prints every terminal source current,
        ``i(vr<i>)`` and ``i(vc<j>)``, with 16 significant digits.
    """
    rows, cols = circuit.rows, circuit.cols
    vr = np.asarray(row_voltage_v, dtype=np.float64).reshape(rows)
    vc = np.zeros(cols) if col_voltage_v is None else np.asarray(col_voltage_v, float).reshape(cols)
    lines = [f"* crossbar {rows}x{cols}"]
    count = 0
    shape = (rows, cols)
    row_ohm = np.broadcast_to(circuit.row_wire_resistance_ohm, shape)
    col_ohm = np.broadcast_to(circuit.col_wire_resistance_ohm, shape)
    driver_ohm = np.broadcast_to(circuit.driver_resistance_ohm, (rows,))
    sense_ohm = np.broadcast_to(circuit.sense_resistance_ohm, (cols,))

    def resistor(a: str, b: str, ohm: float) -> None:
        nonlocal count
        ohm = float(ohm)
        count += 1
        # A zero resistance is an ideal connection: a 0 V source, never a tiny resistor.
        lines.append(f"vz{count} {a} {b} dc 0" if ohm == 0 else f"r{count} {a} {b} {ohm:.17g}")

    for i in range(rows):
        for j in range(cols):
            if circuit.conductance_s[i, j] > 0:
                resistor(f"r_{i}_{j}", f"c_{i}_{j}", 1.0 / circuit.conductance_s[i, j])
            if j + 1 < cols:
                resistor(f"r_{i}_{j}", f"r_{i}_{j + 1}", row_ohm[i, j + 1])
            if i + 1 < rows:
                resistor(f"c_{i}_{j}", f"c_{i + 1}_{j}", col_ohm[i, j])
    # The driver and the sense input are resistors of their own, in series with the line's
    # first / last segment (the solver adds them into one element).
    for i in np.flatnonzero(circuit.row_connected):
        lines.append(f"vr{i} rt_{i} 0 dc {vr[i]:.17g}")
        resistor(f"rt_{i}", f"rd_{i}", driver_ohm[i])
        resistor(f"rd_{i}", f"r_{i}_0", row_ohm[i, 0])
    for j in np.flatnonzero(circuit.col_connected):
        lines.append(f"vc{j} ct_{j} 0 dc {vc[j]:.17g}")
        resistor(f"c_{rows - 1}_{j}", f"cs_{j}", col_ohm[rows - 1, j])
        resistor(f"cs_{j}", f"ct_{j}", sense_ohm[j])
    printed = [f"i(vr{i})" for i in np.flatnonzero(circuit.row_connected)]
    printed += [f"i(vc{j})" for j in np.flatnonzero(circuit.col_connected)]
    lines += [
        ".options reltol=1e-14 abstol=1e-20 vntol=1e-16",
        ".control",
        "set numdgt=16",
        "op",
        *(f"print {name}" for name in printed),
        ".endc",
        ".end",
    ]
    return "\n".join(lines) + "\n"


def solve_with_ngspice(
    circuit: CrossbarCircuit, row_voltage_v, col_voltage_v=None, *, timeout_s: float = 120.0
) -> tuple[np.ndarray, np.ndarray]:
    """Terminal currents of one input vector, computed by ngspice.

    Returns
    -------
    row_current_a : ndarray, float64 (rows,)
        Current into the array from each row's source, A (0 for a floating row).
    col_current_a : ndarray, float64 (cols,)
        Current out of each column into its sense terminal, A (0 for a floating column).

    Raises
    ------
    CrossbarError
        ngspice is missing, fails, or prints fewer currents than expected.
    """
    executable = find_ngspice()
    if executable is None:
        raise CrossbarError("ngspice is not installed (Debian package 'ngspice')")
    netlist = spice_netlist(circuit, row_voltage_v, col_voltage_v)
    with tempfile.TemporaryDirectory(prefix="crossbar-spice-") as folder:
        path = Path(folder) / "crossbar.cir"
        path.write_text(netlist, encoding="ascii")
        try:
            done = subprocess.run([executable, "-b", str(path)], capture_output=True, text=True,
                                  timeout=timeout_s, check=False, cwd=folder)
        except subprocess.TimeoutExpired as exc:
            raise CrossbarError(f"ngspice took longer than {timeout_s:g} s") from exc
    row_current = np.zeros(circuit.rows)
    col_current = np.zeros(circuit.cols)
    found = 0
    for kind, index, value in _PRINTED.findall(done.stdout):
        # i(v) is the current into the source's + terminal (the line's terminal node).
        if kind.lower() == "vr":
            row_current[int(index)] = -float(value)
        else:
            col_current[int(index)] = float(value)
        found += 1
    expected = int(circuit.row_connected.sum() + circuit.col_connected.sum())
    # ngspice -b exits 1 after a .control block even on success: judge by what it printed.
    if found != expected:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CrossbarError(f"ngspice failed (exit {done.returncode}, {found} of {expected} "
                            f"currents): {' | '.join(tail)}")
    return row_current, col_current
