"""The simulated lab: one physical array behind a source-measure unit, a switch board and a matrix.

The SMU's measurement (docs/internals.md): HI drives the lines routed to it, LO holds the lines
routed to it at 0 V and reports the current returning through them (a column's through its sense
resistance), ground routes hold their lines at 0 V, floating lines are left open. The routing comes
from the board (rows ``SRC``/``GND``/``FLOAT``, columns ``SENSE``/``GND``/``FLOAT``) or, with
``routing="matrix"``, from the switch matrix (input 1 = HI, input 2 = LO, outputs ``1..rows`` the
rows and ``rows+1..rows+cols`` the columns; an output on no input is grounded in ground mode,
floating otherwise). A line on both HI and LO shorts the SMU, which then sits at its limit.

The array is linear, so the current is the conductance HI sees times the voltage: one exact solve
per switch and routing configuration gives every reading and every list sweep.

Simulated time: every reading advances it by NPLC / 60 s. Drift makes every time step a new
circuit, so the lab passes time to the array in steps of at most ``time_step_s`` (default 1 s of
simulated time; the random walk of the drift has the same distribution at every step boundary).
:meth:`SimLab.sync_time` hands over the remainder. Days pass in one step as cheaply as a second
(``SimLab.advance_time``; ``crossbar_ctl._lab.advance_sim_time`` on a lab), and a lab opened with
``[sim] start_time_s`` is the same board that much later.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from crossbar_ctl.core.config import SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim._array import PhysicalArray
from sim._board import SimSwitchBoard
from sim._keithley import SimKeithley2400, SimKeithley2450
from sim._matrix import SimSwitchMatrix
from sim._physics import physics_rng
from sim._scpi import LineDevice

__all__ = ["SMU_MODELS", "SimLab"]

SMU_MODELS = ("keithley2450", "keithley2400")


class _Terminals:
    """Which lines HI drives, which LO senses and which are grounded: six ``bool`` vectors."""

    def __init__(self, hi_rows, lo_rows, gnd_rows, hi_cols, lo_cols, gnd_cols) -> None:
        self.hi_rows, self.lo_rows, self.gnd_rows = hi_rows, lo_rows, gnd_rows
        self.hi_cols, self.lo_cols, self.gnd_cols = hi_cols, lo_cols, gnd_cols
        self.shorted = bool((hi_rows & lo_rows).any() or (hi_cols & lo_cols).any())
        self.open = not (hi_rows.any() or hi_cols.any()) or not (lo_rows.any() or lo_cols.any())
        self.row_connected = hi_rows | lo_rows | gnd_rows
        self.col_connected = hi_cols | lo_cols | gnd_cols


class _ArrayLoad:
    """The array as the SMU sees it through the routing (the :class:`sim._keithley.Load`)."""

    def __init__(self, lab: SimLab) -> None:
        self._lab = lab
        self._route_key: tuple[str, int] | None = None
        self._terminals: _Terminals | None = None
        self._cached: tuple[Any, float, Any] | None = None  # (circuit, conductance, solution)
        self._flatness: tuple[Any, float] | None = None  # (circuit, response A/V^2)

    def terminals(self) -> _Terminals:
        lab = self._lab
        source = lab.board if lab.routing == "board" else lab.matrix
        key = (lab.routing, source.version)
        if key != self._route_key or self._terminals is None:
            self._terminals = lab._board_terminals() if lab.routing == "board" else lab._matrix_terminals()
            self._route_key = key
            self._cached = None
        return self._terminals

    def conductance_s(self) -> float:
        terminals = self.terminals()
        if terminals.shorted:
            return math.inf
        if terminals.open:
            return 0.0
        circuit = self._lab.array.circuit(terminals.row_connected, terminals.col_connected)
        if self._cached is None or self._cached[0] is not circuit:
            solution = circuit.solve(terminals.hi_rows.astype(float), terminals.hi_cols.astype(float))
            self._cached = (circuit, float(self._lo_current_a(solution)[0]), solution)
        return self._cached[1]

    def _lo_current_a(self, solution) -> np.ndarray:
        """Current into LO for each solve of a batch, A ``(batch,)``."""
        terminals = self._terminals
        return (solution.col_current_a[:, terminals.lo_cols].sum(axis=1)
                - solution.row_current_a[:, terminals.lo_rows].sum(axis=1))

    def _response_a(self, circuit, offset_s: np.ndarray) -> np.ndarray:
        """Extra LO current per volt at HI for cell conductance offsets (batch, rows, cols), A/V.

        First order (see :meth:`PhysicalArray.solve`): the offsets' currents at the unit drive's
        node voltages, injected into the same network with every terminal at 0 V.
        """
        solution = self._cached[2]
        flow = offset_s * np.nan_to_num(solution.row_node_voltage_v - solution.col_node_voltage_v)
        array = self._lab.array
        response = circuit.solve(np.zeros(array.rows), np.zeros(array.cols),
                                 row_node_current_a=-flow, col_node_current_a=flow)
        return self._lo_current_a(response)

    def current_a(self, source_v: np.ndarray, integration_s: float, step_s: float) -> np.ndarray:
        """Current into LO at each point of a list sourced at HI from now on, A.

        Point k ends at ``now + (k + 1) step_s`` and integrates over its last ``integration_s``.
        Linear in the source voltage but for the switches: their flatness (the unit drive's row
        node voltages scale with the source, so the offset goes as ``V |V|``) and, for points
        within the settling of a switch write, their settling.
        """
        source_v = np.asarray(source_v, dtype=np.float64)
        conductance = self.conductance_s()
        current = conductance * source_v
        terminals = self.terminals()
        if terminals.shorted or terminals.open or not source_v.size:
            return current
        array, circuit = self._lab.array, self._cached[0]
        flatness = array.flatness_s_per_v()
        if flatness is not None:
            if self._flatness is None or self._flatness[0] is not circuit:
                row_v = np.nan_to_num(self._cached[2].row_node_voltage_v)
                response = self._response_a(circuit, -flatness * np.abs(row_v))
                self._flatness = (circuit, float(response[0]))
            current = current + self._flatness[1] * source_v * np.abs(source_v)
        starts_s = self.time_s + step_s * np.arange(1, source_v.size + 1) - integration_s
        near = starts_s < array.settled_s()
        if near.any():
            settling = array.settling_offset_s(starts_s[near], integration_s)
            current[near] += self._response_a(circuit, settling) * source_v[near]
        return current

    def read_noise(self, current_a: np.ndarray, range_a: float, nplc: float) -> np.ndarray:
        return self._lab.array.read_noise(current_a, range_a, nplc)

    def advance_time(self, duration_s: float) -> None:
        self._lab.advance_time(duration_s)

    @property
    def time_s(self) -> float:
        return self._lab.time_s


class SimLab:
    """A simulated lab: one :class:`PhysicalArray` and the instruments that reach it.

    Parameters
    ----------
    config : SimArrayConfig
        The array (geometry, resistors, wires, noise, faults, seed).
    smu_model : {"keithley2450", "keithley2400"}
        Which source-measure unit answers as ``devices["smu"]``.
    routing : {"board", "matrix"}
        Which instrument connects the SMU's terminals to the array's lines.
    language : {"SCPI", "TSP", "SCPI2400"}
        The 2450's command set (``*LANG?``), to test that drivers refuse the wrong one.
    time_step_s : float
        Largest step of simulated time handed to the array at once (see the module notes).

    Attributes
    ----------
    array : PhysicalArray
        The truth: resistors, switches, faults, temperature, time.
    devices : dict of str to LineDevice
        ``smu``, ``board`` and ``matrix``: byte-level interpreters (``feed``, faults).
    """

    def __init__(self, config: SimArrayConfig | None = None, *, smu_model: str = "keithley2450",
                 routing: str = "board", language: str = "SCPI", time_step_s: float = 1.0) -> None:
        config = config if config is not None else SimArrayConfig()
        if smu_model not in SMU_MODELS:
            raise ConfigError(f"smu_model = {smu_model!r}: the simulator has {', '.join(SMU_MODELS)}",
                              key="instruments.source_meter.model")
        if routing not in ("board", "matrix"):
            raise ConfigError(f"routing = {routing!r}: expected 'board' or 'matrix'",
                              key="instruments.routing")
        if not time_step_s > 0:
            raise ConfigError(f"time_step_s = {time_step_s!r}: must be > 0", key="time_step_s")
        self.config = config
        self.routing = routing
        self.time_step_s = float(time_step_s)
        self._pending_s = 0.0
        self.array = PhysicalArray(config, clock=lambda: self.time_s)
        if config.start_time_s > 0:  # the same board, opened later: drifted, at the set temperature
            self.array.advance_time(config.start_time_s)
            self.array.temperature_c = config.temperature_c
        self.lock = threading.RLock()
        seed = config.seed
        self.board = SimSwitchBoard(self.array, advance_time=self.advance_time, lock=self.lock,
                                    seed=seed + 1)
        self.matrix = SimSwitchMatrix(config.rows + config.cols, lock=self.lock, seed=seed + 2)
        self._load = _ArrayLoad(self)
        # The SMU's datasheet errors come from their own stream (readout.smu_source_error).
        accuracy = (physics_rng(seed, "smu") if self.array.physics.readout.smu_source_error
                    else None)
        if smu_model == "keithley2450":
            smu: LineDevice = SimKeithley2450(self._load, language=language, lock=self.lock,
                                              seed=seed + 3, accuracy=accuracy)
        else:
            smu = SimKeithley2400(self._load, lock=self.lock, seed=seed + 3, accuracy=accuracy)
        self.smu = smu
        self.devices: dict[str, LineDevice] = {"smu": smu, "board": self.board, "matrix": self.matrix}

    # ---- time --------------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        """Simulated time, including the part not yet handed to the array."""
        return self.array.time_s + self._pending_s

    def advance_time(self, duration_s: float) -> None:
        """Let simulated time pass (handed to the array in steps of ``time_step_s``)."""
        with self.lock:
            self._pending_s += duration_s
            if self._pending_s >= self.time_step_s:
                self.sync_time()

    def sync_time(self) -> None:
        """Hand all pending simulated time to the array now."""
        with self.lock:
            pending, self._pending_s = self._pending_s, 0.0
            if pending > 0:
                self.array.advance_time(pending)

    @property
    def temperature_c(self) -> float:
        """The array's temperature, degC; setting it (a step, as from a climate chamber) hands the
        pending simulated time over first, and the temperature wanders on from the value set."""
        return self.array.temperature_c

    @temperature_c.setter
    def temperature_c(self, value: float) -> None:
        with self.lock:
            self.sync_time()
            self.array.temperature_c = value

    # ---- the SMU's view of the routing -------------------------------------------------------
    def conductance_s(self) -> float:
        """The conductance the SMU sees between HI and LO now, S (``inf`` when shorted)."""
        with self.lock:
            return self._load.conductance_s()

    def _board_terminals(self) -> _Terminals:
        rows, cols = self.board.row_routes, self.board.col_routes
        return _Terminals(rows == "SRC", np.zeros(len(rows), bool), rows == "GND",
                          np.zeros(len(cols), bool), cols == "SENSE", cols == "GND")

    def _matrix_terminals(self) -> _Terminals:
        hi, lo = self.matrix.terminals()
        ground = ~self.matrix.connected_outputs() if self.matrix.ground else np.zeros_like(hi)
        r = self.config.rows
        return _Terminals(hi[:r], lo[:r], ground[:r], hi[r:], lo[r:], ground[r:])
