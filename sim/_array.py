"""The simulated physical array: cheap random resistors behind switches, wires, faults, drift.

Cell (row, col) holds ``branches`` resistor + switch branches in parallel; bit k of the cell's
mask closes branch k. Everything random is drawn from the config seed: the resistors and
switches from ``default_rng(seed)``, drift and read noise from their own streams spawned from
the same seed, so changing how often one is used never changes the others.
"""

from __future__ import annotations

from collections import OrderedDict
from weakref import WeakKeyDictionary

import numpy as np

from pydantic import ValidationError
from scipy.special import sici

from crossbar_ctl.core.config import Fault, SimArrayConfig, config_error
from crossbar_ctl.core.errors import ConfigError
from crossbar_ctl.core.circuit import CrossbarCircuit
from sim._physics import BoardPhysics, WirePhysics, board_physics, physics_rng

__all__ = ["PhysicalArray"]

_SECONDS_PER_HOUR = 3600.0
_CACHED_CIRCUITS = 16
_PLC_S = 1 / 60
_FLICKER_LOW_HZ = 1e-3
"""Lower edge of the 1/f noise band, Hz: slower wander is the drift's (a ~17-minute run)."""
_SETTLED_TAUS = 40.0
_UNITS_AFTER = 12
"""Distinct drive vectors of one circuit solved before its unit responses are built: they cost
about 11 single readings at 64 x 64 (85 ms against 7.7 ms, pcb)."""
"""A switch written this many time constants ago has settled (e**-40 ~ 4e-18)."""


