"""Simulated source-measure units: a Keithley 2450 in SCPI mode and a Keithley 2400-series SMU.

Both source a voltage and measure a current through a :class:`Load` (in a lab: the array as the
routing connects it to HI and LO). The physics of one reading, shared by both models:

- the current is the load's conductance times the voltage; beyond the current limit (2450
  ``:SOUR:VOLT:ILIM``, 2400 ``:SENS:CURR:PROT``) the source clamps the current at the limit and
  the terminal voltage drops (compliance: 2450 ``ILIM:TRIP?`` answers 1, the 2400 status element
  sets bit 3);
- the measure range is the fixed one or, in auto range, the smallest that holds the current; a
  reading beyond 105 % of a fixed range is the overflow value ``9.91e37`` (2400 status bit 0);
- read noise comes from the load for the range and NPLC, and every reading advances the load's
  simulated time by NPLC / 60 s (plus any source delay): nothing here sleeps;
- with ``accuracy`` (a lab's ``readout.smu_source_error``) the instrument is a real one within
  its datasheet: the sourced voltage is the level rounded to the source range's programming
  resolution, with that range's gain and offset error, and the reading carries the measure
  range's gain and offset error; each error is one fixed draw per range, uniform within the
  specified +-(% + offset) (1 year, 23 degC +- 5 K). Without it the instrument is exact;
- with the output off the terminals are open: the reading is noise alone (plus the offset).

Not simulated: sourcing current (``:SOUR:FUNC CURR`` is refused with -224) and resistance
measurements (the 2400's ``RES`` element reads ``9.91e37``, as it does with ohms off).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim._scpi import Boolean, Choice, Integer, Number, ScpiDevice, ScpiError, String, scpi

__all__ = ["OVERFLOW", "SimKeithley2400", "SimKeithley2450", "Load"]

OVERFLOW = 9.91e37
"""The SCPI "not a number" value an overflowed reading reports."""

_PLC_S = 1 / 60
_OVERRANGE = 1.05


class Load(Protocol):
    """What a simulated SMU is connected to."""

    def conductance_s(self) -> float:
        """Current into LO per volt at HI, in siemens (``inf`` if HI is shorted to LO)."""

    def current_a(self, source_v: np.ndarray, integration_s: float, step_s: float) -> np.ndarray:
        """Current into LO for each voltage of a list sourced at HI from now on, A (point k ends
        ``(k + 1) * step_s`` s from now and integrates over its last ``integration_s`` s)."""

    def read_noise(self, current_a: np.ndarray, range_a: float, nplc: float) -> np.ndarray:
        """A noisy reading of each current (A) on a measure range (A) at an integration time."""

    def advance_time(self, duration_s: float) -> None:
        """Let simulated time pass."""

    @property
    def time_s(self) -> float:
        """Simulated time now, in seconds."""


@dataclass(frozen=True)
class _Points:
    """The outcome of sourcing a list of voltages, one entry per point."""

    source_v: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    compliance: np.ndarray
    overflow: np.ndarray
    time_s: np.ndarray


def _range_for(value: float, ranges: tuple[float, ...]) -> float:
    """The smallest range that holds ``value``; -222 if none does."""
    for candidate in ranges:
        if abs(value) <= candidate * (1 + 1e-9):
            return candidate
    raise ScpiError(-222)


def _draw_errors(accuracy: np.random.Generator | None, spec: dict[float, tuple[float, ...]]
                 ) -> dict[float, tuple[float, float]] | None:
    """``{range: (gain, offset)}``: one draw per range, uniform within the datasheet's
    +-(gain fraction, offset) (the last two entries of each ``spec`` row); None: exact."""
    if accuracy is None:
        return None
    return {range_: (gain * accuracy.uniform(-1, 1), offset * accuracy.uniform(-1, 1))
            for range_, (*_, gain, offset) in spec.items()}


class _SourceMeter(ScpiDevice):
    """The state and the physics both SMU models share (voltage source, current measure).

    Parameters
    ----------
    load : Load
        What the terminals are connected to.
    accuracy : numpy.random.Generator, optional
        Draws this instrument's source and measure errors, once, within its datasheet accuracy
        (:attr:`SOURCE_VOLTAGE_SPEC`, :attr:`MEASURE_CURRENT_SPEC`); None: an exact instrument.
    """

    CURRENT_RANGES_A: tuple[float, ...] = ()
    VOLTAGE_RANGES_V: tuple[float, ...] = (0.2, 2.0, 20.0, 200.0)
    SOURCE_VOLTAGE_SPEC: dict[float, tuple[float, float, float]] = {}
    """Per voltage source range, V: programming resolution (V), gain (fraction of the setting)
    and offset (V) of the one-year accuracy."""
    MEASURE_CURRENT_SPEC: dict[float, tuple[float, float]] = {}
    """Per current measure range, A: gain (fraction of the reading) and offset (A) of the
    one-year accuracy."""
    MAX_VOLTAGE_V = 210.0
    LIST_CAPACITY: int  # points a source list holds

    def __init__(self, load: Load, *, lock: threading.RLock | None = None, seed: int = 0,
                 accuracy: np.random.Generator | None = None) -> None:
        self.load = load
        self.source_error = _draw_errors(accuracy, self.SOURCE_VOLTAGE_SPEC)
        self.measure_error = _draw_errors(accuracy, self.MEASURE_CURRENT_SPEC)
        super().__init__(lock=lock, seed=seed)

    def reset(self) -> None:
        self.output_on = False
        self.level_v = 0.0
        self.source_range_v: float | None = None  # None: auto
        self.limit_a = 105e-6
        self.nplc = 1.0
        self.current_range_a: float | None = None  # None: auto
        self.source_delay_s = 0.0
        self.tripped = False

    def sourced_v(self, level_v: np.ndarray) -> np.ndarray:
        """The voltage the source puts out for each programmed level, V.

        With :attr:`source_error`: the level rounded to its source range's programming
        resolution, times ``1 + gain``, plus the offset, of that range (the fixed one, or the
        smallest holding the level in auto range). Otherwise the level itself.
        """
        level_v = np.asarray(level_v, dtype=float)
        if self.source_error is None:
            return level_v
        if self.source_range_v is None:
            ranges = np.asarray(self.VOLTAGE_RANGES_V)
            index = np.searchsorted(ranges, np.abs(level_v) / (1 + 1e-9))
            range_v = ranges[np.minimum(index, len(ranges) - 1)]
        else:
            range_v = np.full(level_v.shape, self.source_range_v)
        out = np.empty_like(level_v)
        for value in np.unique(range_v):
            sel = range_v == value
            resolution = self.SOURCE_VOLTAGE_SPEC[float(value)][0]
            gain, offset = self.source_error[float(value)]
            out[sel] = np.round(level_v[sel] / resolution) * resolution * (1 + gain) + offset
        return out

    def measure(self, source_v: np.ndarray) -> _Points:
        """Source each voltage in turn and measure the current, as the instrument would."""
        source_v = np.asarray(source_v, dtype=float)
        output_v = self.sourced_v(source_v)
        conductance = self.load.conductance_s() if self.output_on else 0.0
        if np.isinf(conductance):
            current = np.where(output_v == 0, 0.0, np.sign(output_v) * np.inf)
        elif self.output_on:  # the load times each point (nonlinear or settling switches)
            step_s = self.nplc * _PLC_S + self._point_delay_s()
            current = self.load.current_a(output_v, self.nplc * _PLC_S, step_s)
        else:
            current = np.zeros_like(output_v)
        compliance = np.abs(current) > self.limit_a
        current = np.clip(current, -self.limit_a, self.limit_a)
        voltage = output_v.copy() if self.output_on else np.zeros_like(source_v)
        if compliance.any():
            voltage[compliance] = 0.0 if np.isinf(conductance) else current[compliance] / conductance
        if self.current_range_a is None:
            ranges = np.asarray(self.CURRENT_RANGES_A)
            # Like the real instruments, auto range leaves headroom: it picks the smallest range
            # holding the current itself, so noise alone cannot push a reading into overflow.
            index = np.searchsorted(ranges, np.abs(current))
            range_a = ranges[np.minimum(index, len(ranges) - 1)]
        else:
            range_a = np.full(current.shape, self.current_range_a)
        reading = current.copy()
        for value in np.unique(range_a):
            sel = range_a == value
            reading[sel] = self.load.read_noise(current[sel], float(value), self.nplc)
            if self.measure_error is not None:
                gain, offset = self.measure_error[float(value)]
                reading[sel] = reading[sel] * (1 + gain) + offset
        overflow = np.abs(reading) > range_a * _OVERRANGE
        reading[overflow] = OVERFLOW
        step_s = self.nplc * _PLC_S + self._point_delay_s()
        start = self.load.time_s
        self.load.advance_time(step_s * len(source_v))
        self.tripped = bool(compliance[-1]) if len(compliance) else self.tripped
        return _Points(source_v, voltage, reading, compliance, overflow,
                       start + step_s * np.arange(1, len(source_v) + 1))

    def _point_delay_s(self) -> float:
        """Source delay spent before each reading, s."""
        return self.source_delay_s

    # ---- source ------------------------------------------------------------------------------
    @scpi(":SOURce:FUNCtion[:MODE]", Choice("VOLTage"))
    def _source_function(self, function: str) -> None:
        """Only voltage sourcing is simulated (CURR gives -224)."""

    @scpi(":SOURce:FUNCtion[:MODE]?")
    def _source_function_query(self) -> str:
        return "VOLT"

    @scpi(":SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", Number(-210, 210, unit="V"))
    def _source_voltage(self, volts: float) -> None:
        if self.source_range_v is not None and abs(volts) > self.source_range_v * _OVERRANGE:
            raise ScpiError(-222)
        self.level_v = volts

    @scpi(":SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _source_voltage_query(self) -> str:
        return self.format(self.level_v)

    @scpi(":SOURce:VOLTage:RANGe", Number(-210, 210, unit="V"))
    def _source_range(self, volts: float) -> None:
        chosen = _range_for(volts, self.VOLTAGE_RANGES_V)
        if abs(self.level_v) > chosen * _OVERRANGE:
            raise ScpiError(-221)
        self.source_range_v = chosen

    @scpi(":SOURce:VOLTage:RANGe?")
    def _source_range_query(self) -> str:
        return self.format(self.source_range_v or _range_for(self.level_v, self.VOLTAGE_RANGES_V))

    @scpi(":SOURce:VOLTage:RANGe:AUTO", Boolean())
    def _source_range_auto(self, on: bool) -> None:
        if on:
            self.source_range_v = None
        elif self.source_range_v is None:
            self.source_range_v = _range_for(self.level_v, self.VOLTAGE_RANGES_V)

    @scpi(":SOURce:VOLTage:RANGe:AUTO?")
    def _source_range_auto_query(self) -> str:
        return "1" if self.source_range_v is None else "0"

    # ---- measure -----------------------------------------------------------------------------
    @scpi(":SENSe:CURRent[:DC]:NPLCycles", Number(0.01, 10))
    @scpi(":SENSe:VOLTage[:DC]:NPLCycles", Number(0.01, 10))
    def _nplc(self, nplc: float) -> None:
        self.nplc = nplc

    @scpi(":SENSe:CURRent[:DC]:NPLCycles?")
    @scpi(":SENSe:VOLTage[:DC]:NPLCycles?")
    def _nplc_query(self) -> str:
        return self.format(self.nplc)

    @scpi(":SENSe:CURRent[:DC]:RANGe[:UPPer]", Number(0, 1.05, unit="A"))
    def _current_range(self, amps: float) -> None:
        self.current_range_a = _range_for(amps, self.CURRENT_RANGES_A)

    @scpi(":SENSe:CURRent[:DC]:RANGe[:UPPer]?")
    def _current_range_query(self) -> str:
        if self.current_range_a is None:
            return self.format(_range_for(min(self.limit_a, 1.0), self.CURRENT_RANGES_A))
        return self.format(self.current_range_a)

    @scpi(":SENSe:CURRent[:DC]:RANGe:AUTO", Boolean())
    def _current_range_auto(self, on: bool) -> None:
        if on:
            self.current_range_a = None
        elif self.current_range_a is None:
            self.current_range_a = _range_for(min(self.limit_a, 1.0), self.CURRENT_RANGES_A)

    @scpi(":SENSe:CURRent[:DC]:RANGe:AUTO?")
    def _current_range_auto_query(self) -> str:
        return "1" if self.current_range_a is None else "0"

    @scpi(":OUTPut[:STATe]", Boolean())
    def _output(self, on: bool) -> None:
        self.output_on = on

    @scpi(":OUTPut[:STATe]?")
    def _output_query(self) -> str:
        return "1" if self.output_on else "0"

    @staticmethod
    def format(value: float) -> str:
        """A number as the instrument prints it."""
        return f"{value:.9E}"

    # ---- source lists (both models: 100 values a command, :APPend to extend) ---------------
    @scpi(":SOURce:LIST:VOLTage", Number(-210, 210, unit="V"), repeat_last=100)
    def _list(self, *volts: float) -> None:
        self.source_list = list(volts)

    @scpi(":SOURce:LIST:VOLTage:APPend", Number(-210, 210, unit="V"), repeat_last=100)
    def _list_append(self, *volts: float) -> None:
        if len(self.source_list) + len(volts) > self.LIST_CAPACITY:
            raise ScpiError(-223)
        self.source_list.extend(volts)

    @scpi(":SOURce:LIST:VOLTage?")
    def _list_query(self) -> str:
        return ",".join(map(self.format, self.source_list)) if self.source_list else ""

    @scpi(":SOURce:LIST:VOLTage:POINts?")
    def _list_points(self) -> str:
        return str(len(self.source_list))


# ------------------------------------------------------------------------------------------------
# Keithley 2450 (SCPI command set)
# ------------------------------------------------------------------------------------------------

_DEFAULT_BUFFERS = ("defbuffer1", "defbuffer2")
_ELEMENTS_2450 = Choice("READing", "SOURce", "RELative", "SEConds")
_SOURCES_2450 = {"VOLT": ":SOURce:VOLTage", "CURR": ":SOURce:CURRent"}
_SENSES_2450 = {"CURR": ":SENSe:CURRent[:DC]", "VOLT": ":SENSe:VOLTage[:DC]",
                "RES": ":SENSe:RESistance"}
_USER_DELAYS = range(1, 6)  # DELay:USER1..USER5
# Source auto delay by measure current range, s (reference manual, "Source delay"); the same for
# both source functions except 2 ms for the current source on 1 A.
_AUTO_DELAY_S = {10e-9: 50e-3, 100e-9: 50e-3, 1e-6: 3e-3, 10e-6: 2e-3}
_SWEEP_COUNT_MAX = 268_435_455
# delay (-1: auto), count (0: infinite), range type, fail abort, dual, buffer: every sweep's tail
_SWEEP_TAIL = (Number(-1, 10_000, unit="S"), Integer(0, _SWEEP_COUNT_MAX),
               Choice("AUTO", "BEST", "FIXed"), Boolean(), Boolean(), String())


def _per_function(headers: dict[str, str], suffix: str, *params: Any, **kwargs: Any
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """:func:`scpi` once per function: header ``headers[f] + suffix``, handler gets ``f`` first."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        for function, header in headers.items():
            scpi(header + suffix, *params, bind=(function,), **kwargs)(func)
        return func

    return mark


