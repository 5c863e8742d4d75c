"""The simulated physical array: cheap random resistors behind switches, wires, faults, drift.

Cell (row, col) holds ``branches`` resistor + switch branches in parallel; bit k of the cell's
mask closes branch k. Everything random is drawn from the config seed: the resistors and
switches from ``default_rng(seed)``, drift and read noise from their own streams spawned from
the same seed, so changing how often one is used never changes the others.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from pydantic import ValidationError

from crossbar_ctl.core.config import Fault, SimArrayConfig, config_error
from crossbar_ctl.core.errors import ConfigError
from crossbar_ctl.core.circuit import CrossbarCircuit
from sim._physics import BoardPhysics, board_physics

__all__ = ["PhysicalArray"]

_SECONDS_PER_HOUR = 3600.0
_CACHED_CIRCUITS = 16


class PhysicalArray:
    """The true state of a simulated array (what calibration tries to find).

    Parameters
    ----------
    config : SimArrayConfig or dict
        Geometry, populations, wires, temperature, drift, noise, faults and seed.

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

    def __init__(self, config: SimArrayConfig | dict) -> None:
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
        self._drift_rng = np.random.default_rng(drift_seed)
        self._noise_rng = np.random.default_rng(noise_seed)
        self._drift = np.ones(shape)
        self._temperature_c = float(config.temperature_c)
        self._time_s = 0.0
        self._masks = np.zeros((self.rows, self.cols), dtype=np.uint64)
        self._masks.flags.writeable = False
        # Fault state per branch.
        self._open_resistor = np.zeros(shape, dtype=bool)
        self._short_resistor = np.zeros(shape, dtype=bool)
        self._stuck_open = np.zeros(shape, dtype=bool)
        self._stuck_closed = np.zeros(shape, dtype=bool)
        self.faults: tuple[Fault, ...] = ()
        self._circuits: OrderedDict = OrderedDict()
        for fault in config.faults:
            self.inject_fault(fault)

    # -- state -------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._circuits.clear()

    @property
    def masks(self) -> np.ndarray:
        """Commanded branch masks, ``uint64 (rows, cols)`` (read-only view)."""
        return self._masks

    @property
    def time_s(self) -> float:
        """Simulated time since the start of the run, s (advance it with :meth:`advance_time`)."""
        return self._time_s

    @property
    def temperature_c(self) -> float:
        """Ambient temperature of the array, degC (settable)."""
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

    def advance_time(self, duration_s: float) -> None:
        """Let ``duration_s`` of simulated time pass: every resistor drifts.

        Each resistor takes a multiplicative random-walk step ``exp(N(0, sigma))`` with
        ``sigma = drift_per_hour * sqrt(duration_s / 3600)`` (relative std ~ sigma, never negative).
        """
        duration_s = float(duration_s)
        if not (np.isfinite(duration_s) and duration_s >= 0):
            raise ConfigError(f"duration_s = {duration_s!r}: must be finite and >= 0",
                              key="duration_s")
        if duration_s == 0:
            return
        self._time_s += duration_s
        sigma = self.config.drift_per_hour * np.sqrt(duration_s / _SECONDS_PER_HOUR)
        if sigma > 0:
            self._drift *= np.exp(self._drift_rng.normal(0.0, sigma, size=self._drift.shape))
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
            masks.flags.writeable = False
            self._masks = masks
            self._changed()

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
        """Every resistor now (temperature and drift applied), ohm, ``(rows, cols, branches)``."""
        cfg = self.config
        thermal = 1.0 + cfg.tcr_per_k * (self._temperature_c - cfg.reference_temperature_c)
        return self._resistance0_ohm * self._drift * thermal

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

    def circuit(self, row_connected=None, col_connected=None) -> CrossbarCircuit:
        """The prepared circuit for the current masks, temperature and time.

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
            cfg = self.config
            circuit = CrossbarCircuit(
                self.cell_conductance_s(),
                row_wire_resistance_ohm=cfg.row_wire_resistance_ohm,
                col_wire_resistance_ohm=cfg.col_wire_resistance_ohm,
                sense_resistance_ohm=cfg.sense_resistance_ohm,
                row_connected=rows,
                col_connected=cols,
            )
            self._circuits[key] = circuit
            while len(self._circuits) > _CACHED_CIRCUITS:
                self._circuits.popitem(last=False)
        else:
            self._circuits.move_to_end(key)
        return circuit

    def read_noise(self, current_a, range_a, nplc) -> np.ndarray:
        """A noisy reading of ``current_a``.

        Adds Gaussian noise of std ``sqrt((relative_noise * |I|)^2 + (noise_floor_fraction *
        range_a)^2) / sqrt(nplc)``, element-wise (arguments broadcast).

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
        return current + std * self._noise_rng.standard_normal(std.shape)