class PhysicalArray:
    """The true state of a simulated array (what calibration tries to find).

    Parameters
    ----------
    config : SimArrayConfig or dict
        Geometry, populations, wires, temperature, drift, noise, faults and seed.
    clock : callable, optional
        The simulated time now, s (default :attr:`time_s`); a lab that hands time to the array in
        steps passes its own clock, so switch writes and readings are timed to the instant.

    Raises
    ------
    ConfigError
        An invalid configuration, or a shorted-resistor fault with an ideal switch.

    Attributes
    ----------
    config : SimArrayConfig
        The configuration.
    switch_on_resistance_ohm : ndarray, float64 (rows, cols, branches)
        On-resistance of every branch switch, ohm (read-only).
    faults : tuple of Fault
        Every fault injected so far (from the config, then at run time).
    """

    def __init__(self, config: SimArrayConfig | dict, *, clock=None) -> None:
        if not isinstance(config, SimArrayConfig):
            try:
                config = SimArrayConfig.model_validate(config)
            except ValidationError as exc:
                raise config_error(exc, "sim array configuration") from exc
        self.config = config
        self.physics: BoardPhysics = board_physics(config.profile, config.physics)
        self.rows, self.cols, self.branches = config.rows, config.cols, config.branches
        shape = (self.rows, self.cols, self.branches)
        draw = np.random.default_rng(config.seed)
        pop = config.population
        if pop.kind == "uniform":
            factor = draw.uniform(1.0 - pop.spread, 1.0 + pop.spread, size=shape)
        else:
            factor = np.exp(draw.normal(0.0, pop.spread, size=shape))
        if pop.kind == "ladder":
            factor *= 2.0 ** np.arange(self.branches)
        self._resistance0_ohm = pop.nominal_resistance_ohm * factor
        # Lognormal with the configured mean.
        s = config.switch_on_spread
        self.switch_on_resistance_ohm = config.switch_on_resistance_ohm * np.exp(
            draw.normal(-0.5 * s * s, s, size=shape)
        )
        self.switch_on_resistance_ohm.flags.writeable = False
        drift_seed, noise_seed = np.random.SeedSequence(config.seed).spawn(2)
        if config.noise_seed is not None:  # the same board, another noise realization
            noise_seed = np.random.SeedSequence([config.seed, config.noise_seed])
        self._drift_rng = np.random.default_rng(drift_seed)
        self._noise_rng = np.random.default_rng(noise_seed)
        self._drift = np.ones(shape)
        # Devices: each resistor's own TCR (1/K) and drift rate (mean 1 x self.drift_per_hour).
        devices = self.physics.devices
        draw = physics_rng(config.seed, "devices")
        tcr_spread = devices.tcr_spread_per_k * draw.standard_normal(shape)
        self._tcr_per_k = config.tcr_per_k + tcr_spread
        spread = devices.drift_rate_spread
        self._drift_rate = np.exp(draw.normal(-0.5 * spread * spread, spread, size=shape))
        # Wires: segments, lines, cell contacts, drivers and sense inputs, their own stream.
        self._wires, self._contact_ohm = _draw_wires(config, self.physics.wires)
        self._wander_rng = physics_rng(config.seed, "environment")
        self._flicker_rng = physics_rng(config.seed, "flicker")
        self._temperature_c = float(config.temperature_c)
        self._time_s = 0.0
        self._clock = clock if clock is not None else (lambda: self._time_s)
        # Switch settling: each branch relaxes from its level at its last write (1 = closed).
        self._level_start = np.zeros(shape)
        self._write_s = np.full(shape, -np.inf)
        self._last_write_s = -np.inf
        self._flatness_s_per_v: np.ndarray | None = None
        self._masks = np.zeros((self.rows, self.cols), dtype=np.uint64)
        self._masks.flags.writeable = False
        # Fault state per branch.
        self._open_resistor = np.zeros(shape, dtype=bool)
        self._short_resistor = np.zeros(shape, dtype=bool)
        self._stuck_open = np.zeros(shape, dtype=bool)
        self._stuck_closed = np.zeros(shape, dtype=bool)
        self.faults: tuple[Fault, ...] = ()
        self._circuits: OrderedDict = OrderedDict()
        self._responses: WeakKeyDictionary = WeakKeyDictionary()  # circuit -> _Responses
        for fault in config.faults:
            self.inject_fault(fault)

    # -- state -------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._circuits.clear()
        self._responses.clear()
        self._flatness_s_per_v = None

    @property
    def masks(self) -> np.ndarray:
        """Commanded branch masks, ``uint64 (rows, cols)`` (read-only view)."""
        return self._masks

    @property
    def time_s(self) -> float:
        """Simulated time since the start of the run, s (advance it with :meth:`advance_time`)."""
        return self._time_s

    def now_s(self) -> float:
        """Simulated time now, s: :attr:`time_s` plus what a lab has not handed over yet."""
        return self._clock()

    @property
    def temperature_c(self) -> float:
        """Temperature of the board, degC (settable; it then wanders on from the value set)."""
        return self._temperature_c

    @temperature_c.setter
    def temperature_c(self, value: float) -> None:
        value = float(value)
        if not -273.15 < value < 1000.0:
            raise ConfigError(f"temperature_c = {value!r}: must lie in (-273.15, 1000)",
                              key="temperature_c")
        if value != self._temperature_c:
            self._temperature_c = value
            self._changed()

    @property
    def drift_per_hour(self) -> float:
        """Mean relative drift per square-root hour: the lab's ``drift_per_hour``, else the profile's."""
        rate = self.config.drift_per_hour
        return self.physics.devices.drift_per_hour if rate is None else rate

    def advance_time(self, duration_s: float) -> None:
        """Let ``duration_s`` of simulated time pass: resistors drift, the temperature wanders.

        Each resistor takes a multiplicative random-walk step ``exp(N(0, sigma))`` with
        ``sigma = rate * drift_per_hour * sqrt(duration_s / 3600)`` (relative std ~ sigma, never
        negative; :attr:`drift_per_hour`), ``rate`` its own lognormal factor of mean 1
        (``devices.drift_rate_spread``).
        The board temperature takes a step ``N(0, temperature_wander_k_per_sqrt_h *
        sqrt(duration_s / 3600))`` (its own stream): a random walk, the same at any step size.
        """
        duration_s = float(duration_s)
        if not (np.isfinite(duration_s) and duration_s >= 0):
            raise ConfigError(f"duration_s = {duration_s!r}: must be finite and >= 0",
                              key="duration_s")
        if duration_s == 0:
            return
        self._time_s += duration_s
        sigma = self.drift_per_hour * np.sqrt(duration_s / _SECONDS_PER_HOUR)
        if sigma > 0:
            step = self._drift_rng.normal(0.0, sigma, size=self._drift.shape) * self._drift_rate
            self._drift *= np.exp(step)
            self._changed()
        wander = self.physics.environment.temperature_wander_k_per_sqrt_h
        if wander > 0:
            hours = duration_s / _SECONDS_PER_HOUR
            self._temperature_c += wander * np.sqrt(hours) * self._wander_rng.standard_normal()
            self._changed()

    def _check_cell(self, row: int, col: int) -> None:
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ConfigError(f"cell ({row}, {col}) lies outside the {self.rows}x{self.cols} array",
                              key="cell")

    def _check_masks(self, masks, shape: tuple[int, ...]) -> np.ndarray:
        array = np.asarray(masks)
        if array.shape != shape:
            raise ConfigError(f"masks have shape {array.shape}, expected {shape}", key="mask")
        if array.dtype.kind not in "ui" and array.dtype != object:
            raise ConfigError(f"masks must be integers, got {array.dtype}", key="mask")
        limit = 1 << self.branches
        if array.size and (np.any(array < 0) or (self.branches < 64 and np.any(array >= limit))):
            raise ConfigError(f"a mask lies outside [0, {limit - 1}] for {self.branches} branches",
                              key="mask")
        return array.astype(np.uint64)

    def _store_masks(self, masks: np.ndarray) -> None:
        if not np.array_equal(masks, self._masks):
            if self.physics.devices.settling_time_s > 0:
                self._start_moves(masks)
            masks.flags.writeable = False
            self._masks = masks
            self._changed()

    def _start_moves(self, masks: np.ndarray) -> None:
        """Every switch the new masks move starts settling now, from where it had got to."""
        cells = np.nonzero(masks != self._masks)
        bits = np.arange(self.branches, dtype=np.uint64)
        stuck_closed, stuck_open = self._stuck_closed[cells], self._stuck_open[cells]

        def conducts(values: np.ndarray) -> np.ndarray:
            closed = ((values[cells][:, None] >> bits) & np.uint64(1)).astype(bool)
            return (closed | stuck_closed) & ~stuck_open

        before = conducts(self._masks)
        which, branch = np.nonzero(before != conducts(masks))
        at = (cells[0][which], cells[1][which], branch)
        now_s, final = self._clock(), before[which, branch]
        age_s = np.maximum(now_s - self._write_s[at], 0.0)
        decay = np.exp(-age_s / self.physics.devices.settling_time_s)
        self._level_start[at] = final + (self._level_start[at] - final) * decay
        self._write_s[at] = now_s
        self._last_write_s = now_s

    def set_mask(self, row: int, col: int, mask: int) -> None:
        """Command one cell's branch mask (bit k closes branch k)."""
        self._check_cell(row, col)
        value = self._check_masks(np.asarray(int(mask)), ())
        masks = self._masks.copy()
        masks[row, col] = value
        self._store_masks(masks)

    def set_row_masks(self, row: int, masks) -> None:
        """Command every mask of one row, ``(cols,)`` integers."""
        self._check_cell(row, 0)
        values = self._check_masks(masks, (self.cols,))
        new = self._masks.copy()
        new[row] = values
        self._store_masks(new)

    def set_masks(self, masks) -> None:
        """Command every mask, ``(rows, cols)`` integers."""
        self._store_masks(self._check_masks(masks, (self.rows, self.cols)).copy())

    def inject_fault(self, fault: Fault) -> None:
        """Add a fault at run time (the config's faults are injected at construction)."""
        if not isinstance(fault, Fault):
            try:
                fault = Fault.model_validate(fault)
            except ValidationError as exc:
                raise config_error(exc, "fault") from exc
        if fault.row >= self.rows or fault.col >= self.cols or fault.branch >= self.branches:
            raise ConfigError(
                f"fault at ({fault.row}, {fault.col}, {fault.branch}) lies outside the "
                f"{self.rows}x{self.cols} array of {self.branches} branches", key="fault")
        at = (fault.row, fault.col, fault.branch)
        if fault.kind == "short_resistor" and self.switch_on_resistance_ohm[at] <= 0:
            raise ConfigError("short_resistor needs switch_on_resistance_ohm > 0 (the branch "
                              "would be an ideal short)", key="switch_on_resistance_ohm")
        {
            "open_resistor": self._open_resistor,
            "short_resistor": self._short_resistor,
            "switch_stuck_open": self._stuck_open,
            "switch_stuck_closed": self._stuck_closed,
        }[fault.kind][at] = True
        self.faults = (*self.faults, fault)
        self._changed()

    # -- truth -------------------------------------------------------------------------------

    def resistance_ohm(self) -> np.ndarray:
        """Every resistor now (temperature and drift applied), ohm, ``(rows, cols, branches)``.

        Each resistor has its own TCR, ``tcr_per_k + N(0, devices.tcr_spread_per_k)``, 1/K.
        """
        delta_k = self._temperature_c - self.config.reference_temperature_c
        return self._resistance0_ohm * self._drift * (1.0 + self._tcr_per_k * delta_k)

    def branch_conductance_s(self) -> np.ndarray:
        """Conductance of each branch through its own closed switch, S, ``(rows, cols, branches)``.

        ``1 / (R(T, t) + R_on)`` with faults applied: an open resistor or a switch stuck open
        conducts only the open-switch leakage, a shorted resistor is the switch alone. This is
        what an ideal calibration finds.
        """
        resistance = np.where(self._short_resistor, 0.0, self.resistance_ohm())
        with np.errstate(divide="ignore"):
            conductance = 1.0 / (resistance + self.switch_on_resistance_ohm)
        leak = self.config.switch_off_conductance_s
        return np.where(self._open_resistor | self._stuck_open, leak, conductance)

    def closed(self) -> np.ndarray:
        """Which switches conduct now: mask or stuck closed, and not stuck open.

        Returns
        -------
        ndarray, bool (rows, cols, branches)
        """
        bits = (self._masks[:, :, None] >> np.arange(self.branches, dtype=np.uint64)) & np.uint64(1)
        return (bits.astype(bool) | self._stuck_closed) & ~self._stuck_open

    def cell_conductance_s(self) -> np.ndarray:
        """Conductance of each cell for the current masks, S, ``(rows, cols)``.

        Closed branches conduct their branch conductance, open ones the switch leakage.
        """
        leak = self.config.switch_off_conductance_s
        return np.where(self.closed(), self.branch_conductance_s(), leak).sum(axis=2)

    # -- switches beyond the linear model: flatness and settling --------------------------------

    def _switch_level(self, start_s, duration_s: float, where) -> np.ndarray:
        """How far each branch switch conducts (1 closed, 0 open), mean over a reading window.

        After a write at ``w`` a moved switch relaxes from its level then (``start``) to its new
        state (``final``): ``final + (start - final) exp(-(t - w) / tau)``; the window average
        over ``[t0, t0 + T]`` is that at ``t0`` times ``(1 - exp(-T / tau)) / (T / tau)``.
        """
        final = self.closed()[where].astype(np.float64)
        tau_s = self.physics.devices.settling_time_s
        age = np.maximum(np.asarray(start_s, np.float64)[..., None] - self._write_s[where], 0.0)
        span = duration_s / tau_s
        window = -np.expm1(-span) / span if span > 0 else 1.0
        return final + (self._level_start[where] - final) * np.exp(-age / tau_s) * window

    def settled_s(self) -> float:
        """Simulated time from which every switch has settled, s (-inf when settling is off)."""
        return self._last_write_s + _SETTLED_TAUS * self.physics.devices.settling_time_s

    def settling_offset_s(self, start_s, duration_s: float) -> np.ndarray | None:
        """How far each cell's conductance is from its settled value during readings, S.

        A switch written less than ``_SETTLED_TAUS`` time constants (``devices.settling_time_s``)
        before a reading still moves (:meth:`_switch_level`): a newly closed branch conducts
        less than its settled ``g``, a newly opened one more than its leakage.

        Parameters
        ----------
        start_s : float or ndarray, float (n,)
            Simulated time at which each reading's integration starts, s.
        duration_s : float
            Integration time of each reading, s (0: an instantaneous reading).

        Returns
        -------
        ndarray, float64 (n, rows, cols) or None
            The offsets; None when every switch has settled (or settling is off).
        """
        tau_s = self.physics.devices.settling_time_s
        start_s = np.atleast_1d(np.asarray(start_s, dtype=np.float64))
        if tau_s == 0 or start_s.min() >= self.settled_s():
            return None
        horizon_s = start_s.min() - _SETTLED_TAUS * tau_s
        moving = np.nonzero(self._write_s >= horizon_s)
        level = self._switch_level(start_s, duration_s, moving)  # (n, moving)
        final = self.closed()[moving]
        leak = self.config.switch_off_conductance_s
        share = (level - final) * (self.branch_conductance_s()[moving] - leak)
        offset = np.zeros((start_s.size, self.rows * self.cols))
        np.add.at(offset, (slice(None), moving[0] * self.cols + moving[1]), share)
        return offset.reshape(start_s.size, self.rows, self.cols)

    def flatness_s_per_v(self) -> np.ndarray | None:
        """How much each cell's conductance falls per volt of switch signal, S/V, ``(rows, cols)``.

        A closed switch's on-resistance is ``R_on (1 + k |v|)`` (``k`` =
        ``devices.on_resistance_flatness_per_v``, ``v`` the row node's voltage at the cell), so
        its branch loses ``k |v| R_on g**2`` to first order (the next order is ``(k v R_on g)**2``
        relative, below 1e-9 on every profile). None when flatness is off.
        """
        k = self.physics.devices.on_resistance_flatness_per_v
        if k == 0:
            return None
        if self._flatness_s_per_v is None:
            g = self.branch_conductance_s()
            conducting = self.closed() & ~(self._open_resistor | self._stuck_open)
            slope = np.where(conducting, k * self.switch_on_resistance_ohm * g * g, 0.0)
            self._flatness_s_per_v = slope.sum(axis=2)
        return self._flatness_s_per_v

    def solve(self, circuit: CrossbarCircuit, row_voltage_v, col_voltage_v=None, *,
              start_s=None, duration_s: float = 0.0):
        """Solve :meth:`circuit`'s network as the switches conduct during a reading.

        The linear solve of the settled network, then every cell's departure from it (switch
        flatness at the solved row-node voltages, :meth:`flatness_s_per_v`; unsettled switches,
        :meth:`settling_offset_s`) as a first-order correction: the departure ``dG * (v_row -
        v_col)`` injected as node currents into the same factorised network. Its error is the
        second order, ``dG`` times the network's resistance seen by a cell (wires and sense, ~1e-3
        of the departure for a 10 kOhm branch), so one extra back-solve replaces a refactorisation.

        Parameters
        ----------
        circuit : CrossbarCircuit
            From :meth:`circuit`, for the current masks.
        row_voltage_v, col_voltage_v : array_like, float (rows,) / (cols,) or batches
            As :meth:`CrossbarCircuit.solve`, V.
        start_s : float or ndarray, float (batch,), optional
            Start of each reading's integration, simulated s (default: no settling, a reading
            long after the last switch write).
        duration_s : float
            Integration time, s.

        Returns
        -------
        CircuitSolution
        """
        solution = circuit.solve(row_voltage_v, col_voltage_v)
        flatness = self.flatness_s_per_v()
        settling = None if start_s is None else self.settling_offset_s(start_s, duration_s)
        if flatness is None and settling is None:
            return solution
        row_v = np.nan_to_num(solution.row_node_voltage_v)
        offset = 0.0 if flatness is None else -flatness * np.abs(row_v)
        offset = offset if settling is None else offset + settling
        flow = offset * (row_v - np.nan_to_num(solution.col_node_voltage_v))
        return circuit.solve(row_voltage_v, col_voltage_v, row_node_current_a=-flow,
                             col_node_current_a=flow)

    def column_current_a(self, circuit: CrossbarCircuit, row_voltage_v, *, start_s=None,
                         duration_s: float = 0.0) -> np.ndarray:
        """The column currents of :meth:`solve` for one row drive, columns at 0 V, A ``(cols,)``.

        The same first-order model, answered from what the circuit has already solved: the linear
        solution of each drive vector is kept (a repeated reading solves only its correction, a
        settled one nothing); after ``_UNITS_AFTER`` distinct vectors the circuit's unit
        responses are built once (``rows`` row drives and, by reciprocity, the column currents per
        node injection from ``cols`` column drives), and every reading is then a few products.
        All of it lives with the circuit, so any change of state (:meth:`_changed`) drops it.

        Parameters
        ----------
        circuit : CrossbarCircuit
            From :meth:`circuit`, for the current masks.
        row_voltage_v : array_like, float (rows,)
            Row source voltages, V.
        start_s, duration_s
            As :meth:`solve`.
        """
        vr = np.asarray(row_voltage_v, dtype=np.float64).reshape(self.rows)
        if not (circuit.row_connected.all() and circuit.col_connected.all()):
            return self.solve(circuit, vr, start_s=start_s, duration_s=duration_s).col_current_a[0]
        flatness = self.flatness_s_per_v()
        settling = None if start_s is None else self.settling_offset_s(start_s, duration_s)
        known = self._responses.get(circuit)
        if known is None:
            known = self._responses[circuit] = _Responses()
        key = vr.tobytes()
        if settling is None and key in known.settled:
            return known.settled[key].copy()
        linear = known.linear.get(key)
        if linear is None:
            if known.units is None and len(known.linear) >= _UNITS_AFTER:
                known.units = _unit_responses(circuit)
            if known.units is not None:
                row_node, across, current, _ = known.units
                linear = (vr @ row_node, vr @ across, vr @ current)
            else:
                solution = circuit.solve(vr)
                row_node = solution.row_node_voltage_v[0]
                linear = (row_node.ravel(), (row_node - solution.col_node_voltage_v[0]).ravel(),
                          solution.col_current_a[0])
                known.linear[key] = linear
        row_v, across_v, current = linear
        if flatness is None and settling is None:
            out = current
        else:
            offset = 0.0 if flatness is None else -flatness.ravel() * np.abs(row_v)
            if settling is not None:
                offset = offset + settling[0].ravel()
            flow = offset * across_v
            if known.units is not None:
                out = current + flow @ known.units[3]
            else:
                flow = flow.reshape(self.rows, self.cols)
                out = circuit.solve(vr, row_node_current_a=-flow,
                                    col_node_current_a=flow).col_current_a[0]
        if settling is None:
            known.settled[key] = out
        return np.array(out)

    def circuit(self, row_connected=None, col_connected=None) -> CrossbarCircuit:
        """The prepared circuit for the current masks, temperature and time.

        Its wires are the board's (``physics.wires``, :func:`_draw_wires`): per segment, driver
        and sense input where they scatter, the configured scalars where not (``ideal``). A cell
        contact ``R_c`` in series with the cell's branches makes its conductance ``G / (1 + G
        R_c)``.

        Parameters
        ----------
        row_connected, col_connected : array_like of bool (rows,) / (cols,), optional
            Lines whose terminal is connected (default all); the others float.

        Returns
        -------
        CrossbarCircuit
            Cached until the masks, the temperature, the time or the faults change.
        """
        rows = np.ones(self.rows, bool) if row_connected is None else np.asarray(row_connected)
        cols = np.ones(self.cols, bool) if col_connected is None else np.asarray(col_connected)
        rows, cols = rows.astype(bool), cols.astype(bool)
        if rows.shape != (self.rows,) or cols.shape != (self.cols,):
            raise ConfigError(f"row_connected / col_connected have shapes {rows.shape} / "
                              f"{cols.shape}, expected ({self.rows},) / ({self.cols},)",
                              key="row_connected")
        key = (rows.tobytes(), cols.tobytes())
        circuit = self._circuits.get(key)
        if circuit is None:
            conductance_s = self.cell_conductance_s()
            if self._contact_ohm is not None:
                conductance_s = conductance_s / (1.0 + conductance_s * self._contact_ohm)
            circuit = CrossbarCircuit(conductance_s, **self._wires, row_connected=rows,
                                      col_connected=cols)
            self._circuits[key] = circuit
            while len(self._circuits) > _CACHED_CIRCUITS:
                self._circuits.popitem(last=False)
        else:
            self._circuits.move_to_end(key)
        return circuit

    def read_noise(self, current_a, range_a, nplc) -> np.ndarray:
        """A noisy reading of ``current_a``: white plus 1/f (flicker) noise.

        The white part has std ``sigma_w = sqrt((relative_noise * |I|)^2 + (noise_floor_fraction
        * range_a)^2) / sqrt(nplc)``. With ``noise.flicker_corner_hz = f_c`` > 0 the noise density
        is ``S_w (1 + f_c / f)`` (``f >= 1e-3`` Hz, slower is drift); a reading averages it over
        ``T = nplc / 60`` s (a boxcar, ``|H|^2 = sinc^2(pi f T)``), so the 1/f part adds the
        variance ``sigma_w^2 * 2 f_c T * I(pi f_min T)`` with ``I(e) = sin(e)^2 / (2 e^2) +
        sin(2e) / (2e) - Ci(2e)`` (``~ 1.5 - gamma - ln(2e)`` for small ``e``): the sd falls
        like ``1/sqrt(nplc)`` while ``2 f_c T I << 1`` and flattens beyond. It is drawn from its
        own stream; each reading is independent (averaging readings still gains sqrt(n)).

        Parameters
        ----------
        current_a : array_like, float
            True current, A.
        range_a : array_like, float
            Measurement range, A (> 0).
        nplc : array_like, float
            Integration time in power-line cycles (> 0).
        """
        current = np.asarray(current_a, dtype=np.float64)
        range_a = np.asarray(range_a, dtype=np.float64)
        nplc = np.asarray(nplc, dtype=np.float64)
        if np.any(~(range_a > 0)) or np.any(~(nplc > 0)):
            raise ConfigError("range_a and nplc must be > 0", key="range_a")
        cfg = self.config
        std = np.hypot(cfg.relative_noise * current, cfg.noise_floor_fraction * range_a)
        std = std / np.sqrt(nplc)
        reading = current + std * self._noise_rng.standard_normal(std.shape)
        corner_hz = self.physics.noise.flicker_corner_hz
        if corner_hz > 0:
            flicker = std * np.sqrt(flicker_variance_ratio(nplc * _PLC_S, corner_hz))
            reading = reading + flicker * self._flicker_rng.standard_normal(flicker.shape)
        return reading