def _per_user_delay(headers: dict[str, str], query: bool, *params: Any
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``<header>:DELay:USER<n>`` for every function and n = 1..5; handler gets ``(f, n)``."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        for function, header in headers.items():
            for n in _USER_DELAYS:
                scpi(f"{header}:DELay:USER{n}" + ("?" if query else ""), *params,
                     bind=(function, n))(func)
        return func

    return mark


class _Buffer:
    """A reading buffer: reading, source value and time of the last ``capacity`` points.

    A ring of ``capacity`` rows, allocated at the first reading: memory never exceeds 24 bytes a
    point of capacity, however many points a sweep sends through it.
    """

    COLUMNS = ("READ", "SOUR", "SEC")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self._data: np.ndarray | None = None
        self._next = 0  # the row the next reading goes to
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def extend(self, points: _Points) -> None:
        new = np.column_stack([points.current_a, points.source_v, points.time_s])[-self.capacity:]
        if self._data is None or len(self._data) != self.capacity:
            self._data = np.empty((self.capacity, len(self.COLUMNS)))
        self._data[(self._next + np.arange(len(new))) % self.capacity] = new
        self._next = (self._next + len(new)) % self.capacity
        self._count = min(self._count + len(new), self.capacity)

    def _index(self, start: int, end: int) -> np.ndarray:
        """Ring rows of readings ``start..end`` (1-based, inclusive, oldest first)."""
        first = (self._next - self._count) % self.capacity
        return (first + np.arange(start - 1, end)) % self.capacity

    def column(self, name: str) -> np.ndarray:
        """One column, oldest reading first."""
        if not self._count or self._data is None:
            return np.empty(0)
        return self._data[self._index(1, self._count), self.COLUMNS.index(name)]

    def rows(self, start: int, end: int, elements: tuple[str, ...]) -> list[float]:
        """Elements of readings ``start..end`` (1-based, inclusive), interleaved point by point."""
        if not 1 <= start <= end <= len(self) or self._data is None:
            raise ScpiError(-222)
        rows = self._data[self._index(start, end)]
        first_s = self._data[self._index(1, 1)[0], 2]
        columns = {"READ": rows[:, 0], "SOUR": rows[:, 1], "SEC": rows[:, 2],
                   "REL": rows[:, 2] - first_s}
        return np.column_stack([columns[name] for name in elements]).ravel().tolist()


@dataclass(frozen=True)
class _Sweep:
    """A configured sweep: one pass of source levels, run ``count`` times into ``buffer``."""

    levels_v: np.ndarray
    delay_s: float  # -1: auto delay
    count: int  # 0: infinite
    buffer: str


class SimKeithley2450(_SourceMeter):
    """A Keithley 2450 SourceMeter answering its SCPI command set.

    Beyond sourcing voltage and measuring current it keeps, as the reference manual defines them
    (ranges, ``*RST`` defaults, errors), the settings that drivers such as QCoDeS's and PyMeasure's
    read and write: the current source's level, range and voltage limit (``VLIM``), source delay,
    auto delay, user delays and readback, sense ranges, NPLC, remote sense (``RSEN``), autozero
    (``AZER``), averaging filter and count for every sense function, terminals, line frequency,
    user buffers and their statistics. Voltage and resistance (``V / I``) readings come from the
    same physics. Sweeps: ``:SOUR:SWE:VOLT:LIN``, ``:LIN:STEP``, ``:LOG`` and ``:LIST``, run at
    ``:INIT`` in chunks of :attr:`SWEEP_CHUNK` points (the lab lock is released between chunks,
    and the buffer keeps only its capacity, so memory stays bounded).

    Not simulated: sourcing current (``:SOUR:FUNC CURR`` is -224), the averaging filter and
    autozero (kept and read back; the noise does not change), remote sense, the auto delay's time
    (reported by ``DEL?``, not spent: the simulated array settles at once), a sweep's failAbort
    (accepted; the sweep always completes, each point clamped at the limit). A sweep of more than
    :attr:`MAX_SWEEP_POINTS` points in all (points x count, where the manual allows 268,435,455
    runs), or an infinite one (count 0), is refused at ``:INIT`` with -225 Out of memory: the
    simulator runs a sweep to its end before it reads the next line (ten million points take
    about 3 s on a 2-core machine), so a longer one would stall its client for minutes. Reading
    buffers hold :attr:`MAX_BUFFER_POINTS` readings in all (``:TRAC:POIN``, ``:TRAC:MAKE``
    beyond it: -225).

    Parameters
    ----------
    load : Load
        What the terminals are connected to.
    language : {"SCPI", "TSP", "SCPI2400"}
        The command set selected on the front panel (``*LANG?``). In ``TSP`` and ``SCPI2400``
        only the common commands are understood; everything else is -113, so a driver must check
        ``*LANG?`` first. ``*LANG <set>`` takes effect at the next :meth:`power_cycle`.
    accuracy : numpy.random.Generator, optional
        Draws the source and measure errors within the datasheet (see the module notes).
    """

    idn = "KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b"
    CURRENT_RANGES_A = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
    VOLTAGE_RANGES_V = (20e-3, 200e-3, 2.0, 20.0, 200.0)
    # Keithley SPEC-2450 Rev. A (July 2013), 1 year, 23 degC +- 5 K, 1 PLC.
    SOURCE_VOLTAGE_SPEC = {20e-3: (500e-9, 0.100e-2, 200e-6), 200e-3: (5e-6, 0.015e-2, 200e-6),
                           2.0: (50e-6, 0.020e-2, 300e-6), 20.0: (500e-6, 0.015e-2, 2.4e-3),
                           200.0: (5e-3, 0.015e-2, 24e-3)}
    MEASURE_CURRENT_SPEC = {10e-9: (0.10e-2, 50e-12), 100e-9: (0.060e-2, 100e-12),
                            1e-6: (0.025e-2, 300e-12), 10e-6: (0.025e-2, 700e-12),
                            100e-6: (0.020e-2, 6e-9), 1e-3: (0.020e-2, 60e-9),
                            10e-3: (0.020e-2, 600e-9), 100e-3: (0.025e-2, 6e-6),
                            1.0: (0.030e-2, 500e-6)}
    RESISTANCE_RANGES_OHM = (20.0, 200.0, 2e3, 20e3, 200e3, 2e6, 20e6, 200e6)
    LIST_CAPACITY = 100_000
    BUFFER_CAPACITY = 100_000
    MAX_BUFFER_POINTS = 1_000_000
    SWEEP_CHUNK = 10_000
    MAX_SWEEP_POINTS = 10_000_000
    LINE_FREQUENCY_HZ = 60

    def __init__(self, load: Load, *, language: str = "SCPI", lock: threading.RLock | None = None,
                 seed: int = 0, accuracy: np.random.Generator | None = None) -> None:
        if language not in ("SCPI", "TSP", "SCPI2400"):
            raise ValueError(f"language must be SCPI, TSP or SCPI2400, got {language!r}")
        self.language = self.next_language = language
        self.buffers = {name: _Buffer(self.BUFFER_CAPACITY) for name in _DEFAULT_BUFFERS}
        super().__init__(load, lock=lock, seed=seed, accuracy=accuracy)

    def reset(self) -> None:
        self.sense = "CURR"
        self.sense_range: dict[str, float | None] = dict.fromkeys(_SENSES_2450)  # None: auto
        self.sense_nplc = dict.fromkeys(_SENSES_2450, 1.0)
        self.remote_sense = dict.fromkeys(_SENSES_2450, False)
        self.autozero = dict.fromkeys(_SENSES_2450, True)
        self.filter_on = dict.fromkeys(_SENSES_2450, False)
        self.filter_type = dict.fromkeys(_SENSES_2450, "REP")
        self.filter_count = dict.fromkeys(_SENSES_2450, 10)
        self.sense_user_delay_s = {f: [0.0] * len(_USER_DELAYS) for f in _SENSES_2450}
        self.sense_count = 1
        super().reset()
        self.current_level_a = 0.0
        self.current_source_range_a: float | None = None  # None: auto
        self.voltage_limit_v = 21.0
        self.manual_delay_s = dict.fromkeys(_SOURCES_2450, 0.0)
        self.auto_delay = dict.fromkeys(_SOURCES_2450, True)
        self.readback = dict.fromkeys(_SOURCES_2450, True)
        self.source_user_delay_s = {f: [0.0] * len(_USER_DELAYS) for f in _SOURCES_2450}
        self.off_state = dict.fromkeys(_SOURCES_2450, "NORM")
        self.terminals = "FRON"
        self.source_list: list[float] = []
        self.sweep: _Sweep | None = None
        self.buffers = {name: buffer for name, buffer in self.buffers.items()
                        if name in _DEFAULT_BUFFERS}
        for buffer in self.buffers.values():
            buffer.capacity = self.BUFFER_CAPACITY
            buffer.clear()

    # The measure range and NPLC of the active sense function (what ``measure`` uses).
    @property
    def current_range_a(self) -> float | None:
        return self.sense_range["CURR"]

    @current_range_a.setter
    def current_range_a(self, value: float | None) -> None:
        self.sense_range["CURR"] = value

    @property
    def nplc(self) -> float:
        return self.sense_nplc[self.sense]

    @nplc.setter
    def nplc(self, value: float) -> None:
        self.sense_nplc[self.sense] = value

    def _point_delay_s(self) -> float:
        manual = 0.0 if self.auto_delay["VOLT"] else self.manual_delay_s["VOLT"]
        return manual + self.source_delay_s

    def power_cycle(self) -> None:
        """Switch off and on: the ``*LANG`` choice takes effect, everything else is reset."""
        self.language = self.next_language
        self.reset()
        self._errors.clear()

    def _accepts(self, tokens: tuple[str, ...]) -> bool:
        return self.language == "SCPI" or tokens[0].startswith("*")

    def _reading(self, points: _Points) -> np.ndarray:
        if self.sense == "CURR":
            return points.current_a
        if self.sense == "VOLT":
            values = points.voltage_v.copy()
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.abs(points.voltage_v / points.current_a)
            values[~np.isfinite(values) | points.overflow] = OVERFLOW
        fixed = self.sense_range[self.sense]
        if fixed is not None:
            values[np.abs(values) > fixed * _OVERRANGE] = OVERFLOW
        return values

    def _buffer(self, name: str) -> _Buffer:
        try:
            return self.buffers[name if name in self.buffers else name.lower()]
        except KeyError:
            raise ScpiError(-224) from None

    def _store(self, points: _Points, buffer: str) -> _Buffer:
        target = self._buffer(buffer)
        target.extend(_Points(points.source_v, points.voltage_v, self._reading(points),
                              points.compliance, points.overflow, points.time_s))
        return target

    def _show_last(self, target: _Buffer, elements: tuple[str, ...]) -> str:
        count = len(target)
        return ",".join(map(self.format, target.rows(count, count, elements or ("READ",))))

    # ---- language and system -----------------------------------------------------------------
    @scpi("*LANG?")
    def _lang_query(self) -> str:
        return self.language

    @scpi("*LANG", Choice("SCPI", "TSP", "SCPI2400"))
    def _lang(self, language: str) -> None:
        self.next_language = language

    @scpi("*TRG")
    def _trg(self) -> None:
        """No trigger model waits for a bus trigger: nothing to do."""

    @scpi(":SYSTem:LFRequency?")
    def _line_frequency(self) -> str:
        return str(self.LINE_FREQUENCY_HZ)

    @scpi(":SYSTem:CLEar")
    def _system_clear(self) -> None:
        self._errors.clear()

    @scpi(":STATus:CLEar")
    def _status_clear(self) -> None:
        self._esr = 0

    @scpi(":SYSTem:BEEPer[:IMMediate]", Number(20, 8000, unit="HZ"), Number(0.001, 100, unit="S"))
    def _beep(self, frequency_hz: float, duration_s: float) -> None:
        """Silent."""

    @scpi(":ROUTe:TERMinals", Choice("FRONt", "REAR"))
    def _terminals(self, terminals: str) -> None:
        if self.output_on:
            raise ScpiError(-221)  # the output must be off to change terminals
        self.terminals = terminals

    @scpi(":ROUTe:TERMinals?")
    def _terminals_query(self) -> str:
        return self.terminals

    @scpi(":FORMat[:DATA]", Choice("ASCii"))
    def _format_data(self, kind: str) -> None:
        """ASCII only: REAL and SREAL (binary) are -224 here."""

    @scpi(":FORMat[:DATA]?")
    def _format_data_query(self) -> str:
        return "ASC"

    # ---- source: both functions' settings (only voltage is sourced) --------------------------
    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]", Number(1e-9, 1.05, unit="A"))
    def _limit(self, amps: float) -> None:
        self.limit_a = amps

    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]?")
    def _limit_query(self) -> str:
        return self.format(self.limit_a)

    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]:TRIPped?")
    def _limit_tripped(self) -> str:
        return "1" if self.tripped else "0"

    @scpi(":SOURce:CURRent:VLIMit[:LEVel]", Number(0.02, 210, unit="V"))
    def _voltage_limit(self, volts: float) -> None:
        self.voltage_limit_v = volts

    @scpi(":SOURce:CURRent:VLIMit[:LEVel]?")
    def _voltage_limit_query(self) -> str:
        return self.format(self.voltage_limit_v)

    @scpi(":SOURce:CURRent:VLIMit[:LEVel]:TRIPped?")
    def _voltage_limit_tripped(self) -> str:
        return "0"  # the current source never runs

    @scpi(":SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", Number(-1.05, 1.05, unit="A"))
    def _source_current(self, amps: float) -> None:
        if self.current_source_range_a is not None and abs(amps) > self.current_source_range_a * _OVERRANGE:
            raise ScpiError(-222)
        self.current_level_a = amps

    @scpi(":SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]?")
    def _source_current_query(self) -> str:
        return self.format(self.current_level_a)

    @scpi(":SOURce:CURRent:RANGe", Number(-1.05, 1.05, unit="A"))
    def _source_current_range(self, amps: float) -> None:
        chosen = _range_for(amps, self.CURRENT_RANGES_A)
        if abs(self.current_level_a) > chosen * _OVERRANGE:
            raise ScpiError(-221)
        self.current_source_range_a = chosen

    @scpi(":SOURce:CURRent:RANGe?")
    def _source_current_range_query(self) -> str:
        return self.format(self.current_source_range_a
                           or _range_for(self.current_level_a, self.CURRENT_RANGES_A))

    @scpi(":SOURce:CURRent:RANGe:AUTO", Boolean())
    def _source_current_range_auto(self, on: bool) -> None:
        if on:
            self.current_source_range_a = None
        elif self.current_source_range_a is None:
            self.current_source_range_a = _range_for(self.current_level_a, self.CURRENT_RANGES_A)

    @scpi(":SOURce:CURRent:RANGe:AUTO?")
    def _source_current_range_auto_query(self) -> str:
        return "1" if self.current_source_range_a is None else "0"

    @_per_function(_SOURCES_2450, ":DELay", Number(0, 10_000, unit="S"))
    def _source_delay(self, function: str, seconds: float) -> None:
        self.manual_delay_s[function] = seconds
        self.auto_delay[function] = False  # a delay turns auto delay off

    @_per_function(_SOURCES_2450, ":DELay?")
    def _source_delay_query(self, function: str) -> str:
        if not self.auto_delay[function]:
            return self.format(self.manual_delay_s[function])
        range_a = self.current_range_a or _range_for(min(self.limit_a, 1.0), self.CURRENT_RANGES_A)
        delay = _AUTO_DELAY_S.get(range_a, 2e-3 if function == "CURR" and range_a == 1.0 else 1e-3)
        return self.format(delay)

    @_per_function(_SOURCES_2450, ":DELay:AUTO", Boolean())
    def _source_auto_delay(self, function: str, on: bool) -> None:
        self.auto_delay[function] = on

    @_per_function(_SOURCES_2450, ":DELay:AUTO?")
    def _source_auto_delay_query(self, function: str) -> str:
        return "1" if self.auto_delay[function] else "0"

    @_per_user_delay(_SOURCES_2450, False, Number(0, 10_000, unit="S"))
    def _source_user_delay(self, function: str, n: int, seconds: float) -> None:
        self.source_user_delay_s[function][n - 1] = seconds

    @_per_user_delay(_SOURCES_2450, True)
    def _source_user_delay_query(self, function: str, n: int) -> str:
        return self.format(self.source_user_delay_s[function][n - 1])

    @_per_function(_SOURCES_2450, ":READ:BACK", Boolean())
    def _readback(self, function: str, on: bool) -> None:
        self.readback[function] = on

    @_per_function(_SOURCES_2450, ":READ:BACK?")
    def _readback_query(self, function: str) -> str:
        return "1" if self.readback[function] else "0"

    @scpi(":OUTPut:VOLTage:SMODe", Choice("NORMal", "HIMPedance", "ZERO", "GUARd"), bind=("VOLT",))
    @scpi(":OUTPut:CURRent:SMODe", Choice("NORMal", "HIMPedance", "ZERO", "GUARd"), bind=("CURR",))
    def _off_state(self, function: str, state: str) -> None:
        self.off_state[function] = state

    @scpi(":OUTPut:VOLTage:SMODe?", bind=("VOLT",))
    @scpi(":OUTPut:CURRent:SMODe?", bind=("CURR",))
    def _off_state_query(self, function: str) -> str:
        return self.off_state[function]

    # ---- sense: every function's settings ----------------------------------------------------
    @scpi(":SENSe:FUNCtion[:ON]", String())
    def _sense_function(self, name: str) -> None:
        functions = {"CURR": "CURR", "CURR:DC": "CURR", "CURRENT": "CURR", "CURRENT:DC": "CURR",
                     "VOLT": "VOLT", "VOLT:DC": "VOLT", "VOLTAGE": "VOLT", "VOLTAGE:DC": "VOLT",
                     "RES": "RES", "RESISTANCE": "RES"}
        try:
            self.sense = functions[name.upper()]
        except KeyError:
            raise ScpiError(-224) from None

    @scpi(":SENSe:FUNCtion[:ON]?")
    def _sense_function_query(self) -> str:
        return '"RES"' if self.sense == "RES" else f'"{self.sense}:DC"'

    def _sense_ranges(self, function: str) -> tuple[float, ...]:
        return {"CURR": self.CURRENT_RANGES_A, "VOLT": self.VOLTAGE_RANGES_V,
                "RES": self.RESISTANCE_RANGES_OHM}[function]

    def _auto_range(self, function: str) -> float:
        """The range auto range sits on now (current: the one holding the limit)."""
        ranges = self._sense_ranges(function)
        if function == "CURR":
            return _range_for(min(self.limit_a, 1.0), ranges)
        if function == "VOLT":
            return _range_for(self.level_v, ranges)
        conductance = self.load.conductance_s()
        ohms = 1 / conductance if conductance > 0 else math.inf
        return next((r for r in ranges if ohms <= r), ranges[-1])

    @scpi(":SENSe:CURRent[:DC]:RANGe[:UPPer]", Number(0, 1.05, unit="A"), bind=("CURR",))
    @scpi(":SENSe:VOLTage[:DC]:RANGe[:UPPer]", Number(0, 210, unit="V"), bind=("VOLT",))
    @scpi(":SENSe:RESistance:RANGe[:UPPer]", Number(0, 210e6, unit="OHM"), bind=("RES",))
    def _sense_range_set(self, function: str, value: float) -> None:
        self.sense_range[function] = _range_for(value, self._sense_ranges(function))

    @_per_function(_SENSES_2450, ":RANGe[:UPPer]?")
    def _sense_range_query(self, function: str) -> str:
        return self.format(self.sense_range[function] or self._auto_range(function))

    @_per_function(_SENSES_2450, ":RANGe:AUTO", Boolean())
    def _sense_range_auto(self, function: str, on: bool) -> None:
        if on:
            self.sense_range[function] = None
        elif self.sense_range[function] is None:
            self.sense_range[function] = self._auto_range(function)

    @_per_function(_SENSES_2450, ":RANGe:AUTO?")
    def _sense_range_auto_query(self, function: str) -> str:
        return "1" if self.sense_range[function] is None else "0"

    @_per_function(_SENSES_2450, ":NPLCycles", Number(0.01, 10))
    def _sense_nplc_set(self, function: str, nplc: float) -> None:
        self.sense_nplc[function] = nplc

    @_per_function(_SENSES_2450, ":NPLCycles?")
    def _sense_nplc_query(self, function: str) -> str:
        return self.format(self.sense_nplc[function])

    @_per_function(_SENSES_2450, ":RSENse", Boolean())
    def _remote_sense(self, function: str, on: bool) -> None:
        self.remote_sense[function] = on

    @_per_function(_SENSES_2450, ":RSENse?")
    def _remote_sense_query(self, function: str) -> str:
        return "1" if self.remote_sense[function] else "0"

    @_per_function(_SENSES_2450, ":AZERo[:STATe]", Boolean())
    def _autozero(self, function: str, on: bool) -> None:
        self.autozero[function] = on

    @_per_function(_SENSES_2450, ":AZERo[:STATe]?")
    def _autozero_query(self, function: str) -> str:
        return "1" if self.autozero[function] else "0"

    @scpi(":SENSe:AZERo:ONCE")
    def _autozero_once(self) -> None:
        """A fresh zero reference: nothing drifts in the simulated zero."""

    @_per_function(_SENSES_2450, ":AVERage[:STATe]", Boolean())
    def _filter(self, function: str, on: bool) -> None:
        self.filter_on[function] = on

    @_per_function(_SENSES_2450, ":AVERage[:STATe]?")
    def _filter_query(self, function: str) -> str:
        return "1" if self.filter_on[function] else "0"

    @_per_function(_SENSES_2450, ":AVERage:TCONtrol", Choice("REPeat", "MOVing"))
    def _filter_type(self, function: str, kind: str) -> None:
        self.filter_type[function] = kind

    @_per_function(_SENSES_2450, ":AVERage:TCONtrol?")
    def _filter_type_query(self, function: str) -> str:
        return self.filter_type[function]

    @_per_function(_SENSES_2450, ":AVERage:COUNt", Integer(1, 100))
    def _filter_count(self, function: str, count: int) -> None:
        self.filter_count[function] = count

    @_per_function(_SENSES_2450, ":AVERage:COUNt?")
    def _filter_count_query(self, function: str) -> str:
        return str(self.filter_count[function])

    @_per_user_delay(_SENSES_2450, False, Number(0, 10_000, unit="S"))
    def _sense_user_delay(self, function: str, n: int, seconds: float) -> None:
        self.sense_user_delay_s[function][n - 1] = seconds

    @_per_user_delay(_SENSES_2450, True)
    def _sense_user_delay_query(self, function: str, n: int) -> str:
        return self.format(self.sense_user_delay_s[function][n - 1])

    @scpi(":SENSe:COUNt", Integer(1, 300_000))
    def _sense_count(self, count: int) -> None:
        self.sense_count = count

    @scpi(":SENSe:COUNt?")
    def _sense_count_query(self) -> str:
        return str(self.sense_count)

    # ---- readings ----------------------------------------------------------------------------
    def _readings(self, buffer: str, elements: tuple[str, ...]) -> str:
        """``:SENS:COUN`` readings into the buffer; the reply shows the last one."""
        self._buffer(buffer)
        points = self.measure(np.full(self.sense_count, self.level_v))
        return self._show_last(self._store(points, buffer), elements)

    @scpi(":READ?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _read(self, buffer: str = "defbuffer1", *elements: str) -> str:
        return self._readings(buffer, elements)

    @scpi(":MEASure?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _measure(self, buffer: str = "defbuffer1", *elements: str) -> str:
        return self._readings(buffer, elements)

    @scpi(":MEASure:CURRent[:DC]?", String(), _ELEMENTS_2450, required=0, repeat_last=4,
          bind=("CURR",))
    @scpi(":MEASure:VOLTage[:DC]?", String(), _ELEMENTS_2450, required=0, repeat_last=4,
          bind=("VOLT",))
    @scpi(":MEASure:RESistance?", String(), _ELEMENTS_2450, required=0, repeat_last=4,
          bind=("RES",))
    def _measure_function(self, function: str, buffer: str = "defbuffer1", *elements: str) -> str:
        self._buffer(buffer)
        self.sense = function
        return self._readings(buffer, elements)

    @scpi(":FETCh?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _fetch(self, buffer: str = "defbuffer1", *elements: str) -> str:
        target = self._buffer(buffer)
        if not len(target):
            raise ScpiError(-230)
        return self._show_last(target, elements)

    # ---- source lists and sweeps -------------------------------------------------------------
    def _configure_sweep(self, levels: np.ndarray, delay_s: float, count: int, range_type: str,
                         fail_abort: bool, dual: bool, buffer: str) -> None:
        if 0 < delay_s < 50e-6:
            raise ScpiError(-222)  # a delay is -1 (auto), 0, or 50 us to 10 ks
        self._buffer(buffer)
        if range_type == "FIX" and self.source_range_v is not None:
            limit = self.source_range_v * _OVERRANGE  # a fixed range clamps what it cannot reach
            levels = np.clip(levels, -limit, limit)
        if dual:
            levels = np.concatenate([levels, levels[::-1]])
        self.sweep = _Sweep(levels, delay_s, count, buffer)

    @scpi(":SOURce:SWEep:VOLTage:LINear", Number(-210, 210, unit="V"), Number(-210, 210, unit="V"),
          Integer(2, 1_000_000), *_SWEEP_TAIL, required=3)
    def _sweep_linear(self, start_v: float, stop_v: float, points: int, delay_s: float = -1.0,
                      count: int = 1, range_type: str = "BEST", fail_abort: bool = True,
                      dual: bool = False, buffer: str = "defbuffer1") -> None:
        self._configure_sweep(np.linspace(start_v, stop_v, points), delay_s, count, range_type,
                              fail_abort, dual, buffer)

    @scpi(":SOURce:SWEep:VOLTage:LINear:STEP", Number(-210, 210, unit="V"),
          Number(-210, 210, unit="V"), Number(0, 420, unit="V"), *_SWEEP_TAIL, required=3)
    def _sweep_linear_step(self, start_v: float, stop_v: float, step_v: float, delay_s: float = -1.0,
                           count: int = 1, range_type: str = "BEST", fail_abort: bool = True,
                           dual: bool = False, buffer: str = "defbuffer1") -> None:
        if step_v <= 0:
            raise ScpiError(-222)
        points = int(math.floor(abs(stop_v - start_v) / step_v + 1e-9)) + 1
        if points > 1_000_000:
            raise ScpiError(-222)
        levels = start_v + math.copysign(step_v, stop_v - start_v) * np.arange(points)
        self._configure_sweep(levels, delay_s, count, range_type, fail_abort, dual, buffer)

    @scpi(":SOURce:SWEep:VOLTage:LOG", Number(-210, 210, unit="V"), Number(-210, 210, unit="V"),
          Integer(2, 1_000_000), *_SWEEP_TAIL, Number(-210, 210, unit="V"), required=3)
    def _sweep_log(self, start_v: float, stop_v: float, points: int, delay_s: float = -1.0,
                   count: int = 1, range_type: str = "BEST", fail_abort: bool = True,
                   dual: bool = False, buffer: str = "defbuffer1", asymptote_v: float = 0.0) -> None:
        # Levels are evenly spaced in log|level - asymptote|: both ends on one side of it.
        first, last = start_v - asymptote_v, stop_v - asymptote_v
        if first == 0 or last == 0 or (first > 0) != (last > 0):
            raise ScpiError(-222)
        levels = asymptote_v + np.sign(first) * np.geomspace(abs(first), abs(last), points)
        self._configure_sweep(levels, delay_s, count, range_type, fail_abort, dual, buffer)

    @scpi(":SOURce:SWEep:VOLTage:LIST", Integer(1, 100_000), Number(-1, 10_000, unit="S"),
          Integer(0, _SWEEP_COUNT_MAX), Boolean(), String(), required=1)
    def _sweep_list(self, start: int, delay_s: float = 0.0, count: int = 1,
                    fail_abort: bool = True, buffer: str = "defbuffer1") -> None:
        if start > len(self.source_list):
            raise ScpiError(-221)
        self._configure_sweep(np.asarray(self.source_list[start - 1:]), delay_s, count, "BEST",
                              fail_abort, False, buffer)

    @scpi(":INITiate[:IMMediate]")
    def _initiate(self) -> None:
        """Run the trigger model: the configured sweep (output on), else one reading."""
        if self.sweep is None:
            self._store(self.measure(np.array([self.level_v])), "defbuffer1")
        else:
            self._run_sweep(self.sweep)

    def _run_sweep(self, sweep: _Sweep) -> None:
        """Source every level ``count`` times, in chunks of bounded size."""
        levels = sweep.levels_v
        total = len(levels) * sweep.count
        if sweep.count == 0 or total > self.MAX_SWEEP_POINTS:
            raise ScpiError(-225)
        self.output_on = True
        previous, self.source_delay_s = self.source_delay_s, max(sweep.delay_s, 0.0)
        try:
            for offset in range(0, total, self.SWEEP_CHUNK):
                index = np.arange(offset, min(offset + self.SWEEP_CHUNK, total)) % len(levels)
                points = self.measure(levels[index])
                self._store(points, sweep.buffer)
                self.level_v = float(points.source_v[-1])
                self.yield_lock()  # let the other instruments of the lab in between chunks
        finally:
            self.source_delay_s = previous

    @scpi(":ABORt")
    def _abort(self) -> None:
        """Trigger models run to completion at :INIT; nothing is left to abort."""

    # ---- buffers -----------------------------------------------------------------------------
    @scpi(":TRACe:MAKE", String(), Integer(10, 5_000_000), Choice("STANdard", "COMPact", "FULL"),
          required=2)
    def _trace_make(self, name: str, capacity: int, style: str = "STAN") -> None:
        if not name or name.lower() in self.buffers or not name[0].isalpha() or len(name) > 31:
            raise ScpiError(-224)
        if sum(b.capacity for b in self.buffers.values()) + capacity > self.MAX_BUFFER_POINTS:
            raise ScpiError(-225)
        self.buffers[name] = _Buffer(capacity)

    @scpi(":TRACe:DELete", String())
    def _trace_delete(self, name: str) -> None:
        if name.lower() in _DEFAULT_BUFFERS or name not in self.buffers:
            raise ScpiError(-224)  # the default buffers cannot be deleted
        del self.buffers[name]

    @scpi(":TRACe:TRIGger", String(), required=0)
    def _trace_trigger(self, buffer: str = "defbuffer1") -> None:
        self._buffer(buffer)
        self._store(self.measure(np.array([self.level_v])), buffer)

    @scpi(":TRACe:DATA?", Integer(1, 10**9), Integer(1, 10**9), String(), _ELEMENTS_2450,
          required=2, repeat_last=4)
    def _trace_data(self, start: int, end: int, buffer: str = "defbuffer1", *elements: str) -> str:
        values = self._buffer(buffer).rows(start, end, elements or ("READ",))
        return ",".join(map(self.format, values))

    @scpi(":TRACe:CLEar", String(), required=0)
    def _trace_clear(self, buffer: str = "defbuffer1") -> None:
        self._buffer(buffer).clear()

    @scpi(":TRACe:ACTual?", String(), required=0)
    def _trace_actual(self, buffer: str = "defbuffer1") -> str:
        return str(len(self._buffer(buffer)))

    @scpi(":TRACe:ACTual:STARt?", String(), required=0)
    def _trace_actual_start(self, buffer: str = "defbuffer1") -> str:
        return "1" if len(self._buffer(buffer)) else "0"

    @scpi(":TRACe:ACTual:END?", String(), required=0)
    def _trace_actual_end(self, buffer: str = "defbuffer1") -> str:
        return str(len(self._buffer(buffer)))

    @scpi(":TRACe:POINts", Integer(10, 5_000_000), String(), required=1)
    def _trace_points(self, capacity: int, buffer: str = "defbuffer1") -> None:
        target = self._buffer(buffer)
        others = sum(b.capacity for b in self.buffers.values() if b is not target)
        if others + capacity > self.MAX_BUFFER_POINTS:
            raise ScpiError(-225)
        target.capacity = capacity
        target.clear()

    @scpi(":TRACe:POINts?", String(), required=0)
    def _trace_points_query(self, buffer: str = "defbuffer1") -> str:
        return str(self._buffer(buffer).capacity)

    @scpi(":TRACe:STATistics:AVERage?", String(), required=0, bind=("mean",))
    @scpi(":TRACe:STATistics:MAXimum?", String(), required=0, bind=("max",))
    @scpi(":TRACe:STATistics:MINimum?", String(), required=0, bind=("min",))
    @scpi(":TRACe:STATistics:STDDev?", String(), required=0, bind=("std",))
    def _trace_statistic(self, statistic: str, buffer: str = "defbuffer1") -> str:
        """A statistic of the buffer's readings (an empty buffer: the overflow value)."""
        readings = self._buffer(buffer).column("READ")
        if statistic == "std":
            return self.format(float(readings.std(ddof=1)) if len(readings) > 1 else 0.0)
        return self.format(float(getattr(readings, statistic)()) if len(readings) else OVERFLOW)


# ------------------------------------------------------------------------------------------------
# Keithley 2400 series (SCPI)
# ------------------------------------------------------------------------------------------------

_ELEMENT_ORDER = ("VOLT", "CURR", "RES", "TIME", "STAT")
_STATUS_OVERFLOW, _STATUS_COMPLIANCE = 1 << 0, 1 << 3
_BUFFER_FULL = 1 << 9  # measurement event register


class SimKeithley2400(_SourceMeter):
    """A Keithley 2400-series SourceMeter (voltage source, current measure).

    ``:READ?`` runs ``:ARM:COUN`` x ``:TRIG:COUN`` points (at most 2,500 together; the source
    list in ``:SOUR:VOLT:MODE LIST``, cycling if the count is longer) and returns every point's
    ``:FORM:ELEM`` elements, in the fixed order VOLT, CURR, RES, TIME, STAT. STAT bit 0 is a
    range overflow, bit 3 real compliance. With ``:TRAC:FEED:CONT NEXT`` the readings also fill
    the buffer (``:TRAC:POIN``, ``:TRAC:DATA?``, statistics by ``:CALC3``); a full buffer sets bit
    9 of the measurement event register, summarised in ``*STB?`` bit 0 when enabled
    (``:STAT:MEAS:ENAB 512``). Other settings drivers read and write (source delay and auto delay,
    autozero, output-off state, averaging filter, voltage compliance, resistance mode and range,
    trigger and arm layer) are kept and read back; they do not change the physics.

    Parameters
    ----------
    load : Load
        What the terminals are connected to.
    accuracy : numpy.random.Generator, optional
        Draws the source and measure errors within the datasheet (see the module notes).
    """

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4105270,C32   Oct  4 2010 14:20:11/A02  /S/K"
    CURRENT_RANGES_A = (1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
    # Keithley SPEC-2400 Rev. H (2004), 1 year, 23 degC +- 5 K.
    SOURCE_VOLTAGE_SPEC = {0.2: (5e-6, 0.02e-2, 600e-6), 2.0: (50e-6, 0.02e-2, 600e-6),
                           20.0: (500e-6, 0.02e-2, 2.4e-3), 200.0: (5e-3, 0.02e-2, 24e-3)}
    MEASURE_CURRENT_SPEC = {1e-6: (0.029e-2, 300e-12), 10e-6: (0.027e-2, 700e-12),
                            100e-6: (0.025e-2, 6e-9), 1e-3: (0.027e-2, 60e-9),
                            10e-3: (0.035e-2, 600e-9), 100e-3: (0.055e-2, 6e-6),
                            1.0: (0.22e-2, 570e-6)}
    LIST_CAPACITY = 2500
    MAX_POINTS = 2500  # arm count x trigger count, and the buffer

    def __init__(self, load: Load, *, lock: threading.RLock | None = None, seed: int = 0,
                 accuracy: np.random.Generator | None = None) -> None:
        super().__init__(load, lock=lock, seed=seed, accuracy=accuracy)
        self._time_zero_s = load.time_s

    def reset(self) -> None:
        super().reset()
        self.elements: tuple[str, ...] = _ELEMENT_ORDER
        self.list_mode = False
        self.source_list: list[float] = []
        self.trigger_count = 1
        self.arm_count = 1
        self.last: _Points | None = None
        self.settings: dict[str, str] = {
            "auto_delay": "1", "auto_clear": "0", "autozero": "1", "off_state": "NORM",
            "filter": "0", "filter_type": "REP", "filter_count": "10", "resistance_mode": "MAN",
            "trigger_delay": self.format(0.0), "arm_timer": self.format(0.1),
            "trigger_source": "IMM", "arm_source": "IMM", "source_current": self.format(0.0),
            "voltage_compliance": self.format(21.0), "arm_input_line": "1",
            "arm_output_line": "2", "arm_output": "NONE", "trigger_input_line": "1",
            "trigger_output_line": "2", "trigger_output": "NONE", "display": "1",
            "terminals": "FRON", "remote_sense": "0", "line_frequency": "60",
            "line_frequency_auto": "1"}
        self.voltage_range_v: float | None = None  # None: auto
        self.resistance_range_ohm: float | None = None
        self.current_source_range_a: float | None = None
        self.buffer_points = 100
        self.feed_next = False
        self.buffer: list[np.ndarray] = []  # rows of every element, one per stored reading
        self.statistic = "MEAN"
        self.measurement_events = 0
        self.measurement_enable = 0

    @staticmethod
    def format(value: float) -> str:
        return f"{value:+.6E}"

    def _run(self) -> _Points:
        count = self.trigger_count * self.arm_count
        if self.list_mode:
            if not self.source_list:
                raise ScpiError(-221)
            values = np.resize(np.asarray(self.source_list), count)
        else:
            values = np.full(count, self.level_v)
        self.last = self.measure(values)
        if self.feed_next:
            room = self.buffer_points - len(self.buffer)
            self.buffer.extend(self._columns(self.last)[:room])
            if len(self.buffer) >= self.buffer_points:
                self.feed_next = False  # a full buffer stops storing (feed control NEVer)
                self.measurement_events |= _BUFFER_FULL
        return self.last

    def _columns(self, points: _Points) -> np.ndarray:
        """``(points, 5)``: VOLT, CURR, RES, TIME, STAT of every point."""
        status = (np.where(points.overflow, _STATUS_OVERFLOW, 0)
                  | np.where(points.compliance, _STATUS_COMPLIANCE, 0))
        return np.column_stack([points.voltage_v, points.current_a,
                                np.full(points.current_a.shape, OVERFLOW),
                                points.time_s - self._time_zero_s, status.astype(float)])

    def _selected(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, [index for index, name in enumerate(_ELEMENT_ORDER) if name in self.elements]]

    def _show(self, points: _Points) -> str:
        return ",".join(map(self.format, self._selected(self._columns(points)).ravel().tolist()))

    def _summary_bits(self) -> int:
        return 1 if self.measurement_events & self.measurement_enable else 0

    # ---- compliance and format ---------------------------------------------------------------
    @scpi(":SENSe:CURRent[:DC]:PROTection[:LEVel]", Number(1e-9, 1.05, unit="A"))
    def _compliance(self, amps: float) -> None:
        self.limit_a = amps

    @scpi(":SENSe:CURRent[:DC]:PROTection[:LEVel]?")
    def _compliance_query(self) -> str:
        return self.format(self.limit_a)

    @scpi(":SENSe:CURRent[:DC]:PROTection:TRIPped?")
    def _compliance_tripped(self) -> str:
        return "1" if self.tripped else "0"

    @scpi(":SENSe:FUNCtion[:ON]", String(), repeat_last=3)
    def _sense_function(self, *names: str) -> None:
        if not all(name.upper() in ("CURR", "CURR:DC", "CURRENT", "CURRENT:DC", "VOLT", "VOLT:DC",
                                    "VOLTAGE", "VOLTAGE:DC") for name in names):
            raise ScpiError(-224)

    @scpi(":SENSe:FUNCtion[:ON]?")
    def _sense_function_query(self) -> str:
        return '"VOLT:DC","CURR:DC"'

    @scpi(":FORMat:ELEMents[:SENSe]", Choice("VOLTage", "CURRent", "RESistance", "TIME", "STATus"),
          repeat_last=5)
    def _elements(self, *names: str) -> None:
        self.elements = tuple(name for name in _ELEMENT_ORDER if name in names)

    @scpi(":FORMat:ELEMents[:SENSe]?")
    def _elements_query(self) -> str:
        return ",".join(self.elements)

    @scpi(":SOURce:DELay", Number(0, 9999.999, unit="S"))
    def _source_delay(self, seconds: float) -> None:
        self.source_delay_s = seconds
        self.settings["auto_delay"] = "0"  # a manual delay turns auto delay off

    @scpi(":SOURce:DELay?")
    def _source_delay_query(self) -> str:
        return self.format(self.source_delay_s)

    # ---- lists and triggering ----------------------------------------------------------------
    @scpi(":SOURce:VOLTage:MODE", Choice("FIXed", "LIST"))
    def _mode(self, mode: str) -> None:
        self.list_mode = mode == "LIST"

    @scpi(":SOURce:VOLTage:MODE?")
    def _mode_query(self) -> str:
        return "LIST" if self.list_mode else "FIX"


    @scpi(":TRIGger:COUNt", Integer(1, 2500))
    def _trigger_count(self, count: int) -> None:
        if count * self.arm_count > self.MAX_POINTS:
            raise ScpiError(-221)  # arm count x trigger count is at most 2,500
        self.trigger_count = count

    @scpi(":ARM:COUNt", Integer(1, 2500))
    def _arm_count(self, count: int) -> None:
        if count * self.trigger_count > self.MAX_POINTS:
            raise ScpiError(-221)
        self.arm_count = count

    @scpi(":ARM:COUNt?")
    def _arm_count_query(self) -> str:
        return str(self.arm_count)

    @scpi(":TRIGger:COUNt?")
    def _trigger_count_query(self) -> str:
        return str(self.trigger_count)

    @scpi(":INITiate[:IMMediate]")
    def _initiate(self) -> None:
        self._run()

    @scpi(":ABORt")
    def _abort(self) -> None:
        """Triggering runs to completion at :INIT; nothing is left to abort."""

    @scpi(":FETCh?")
    def _fetch(self) -> str:
        if self.last is None:
            raise ScpiError(-230)
        return self._show(self.last)

    @scpi(":READ?")
    def _read(self) -> str:
        return self._show(self._run())

    @scpi(":MEASure[:CURRent][:DC]?")
    def _measure_current(self) -> str:
        return self._read()

    @scpi(":MEASure:VOLTage[:DC]?")
    @scpi(":MEASure:RESistance?")
    def _measure_other(self) -> str:
        return self._read()

    @scpi(":SYSTem:TIME:RESet")
    def _time_reset(self) -> None:
        self._time_zero_s = self.load.time_s

    @scpi("*TRG")
    def _trg(self) -> None:
        """Trigger sources are immediate here: a bus trigger has nothing to release."""

    # ---- status: the measurement event register (bit 9: buffer full) ------------------------
    @scpi("*CLS")
    def _cls(self) -> None:
        super()._cls()
        self.measurement_events = 0

    @scpi(":STATus:PRESet")
    def _status_preset(self) -> None:
        self.measurement_enable = 0

    @scpi(":STATus:MEASurement:ENABle", Integer(0, 65535))
    def _measurement_enable(self, mask: int) -> None:
        self.measurement_enable = mask

    @scpi(":STATus:MEASurement:ENABle?")
    def _measurement_enable_query(self) -> str:
        return str(self.measurement_enable)

    @scpi(":STATus:MEASurement[:EVENt]?")
    def _measurement_event(self) -> str:
        value, self.measurement_events = self.measurement_events, 0
        return str(value)

    # ---- buffer and its statistics -----------------------------------------------------------
    @scpi(":TRACe:CLEar")
    def _trace_clear(self) -> None:
        self.buffer = []
        self.measurement_events &= ~_BUFFER_FULL

    @scpi(":TRACe:POINts", Integer(1, 2500))
    def _trace_points(self, points: int) -> None:
        self.buffer_points = points

    @scpi(":TRACe:POINts?")
    def _trace_points_query(self) -> str:
        return str(self.buffer_points)

    @scpi(":TRACe:POINts:ACTual?")
    def _trace_actual(self) -> str:
        return str(len(self.buffer))

    @scpi(":TRACe:FEED", Choice("SENSe", "CALCulate1", "CALCulate2"))
    def _trace_feed(self, source: str) -> None:
        """Readings are stored as measured (SENSe); the math feeds are accepted as such."""

    @scpi(":TRACe:FEED:CONTrol", Choice("NEXT", "NEVer"))
    def _feed_control(self, control: str) -> None:
        self.feed_next = control == "NEXT"

    @scpi(":TRACe:FEED:CONTrol?")
    def _feed_control_query(self) -> str:
        return "NEXT" if self.feed_next else "NEV"

    @scpi(":TRACe:DATA?")
    def _trace_data(self) -> str:
        if not self.buffer:
            raise ScpiError(-230)
        return ",".join(map(self.format, self._selected(np.asarray(self.buffer)).ravel().tolist()))

    @scpi(":FORMat[:DATA]", Choice("ASCii"))
    def _format_data(self, kind: str) -> None:
        """ASCII only: binary formats are -224 here."""

    @scpi(":CALCulate3:FORMat", Choice("MEAN", "SDEViation", "MAXimum", "MINimum", "PKPK"))
    def _statistic(self, statistic: str) -> None:
        self.statistic = statistic

    @scpi(":CALCulate3:FORMat?")
    def _statistic_query(self) -> str:
        return self.statistic

    @scpi(":CALCulate3:DATA?")
    def _statistic_data(self) -> str:
        """The statistic of each selected measured element (VOLT, CURR, RES) over the buffer."""
        if not self.buffer:
            raise ScpiError(-230)
        rows = np.asarray(self.buffer)
        picked = [i for i, name in enumerate(_ELEMENT_ORDER[:3]) if name in self.elements]
        data = rows[:, picked]
        value = {"MEAN": lambda: data.mean(axis=0),
                 "SDEV": lambda: data.std(axis=0, ddof=1) if len(data) > 1 else 0 * data[0],
                 "MAX": lambda: data.max(axis=0), "MIN": lambda: data.min(axis=0),
                 "PKPK": lambda: data.max(axis=0) - data.min(axis=0)}[self.statistic]()
        return ",".join(map(self.format, np.atleast_1d(value).tolist()))

    # ---- settings kept and read back ---------------------------------------------------------
    @scpi(":SOURce:DELay:AUTO", Boolean(), bind=("auto_delay",))
    @scpi(":SOURce:CLEar:AUTO", Boolean(), bind=("auto_clear",))
    @scpi(":SENSe:AVERage[:STATe]", Boolean(), bind=("filter",))
    @scpi(":DISPlay:ENABle", Boolean(), bind=("display",))
    @scpi(":SYSTem:RSENse", Boolean(), bind=("remote_sense",))
    @scpi(":SYSTem:LFRequency:AUTO", Boolean(), bind=("line_frequency_auto",))
    def _flag(self, name: str, on: bool) -> None:
        self.settings[name] = "1" if on else "0"

    @scpi(":SYSTem:AZERo[:STATe]", Choice("ON", "OFF", "ONCE", "1", "0"))
    def _autozero(self, state: str) -> None:
        if state != "ONCE":  # ONCE refreshes the zero and leaves the state alone
            self.settings["autozero"] = "1" if state in ("ON", "1") else "0"

    @scpi(":OUTPut:SMODe", Choice("HIMPedance", "NORMal", "ZERO", "GUARd"), bind=("off_state",))
    @scpi(":SENSe:AVERage:TCONtrol", Choice("REPeat", "MOVing"), bind=("filter_type",))
    @scpi(":SENSe:RESistance:MODE", Choice("MANual", "AUTO"), bind=("resistance_mode",))
    @scpi(":TRIGger:SOURce", Choice("IMMediate", "TLINk"), bind=("trigger_source",))
    @scpi(":ARM:SOURce", Choice("IMMediate", "TIMer", "MANual", "BUS", "TLINk", "NSTest",
                                "PSTest", "BSTest"), bind=("arm_source",))
    @scpi(":ARM[:SEQuence][:LAYer]:OUTPut", Choice("TENTer", "TEXit", "NONE"), bind=("arm_output",))
    @scpi(":TRIGger[:SEQuence]:OUTPut", Choice("SOURce", "DELay", "SENSe", "NONE"),
          bind=("trigger_output",))
    @scpi(":ROUTe:TERMinals", Choice("FRONt", "REAR"), bind=("terminals",))
    @scpi(":SYSTem:LFRequency", Choice("50", "60"), bind=("line_frequency",))
    def _choice(self, name: str, value: str) -> None:
        self.settings[name] = value

    @scpi(":SENSe:AVERage:COUNt", Integer(1, 100), bind=("filter_count",))
    @scpi(":ARM[:SEQuence][:LAYer]:ILINe", Integer(1, 4), bind=("arm_input_line",))
    @scpi(":ARM[:SEQuence][:LAYer]:OLINe", Integer(1, 4), bind=("arm_output_line",))
    @scpi(":TRIGger[:SEQuence]:ILINe", Integer(1, 4), bind=("trigger_input_line",))
    @scpi(":TRIGger[:SEQuence]:OLINe", Integer(1, 4), bind=("trigger_output_line",))
    def _integer(self, name: str, value: int) -> None:
        self.settings[name] = str(value)

    @scpi(":TRIGger:DELay", Number(0, 999.9999, unit="S"), bind=("trigger_delay",))
    @scpi(":ARM:TIMer", Number(0.001, 99999.99, unit="S"), bind=("arm_timer",))
    @scpi(":SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", Number(-1.05, 1.05, unit="A"),
          bind=("source_current",))
    @scpi(":SENSe:VOLTage[:DC]:PROTection[:LEVel]", Number(0.2, 210, unit="V"),
          bind=("voltage_compliance",))
    def _number(self, name: str, value: float) -> None:
        self.settings[name] = self.format(value)

    @scpi(":SOURce:DELay:AUTO?", bind=("auto_delay",))
    @scpi(":SOURce:CLEar:AUTO?", bind=("auto_clear",))
    @scpi(":SENSe:AVERage[:STATe]?", bind=("filter",))
    @scpi(":SYSTem:AZERo[:STATe]?", bind=("autozero",))
    @scpi(":OUTPut:SMODe?", bind=("off_state",))
    @scpi(":SENSe:AVERage:TCONtrol?", bind=("filter_type",))
    @scpi(":SENSe:RESistance:MODE?", bind=("resistance_mode",))
    @scpi(":TRIGger:SOURce?", bind=("trigger_source",))
    @scpi(":ARM:SOURce?", bind=("arm_source",))
    @scpi(":SENSe:AVERage:COUNt?", bind=("filter_count",))
    @scpi(":TRIGger:DELay?", bind=("trigger_delay",))
    @scpi(":ARM:TIMer?", bind=("arm_timer",))
    @scpi(":SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]?", bind=("source_current",))
    @scpi(":SENSe:VOLTage[:DC]:PROTection[:LEVel]?", bind=("voltage_compliance",))
    @scpi(":ARM[:SEQuence][:LAYer]:ILINe?", bind=("arm_input_line",))
    @scpi(":ARM[:SEQuence][:LAYer]:OLINe?", bind=("arm_output_line",))
    @scpi(":ARM[:SEQuence][:LAYer]:OUTPut?", bind=("arm_output",))
    @scpi(":TRIGger[:SEQuence]:ILINe?", bind=("trigger_input_line",))
    @scpi(":TRIGger[:SEQuence]:OLINe?", bind=("trigger_output_line",))
    @scpi(":TRIGger[:SEQuence]:OUTPut?", bind=("trigger_output",))
    @scpi(":DISPlay:ENABle?", bind=("display",))
    @scpi(":ROUTe:TERMinals?", bind=("terminals",))
    @scpi(":SYSTem:RSENse?", bind=("remote_sense",))
    @scpi(":SYSTem:LFRequency?", bind=("line_frequency",))
    @scpi(":SYSTem:LFRequency:AUTO?", bind=("line_frequency_auto",))
    def _setting(self, name: str) -> str:
        return self.settings[name]

    @scpi(":TRIGger:CLEar")
    def _trigger_clear(self) -> None:
        """No trigger is pending."""

    @scpi(":SENSe:FUNCtion:ALL")
    @scpi(":SENSe:FUNCtion:OFF:ALL")
    def _functions_all(self) -> None:
        """Every reading carries every element here: nothing to switch."""

    @scpi(":SENSe:FUNCtion:CONCurrent", Boolean())
    def _concurrent(self, on: bool) -> None:
        """Concurrent measurements are always on here."""

    # Ranges the 2400 keeps for its other functions (resistance is not measured: RES reads
    # 9.91e37), each with auto range.
    @scpi(":SENSe:VOLTage[:DC]:RANGe[:UPPer]", Number(0, 210, unit="V"), bind=("voltage_range_v",))
    @scpi(":SENSe:RESistance:RANGe[:UPPer]", Number(0, 2.1e8), bind=("resistance_range_ohm",))
    @scpi(":SOURce:CURRent:RANGe", Number(-1.05, 1.05, unit="A"), bind=("current_source_range_a",))
    def _other_range(self, name: str, value: float) -> None:
        ranges = {"voltage_range_v": (0.2, 2.0, 20.0, 200.0),
                  "resistance_range_ohm": (20.0, 200.0, 2e3, 20e3, 200e3, 2e6, 20e6, 200e6),
                  "current_source_range_a": self.CURRENT_RANGES_A}[name]
        setattr(self, name, _range_for(value, ranges))

    @scpi(":SENSe:VOLTage[:DC]:RANGe[:UPPer]?", bind=("voltage_range_v", 21.0))
    @scpi(":SENSe:RESistance:RANGe[:UPPer]?", bind=("resistance_range_ohm", 2.1e5))
    @scpi(":SOURce:CURRent:RANGe?", bind=("current_source_range_a", 1e-6))
    def _other_range_query(self, name: str, auto_value: float) -> str:
        return self.format(getattr(self, name) or auto_value)

    @scpi(":SENSe:VOLTage[:DC]:RANGe:AUTO", Boolean(), bind=("voltage_range_v", 20.0))
    @scpi(":SENSe:RESistance:RANGe:AUTO", Boolean(), bind=("resistance_range_ohm", 2e5))
    @scpi(":SOURce:CURRent:RANGe:AUTO", Boolean(), bind=("current_source_range_a", 1e-6))
    def _other_range_auto(self, name: str, fixed: float, on: bool) -> None:
        if on:
            setattr(self, name, None)
        elif getattr(self, name) is None:
            setattr(self, name, fixed)

    @scpi(":SENSe:VOLTage[:DC]:RANGe:AUTO?", bind=("voltage_range_v",))
    @scpi(":SENSe:RESistance:RANGe:AUTO?", bind=("resistance_range_ohm",))
    @scpi(":SOURce:CURRent:RANGe:AUTO?", bind=("current_source_range_a",))
    def _other_range_auto_query(self, name: str) -> str:
        return "1" if getattr(self, name) is None else "0"

    @scpi(":SENSe:RESistance:NPLCycles", Number(0.01, 10))
    def _resistance_nplc(self, nplc: float) -> None:
        self.nplc = nplc  # one integration time for every function on the 2400

    @scpi(":SENSe:RESistance:NPLCycles?")
    def _resistance_nplc_query(self) -> str:
        return self.format(self.nplc)
