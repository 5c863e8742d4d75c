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
- with the output off the terminals are open: the reading is noise alone.

Not simulated: sourcing current (``:SOUR:FUNC CURR`` is refused with -224) and resistance
measurements (the 2400's ``RES`` element reads ``9.91e37``, as it does with ohms off).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

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


class _SourceMeter(ScpiDevice):
    """The state and the physics both SMU models share (voltage source, current measure)."""

    CURRENT_RANGES_A: tuple[float, ...] = ()
    VOLTAGE_RANGES_V: tuple[float, ...] = (0.2, 2.0, 20.0, 200.0)
    MAX_VOLTAGE_V = 210.0
    LIST_CAPACITY: int  # points a source list holds

    def __init__(self, load: Load, *, lock: threading.RLock | None = None, seed: int = 0) -> None:
        self.load = load
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

    def measure(self, source_v: np.ndarray) -> _Points:
        """Source each voltage in turn and measure the current, as the instrument would."""
        source_v = np.asarray(source_v, dtype=float)
        conductance = self.load.conductance_s() if self.output_on else 0.0
        if np.isinf(conductance):
            current = np.where(source_v == 0, 0.0, np.sign(source_v) * np.inf)
        else:
            current = conductance * source_v
        compliance = np.abs(current) > self.limit_a
        current = np.clip(current, -self.limit_a, self.limit_a)
        voltage = source_v.copy() if self.output_on else np.zeros_like(source_v)
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
        overflow = np.abs(reading) > range_a * _OVERRANGE
        reading[overflow] = OVERFLOW
        step_s = self.nplc * _PLC_S + self.source_delay_s
        start = self.load.time_s
        self.load.advance_time(step_s * len(source_v))
        self.tripped = bool(compliance[-1]) if len(compliance) else self.tripped
        return _Points(source_v, voltage, reading, compliance, overflow,
                       start + step_s * np.arange(1, len(source_v) + 1))

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

_BUFFERS = ("defbuffer1", "defbuffer2")
_ELEMENTS_2450 = Choice("READing", "SOURce", "RELative", "SEConds")

class _Buffer:
    """A reading buffer: parallel lists of reading, source value and time; oldest dropped when full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self.columns: dict[str, list[float]] = {"READ": [], "SOUR": [], "SEC": []}

    def __len__(self) -> int:
        return len(self.columns["READ"])

    def extend(self, points: _Points) -> None:
        for name, values in (("READ", points.current_a), ("SOUR", points.source_v),
                             ("SEC", points.time_s)):
            column = self.columns[name]
            column.extend(values.tolist())
            del column[: max(0, len(column) - self.capacity)]

    def rows(self, start: int, end: int, elements: tuple[str, ...]) -> list[float]:
        """Elements of readings ``start..end`` (1-based, inclusive), interleaved point by point."""
        if not 1 <= start <= end <= len(self):
            raise ScpiError(-222)
        first_s = self.columns["SEC"][0]
        picked = []
        for index in range(start - 1, end):
            for element in elements:
                if element == "REL":
                    picked.append(self.columns["SEC"][index] - first_s)
                else:
                    picked.append(self.columns[element][index])
        return picked


class SimKeithley2450(_SourceMeter):
    """A Keithley 2450 SourceMeter answering its SCPI command set.

    Parameters
    ----------
    load : Load
        What the terminals are connected to.
    language : {"SCPI", "TSP", "SCPI2400"}
        The command set selected on the front panel (``*LANG?``). In ``TSP`` and ``SCPI2400``
        only the common commands are understood; everything else is -113, so a driver must check
        ``*LANG?`` first. ``*LANG <set>`` takes effect at the next :meth:`power_cycle`.
    """

    idn = "KEITHLEY INSTRUMENTS,MODEL 2450,04416932,1.7.12b"
    CURRENT_RANGES_A = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
    VOLTAGE_RANGES_V = (20e-3, 200e-3, 2.0, 20.0, 200.0)
    LIST_CAPACITY = 100_000
    BUFFER_CAPACITY = 100_000

    def __init__(self, load: Load, *, language: str = "SCPI", lock: threading.RLock | None = None,
                 seed: int = 0) -> None:
        if language not in ("SCPI", "TSP", "SCPI2400"):
            raise ValueError(f"language must be SCPI, TSP or SCPI2400, got {language!r}")
        self.language = self.next_language = language
        self.buffers = {name: _Buffer(self.BUFFER_CAPACITY) for name in _BUFFERS}
        super().__init__(load, lock=lock, seed=seed)

    def reset(self) -> None:
        super().reset()
        self.sense = "CURR"
        self.source_list: list[float] = []
        self.sweep: tuple[int, float, int] | None = None  # (start index, delay, count)
        for buffer in self.buffers.values():
            buffer.clear()

    def power_cycle(self) -> None:
        """Switch off and on: the ``*LANG`` choice takes effect, everything else is reset."""
        self.language = self.next_language
        self.reset()
        self._errors.clear()

    def _accepts(self, tokens: tuple[str, ...]) -> bool:
        return self.language == "SCPI" or tokens[0].startswith("*")

    def _reading(self, points: _Points) -> np.ndarray:
        return points.voltage_v if self.sense == "VOLT" else points.current_a

    def _buffer(self, name: str) -> _Buffer:
        try:
            return self.buffers[name.lower()]
        except KeyError:
            raise ScpiError(-224) from None

    def _store_and_show(self, points: _Points, buffer: str, elements: tuple[str, ...]) -> str:
        target = self._buffer(buffer)
        shown = _Points(points.source_v, points.voltage_v, self._reading(points), points.compliance,
                        points.overflow, points.time_s)
        target.extend(shown)
        count = len(target)
        return ",".join(map(self.format, target.rows(count, count, elements or ("READ",))))

    # ---- language ----------------------------------------------------------------------------
    @scpi("*LANG?")
    def _lang_query(self) -> str:
        return self.language

    @scpi("*LANG", Choice("SCPI", "TSP", "SCPI2400"))
    def _lang(self, language: str) -> None:
        self.next_language = language

    # ---- source and limits -------------------------------------------------------------------
    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]", Number(1e-9, 1.05, unit="A"))
    def _limit(self, amps: float) -> None:
        self.limit_a = amps

    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]?")
    def _limit_query(self) -> str:
        return self.format(self.limit_a)

    @scpi(":SOURce:VOLTage:ILIMit[:LEVel]:TRIPped?")
    def _limit_tripped(self) -> str:
        return "1" if self.tripped else "0"

    @scpi(":SENSe:FUNCtion[:ON]", String())
    def _sense_function(self, name: str) -> None:
        functions = {"CURR": "CURR", "CURR:DC": "CURR", "CURRENT": "CURR", "CURRENT:DC": "CURR",
                     "VOLT": "VOLT", "VOLT:DC": "VOLT", "VOLTAGE": "VOLT", "VOLTAGE:DC": "VOLT"}
        try:
            self.sense = functions[name.upper()]
        except KeyError:
            raise ScpiError(-224) from None

    @scpi(":SENSe:FUNCtion[:ON]?")
    def _sense_function_query(self) -> str:
        return f'"{self.sense}:DC"'

    # ---- single readings ---------------------------------------------------------------------
    @scpi(":READ?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _read(self, buffer: str = "defbuffer1", *elements: str) -> str:
        return self._store_and_show(self.measure(np.array([self.level_v])), buffer, elements)

    @scpi(":MEASure[:CURRent][:DC]?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _measure_current(self, buffer: str = "defbuffer1", *elements: str) -> str:
        self._buffer(buffer)
        self.sense = "CURR"
        return self._read(buffer, *elements)

    @scpi(":MEASure:VOLTage[:DC]?", String(), _ELEMENTS_2450, required=0, repeat_last=4)
    def _measure_voltage(self, buffer: str = "defbuffer1", *elements: str) -> str:
        self._buffer(buffer)
        self.sense = "VOLT"
        return self._read(buffer, *elements)

    # ---- source lists, sweeps and buffers ----------------------------------------------------

    @scpi(":SOURce:SWEep:VOLTage:LIST", Integer(1, 100_000), Number(0, 10_000, unit="S"),
          Integer(1, 268_435_455), Boolean(), required=1)
    def _sweep_list(self, start: int, delay_s: float = 0.0, count: int = 1, fail_abort: bool = True) -> None:
        if start > len(self.source_list):
            raise ScpiError(-221)
        self.sweep = (start, delay_s, count)

    @scpi(":INITiate[:IMMediate]")
    def _initiate(self) -> None:
        """Run the trigger model: the configured list sweep (output on), else one reading."""
        if self.sweep is None:
            points = self.measure(np.array([self.level_v]))
        else:
            start, delay_s, count = self.sweep
            self.output_on = True
            values = np.tile(np.asarray(self.source_list[start - 1:]), count)
            previous, self.source_delay_s = self.source_delay_s, delay_s
            try:
                points = self.measure(values)
            finally:
                self.source_delay_s = previous
            self.level_v = float(values[-1])
        self._store_and_show(points, "defbuffer1", ())

    @scpi(":ABORt")
    def _abort(self) -> None:
        """Trigger models run to completion at :INIT; nothing is left to abort."""

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
        target.capacity = capacity
        target.clear()

    @scpi(":TRACe:POINts?", String(), required=0)
    def _trace_points_query(self, buffer: str = "defbuffer1") -> str:
        return str(self._buffer(buffer).capacity)


# ------------------------------------------------------------------------------------------------
# Keithley 2400 series (SCPI)
# ------------------------------------------------------------------------------------------------

_ELEMENT_ORDER = ("VOLT", "CURR", "RES", "TIME", "STAT")
_STATUS_OVERFLOW, _STATUS_COMPLIANCE = 1 << 0, 1 << 3


class SimKeithley2400(_SourceMeter):
    """A Keithley 2400-series SourceMeter (voltage source, current measure).

    ``:READ?`` runs ``:TRIG:COUN`` points (the source list in ``:SOUR:VOLT:MODE LIST``, cycling
    if the count is longer) and returns every point's ``:FORM:ELEM`` elements, in the fixed order
    VOLT, CURR, RES, TIME, STAT. STAT bit 0 is a range overflow, bit 3 real compliance.
    """

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4105270,C32   Oct  4 2010 14:20:11/A02  /S/K"
    CURRENT_RANGES_A = (1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
    LIST_CAPACITY = 2500

    def __init__(self, load: Load, *, lock: threading.RLock | None = None, seed: int = 0) -> None:
        super().__init__(load, lock=lock, seed=seed)
        self._time_zero_s = load.time_s

    def reset(self) -> None:
        super().reset()
        self.elements: tuple[str, ...] = _ELEMENT_ORDER
        self.list_mode = False
        self.source_list: list[float] = []
        self.trigger_count = 1
        self.last: _Points | None = None

    @staticmethod
    def format(value: float) -> str:
        return f"{value:+.6E}"

    def _run(self) -> _Points:
        if self.list_mode:
            if not self.source_list:
                raise ScpiError(-221)
            values = np.resize(np.asarray(self.source_list), self.trigger_count)
        else:
            values = np.full(self.trigger_count, self.level_v)
        self.last = self.measure(values)
        return self.last

    def _show(self, points: _Points) -> str:
        status = (np.where(points.overflow, _STATUS_OVERFLOW, 0)
                  | np.where(points.compliance, _STATUS_COMPLIANCE, 0))
        columns = {"VOLT": points.voltage_v, "CURR": points.current_a,
                   "RES": np.full(points.current_a.shape, 9.91e37),
                   "TIME": points.time_s - self._time_zero_s, "STAT": status.astype(float)}
        chosen = [columns[name] for name in _ELEMENT_ORDER if name in self.elements]
        return ",".join(map(self.format, np.column_stack(chosen).ravel().tolist()))

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
        self.trigger_count = count

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

    @scpi(":SYSTem:TIME:RESet")
    def _time_reset(self) -> None:
        self._time_zero_s = self.load.time_s