class _Responses:
    """What one circuit has solved for row drives: linear solutions and settled currents by drive
    vector, and its unit responses once built (:meth:`PhysicalArray.column_current_a`)."""

    def __init__(self) -> None:
        self.linear: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.settled: dict[bytes, np.ndarray] = {}
        self.units: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def _unit_responses(circuit: CrossbarCircuit):
    """A fully connected circuit's responses to unit drives, for :class:`_Responses`.

    Returns the row-node voltages and the voltages across the cells per volt on each row, V/V
    ``(rows, rows * cols)``, the column currents per volt on each row, S ``(rows, cols)``, and the
    column currents per unit of current leaving each cell's row node into its column node, A/A
    ``(rows * cols, cols)``: by reciprocity the voltage across each cell, column minus row, per
    volt on each column terminal.
    """
    rows, cols = circuit.rows, circuit.cols
    by_row = circuit.solve(np.eye(rows))
    by_col = circuit.solve(np.zeros((cols, rows)), np.eye(cols))
    row_node = by_row.row_node_voltage_v.reshape(rows, -1)
    across = row_node - by_row.col_node_voltage_v.reshape(rows, -1)
    injected = (by_col.col_node_voltage_v - by_col.row_node_voltage_v).reshape(cols, -1).T
    return row_node, across, by_row.col_current_a, np.ascontiguousarray(injected)


