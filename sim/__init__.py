"""Physics and simulated instruments: the array model, the exact circuit solver, the lab."""

from crossbar_ctl.core.circuit import CircuitSolution, CrossbarCircuit
from sim._array import PhysicalArray
from sim._spice import find_ngspice, solve_with_ngspice, spice_netlist
from sim._board import SimSwitchBoard, crc16
from sim._keithley import OVERFLOW, SimKeithley2400, SimKeithley2450
from sim._lab import SMU_MODELS, SimLab
from sim._matrix import SimSwitchMatrix
from sim._scpi import FAULT_KINDS, LineDevice, ScpiDevice, ScpiError, scpi
from sim._serve import LabServer, PtyServer, SimServer, TcpServer

__all__ = [
    "CircuitSolution",
    "CrossbarCircuit",
    "PhysicalArray",
    "find_ngspice",
    "solve_with_ngspice",
    "spice_netlist",
    "FAULT_KINDS",
    "OVERFLOW",
    "SMU_MODELS",
    "LabServer",
    "LineDevice",
    "PtyServer",
    "ScpiDevice",
    "ScpiError",
    "SimKeithley2400",
    "SimKeithley2450",
    "SimLab",
    "SimServer",
    "SimSwitchBoard",
    "SimSwitchMatrix",
    "TcpServer",
    "crc16",
    "scpi",
]