def _spread(relative_sd: float, normal: np.ndarray) -> np.ndarray:
    """Lognormal factors of mean 1 and relative standard deviation ``relative_sd`` from standard
    normal draws (log-sd ``sqrt(ln(1 + sd**2))``: a resistance never changes sign)."""
    log_sd = np.sqrt(np.log1p(relative_sd * relative_sd))
    return np.exp(log_sd * normal - 0.5 * log_sd * log_sd)


def _draw_wires(config: SimArrayConfig, wires: WirePhysics):
    """The board's series resistances, drawn from the ``wires`` stream.

    Row segment ``[i, k]`` (into cell k of row i) is ``row_wire_resistance_ohm * length_factor *
    line[i] * segment[i, k]``, column segments likewise with ``line[j]``; ``line`` (spread
    ``line_variation``) and ``segment`` (``segment_scatter``) are lognormal of mean 1. Each row's
    driver is ``driver_output_resistance_ohm`` times a factor of spread ``driver_spread``, each
    column's sense input ``sense_resistance_ohm`` times one of ``sense_spread``, each cell's
    contact ``contact_resistance_ohm`` times one of ``contact_spread``. Every normal is drawn
    whatever the parameters, in a fixed order, so a parameter scales the same draws. Without
    scatter a resistance stays the configured scalar (the circuit's scalar path, bit for bit).

    Returns
    -------
    wires : dict
        ``CrossbarCircuit`` keywords: row and column wires (float or ``(rows, cols)``), sense
        (float or ``(cols,)``) and driver (float or ``(rows,)``) resistances, ohm.
    contact_ohm : ndarray, float64 (rows, cols) or None
        Each cell's contact resistance, ohm (None: no contact resistance).
    """
    rows, cols = config.rows, config.cols
    draw = physics_rng(config.seed, "wires")
    normal = {name: draw.standard_normal(shape) for name, shape in (
        ("row_line", (rows, 1)), ("col_line", (1, cols)), ("row_segment", (rows, cols)),
        ("col_segment", (rows, cols)), ("driver", rows), ("sense", cols),
        ("contact", (rows, cols)))}
    scattered = wires.line_variation > 0 or wires.segment_scatter > 0

    def line(ohm: float, kind: str):
        ohm *= wires.length_factor
        if not scattered or ohm == 0:
            return ohm
        return (ohm * _spread(wires.line_variation, normal[f"{kind}_line"])
                * _spread(wires.segment_scatter, normal[f"{kind}_segment"]))

    def each(ohm: float, spread: float, name: str):
        return ohm * _spread(spread, normal[name]) if spread > 0 and ohm > 0 else ohm

    contact = each(wires.contact_resistance_ohm, wires.contact_spread, "contact")
    return {
        "row_wire_resistance_ohm": line(config.row_wire_resistance_ohm, "row"),
        "col_wire_resistance_ohm": line(config.col_wire_resistance_ohm, "col"),
        "sense_resistance_ohm": each(config.sense_resistance_ohm, wires.sense_spread, "sense"),
        "driver_resistance_ohm": each(wires.driver_output_resistance_ohm, wires.driver_spread,
                                      "driver"),
    }, (np.broadcast_to(contact, (rows, cols)) if wires.contact_resistance_ohm > 0 else None)


def flicker_variance_ratio(duration_s, corner_hz: float, low_hz: float = _FLICKER_LOW_HZ):
    """Variance of a boxcar average of 1/f noise over that of the white noise, same density.

    ``2 f_c T I(pi f_min T)``, ``I(e) = integral_e^inf sin(x)^2 / x^3 dx = sin(e)^2 / (2 e^2) +
    sin(2e) / (2e) - Ci(2e)`` (two integrations by parts).

    Parameters
    ----------
    duration_s : array_like, float
        Averaging time ``T``, s (> 0).
    corner_hz : float
        Frequency where the 1/f density equals the white density, Hz.
    low_hz : float
        Lower edge of the 1/f band, Hz.
    """
    span = np.pi * low_hz * np.asarray(duration_s, dtype=np.float64)
    integral = (np.sin(span) ** 2 / (2 * span * span) + np.sin(2 * span) / (2 * span)
                - sici(2 * span)[1])
    return 2 * corner_hz * np.asarray(duration_s, dtype=np.float64) * integral
