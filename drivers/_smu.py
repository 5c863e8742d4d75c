"""Source-measure units (role ``SourceMeter``): Keithley 2450 and 2400 series, SCPI.

Command strings are written as the reference manuals write them. Every value is checked before
anything is sent (instrument ranges and the lab's limits); large voltage changes with the output
on are ramped in steps of ``ramp_step_v``, and so are the jumps inside a list sweep (the readings
at the inserted ramp points are dropped).
"""

from __future__ import annotations

import logging
import math
import re
from abc import abstractmethod

import numpy as np

from crossbar_ctl.core.errors import InstrumentError, LimitError, ProtocolError
from drivers._safety import SafetyGuard, check_number, ramp_steps_v
from drivers._scpi import ScpiInstrument, format_number
from drivers._transport import Transport

_log = logging.getLogger(__name__)

__all__ = ["Keithley2400", "Keithley2450", "SourceMeter"]

_LIST_CHUNK = 100
"""Values per ``:SOUR:LIST:VOLT`` command (both manuals' limit)."""
_RESET_COMPLIANCE_A = 105e-6
"""The compliance both models take at ``*RST``."""
_SECONDS_PER_PLC = 1 / 50
"""One power-line cycle at the slower mains (50 Hz)."""
_APERTURES_PER_POINT = 3
"""Integrations per point in the worst case: with autozero on, expired reference and zero
readings are taken before the signal (2450 manual, "Automatic reference measurements")."""
_SECONDS_PER_POINT = 5e-3
"""Per point besides integrating: source settling (auto delay), range changes, bookkeeping."""
_SWEEP_MARGIN = 2.0
"""The wait for a sweep's readings: the link's ``timeout_s`` plus this times the expected duration."""


def sweep_duration_s(points: int, nplc: float) -> float:
    """The longest a list sweep is expected to take on the instrument, in seconds.

    Parameters
    ----------
    points : int
        Points in the sweep.
    nplc : float
        Integration time per reading, in power-line cycles.
    """
    return points * (_APERTURES_PER_POINT * nplc * _SECONDS_PER_PLC + _SECONDS_PER_POINT)


class SourceMeter(ScpiInstrument):
    """Role: source a voltage, measure a current (one point or a buffered list sweep).

    Parameters
    ----------
    transport : Transport
        An open transport to the instrument.
    guard : SafetyGuard, optional
        The lab's limits (default: :class:`~crossbar_ctl.core.config.Limits` defaults).

    Notes
    -----
    The driver tracks the source level, output state and current compliance it commanded (read
    back on connect); ramps start from there, and the output is not switched on while the
    compliance exceeds ``max_current_a``.
    """

    MODEL = ""
    """The model as people name it, e.g. ``"2450"``."""
    MODEL_PATTERN = ""
    """What ``*IDN?`` must contain (a regular expression)."""
    COMPLIANCE = ""
    """The current-compliance command header; ``?`` reads it, ``:TRIP?`` reports a trip."""
    MIN_CURRENT_RANGE_A = 0.0
    MAX_CURRENT_RANGE_A = 1.0
    MAX_SWEEP_POINTS = 2500
    NPLC_RANGE = (0.01, 10.0)

    def __init__(self, transport: Transport, *, guard: SafetyGuard | None = None) -> None:
        self.guard = guard if guard is not None else SafetyGuard()
        super().__init__(transport)
        self._level_v = self._float(":SOUR:VOLT?")
        self._output_on = self._bool(":OUTP?")
        self._compliance_a = self._float(f"{self.COMPLIANCE}?")  # NaN: unknown
        self._nplc = 1.0

    # ---- model specifics --------------------------------------------------------------------
    @abstractmethod
    def _reset_commands(self) -> list[str]:
        """What follows ``*RST`` to reach the standard state (source V, measure I, auto range)."""

    @abstractmethod
    def _sweep_chunk(self, points_v: np.ndarray) -> np.ndarray:
        """Run one list sweep of at most :attr:`MAX_SWEEP_POINTS`, output on; return currents."""

    def in_compliance(self) -> bool:
        """``<COMPLIANCE>:TRIP?``: whether the last measurement hit the current compliance."""
        return self._bool(f"{self.COMPLIANCE}:TRIP?")

    def _compliance_command(self, current_a: float) -> str:
        return f"{self.COMPLIANCE} {format_number(current_a)}"

    def _check_compliance(self) -> None:
        """Refuse to source while the instrument's compliance exceeds ``max_current_a`` (or is unknown)."""
        limit = self.guard.limits.max_current_a
        if not self._compliance_a <= limit:
            raise LimitError("max_current_a", self._compliance_a, limit,
                             "the instrument's current compliance; call set_compliance_current_a or reset first")

    # ---- identification ---------------------------------------------------------------------
    def _check_identity(self, idn: str) -> None:
        if not re.search(self.MODEL_PATTERN, idn, re.IGNORECASE):
            raise ProtocolError(
                f"expected a Keithley {self.MODEL} but the instrument identifies as {idn!r}; "
                "check the address and the configured model", address=self.address, command="*IDN?")

    # ---- state ----------------------------------------------------------------------------------
    @property
    def level_v(self) -> float:
        """The source level last commanded, in volts."""
        return self._level_v

    @property
    def output_is_on(self) -> bool:
        """Whether the output was last commanded on."""
        return self._output_on

    # ---- configuration -----------------------------------------------------------------------
    def reset(self) -> None:
        """``*RST`` and ``*CLS``, then source voltage / measure current, auto range, output off.

        The compliance is set to the smaller of the reset value (105 uA) and ``max_current_a``.
        """
        compliance_a = min(_RESET_COMPLIANCE_A, self.guard.limits.max_current_a)
        self._compliance_a = math.nan  # unknown until the instrument confirms
        self._configure("*RST", "*CLS", *self._reset_commands(), self._compliance_command(compliance_a))
        self._level_v, self._output_on, self._nplc = 0.0, False, 1.0
        self._compliance_a = compliance_a

    def set_source_voltage_v(self, voltage_v: float) -> None:
        """``:SOUR:VOLT <v>``; ramps in steps of ``ramp_step_v`` while the output is on.

        Raises
        ------
        LimitError
            Beyond ``max_voltage_v`` or the power limit; nothing is sent.
        """
        target = self.guard.voltage_v(voltage_v)
        levels = ramp_steps_v(self._level_v, target, self.guard.limits.ramp_step_v) if self._output_on else [target]
        commands = [f":SOUR:VOLT {format_number(level)}" for level in levels]
        self._level_v = target  # from here on, any level of the ramp may be the present one
        self._configure(*commands, resend=commands[-1:])

    def set_compliance_current_a(self, current_a: float) -> None:
        """The current limit in voltage-source mode (at most ``max_current_a``)."""
        value = self.guard.compliance_current_a(current_a)
        check_number("compliance_current_a", value, 1e-9, 1.05)
        self._compliance_a = math.nan  # unknown until the instrument confirms
        self._configure(self._compliance_command(value))
        self._compliance_a = value

    def set_nplc(self, nplc: float) -> None:
        """``:SENS:CURR:NPLC <n>``: integration time in power-line cycles, 0.01..10."""
        value = check_number("nplc", nplc, *self.NPLC_RANGE)
        self._configure(f":SENS:CURR:NPLC {format_number(value)}")
        self._nplc = value

    def set_current_range_a(self, current_a: float | None) -> None:
        """``:SENS:CURR:RANG <a>``, or ``:SENS:CURR:RANG:AUTO ON`` for ``None``."""
        if current_a is None:
            self._configure(":SENS:CURR:RANG:AUTO ON")
            return
        value = check_number("current_range_a", current_a, self.MIN_CURRENT_RANGE_A, self.MAX_CURRENT_RANGE_A)
        self._configure(f":SENS:CURR:RANG {format_number(value)}")

    def output_on(self) -> None:
        """``:OUTP ON`` at the present level (level and compliance checked against the limits first)."""
        self.guard.voltage_v(self._level_v, "source level")
        self._check_compliance()
        self._configure(":OUTP ON")
        self._output_on = True

    def output_off(self) -> None:
        """Ramp the level to 0 V, then ``:OUTP OFF``."""
        if self._output_on and self._level_v != 0.0:
            self.set_source_voltage_v(0.0)
        self._output_on = False
        self._configure(":OUTP OFF")

    def force_output_off(self) -> None:
        """``:OUTP OFF`` at once, without ramping or checking (for the safe state)."""
        self._output_on = False
        self._write(":OUTP OFF")

    # ---- measurement ---------------------------------------------------------------------------
    def measure_current_a(self) -> float:
        """``:READ?``: one current reading at the present level, in amperes (overflow: NaN)."""
        return self._float(":READ?")

    def sweep_voltages_v(self, voltages_v: object) -> np.ndarray:
        """A buffered list sweep: source each voltage in turn and read the current at each.

        The output is switched on for the sweep if it was off (and off again afterwards); the
        source returns to its level before the sweep. Lists longer than the instrument holds are
        run in chunks.

        Parameters
        ----------
        voltages_v : array_like, shape (n,)
            Voltages to source, volts.

        Returns
        -------
        current_a : ndarray, shape (n,)
            The current at each point, amperes (overflow: NaN).

        Raises
        ------
        LimitError
            A voltage beyond the limits, or the compliance above ``max_current_a``; nothing is sent.
        """
        requested = self.guard.voltages_v(voltages_v)
        self._check_compliance()
        if requested.ndim != 1:
            raise LimitError("voltages_v", requested.ndim, 1, "expected a 1-D list of voltages")
        was_on = self._output_on
        start_v = self._level_v if was_on else 0.0
        plan = _plan_sweep(requested, start_v, self.guard.limits.ramp_step_v, self.MAX_SWEEP_POINTS)
        if not was_on and self._level_v != 0.0:
            self.set_source_voltage_v(0.0)  # so the output rests at 0 V after the sweep
        readings = []
        try:
            for points, keep in plan:
                self._output_on = True  # from here on, assume it may be
                with self.transport.patience(_SWEEP_MARGIN * sweep_duration_s(len(points), self._nplc)):
                    readings.append(self._sweep_chunk(points)[keep])
        except BaseException:
            if not was_on:
                quietly(self.force_output_off)
            raise
        self._level_v = start_v
        if not was_on:
            self.force_output_off()
        return np.concatenate(readings)

    def _write_list(self, points_v: np.ndarray) -> list[str]:
        """The ``:SOUR:LIST:VOLT`` command, then ``:APP`` commands, 100 values each."""
        texts = [format_number(value) for value in points_v]
        chunks = [",".join(texts[i:i + _LIST_CHUNK]) for i in range(0, len(texts), _LIST_CHUNK)]
        return [f":SOUR:LIST:VOLT {chunks[0]}", *(f":SOUR:LIST:VOLT:APP {chunk}" for chunk in chunks[1:])]

    def _readings(self, command: str, count: int) -> np.ndarray:
        values = self._floats(command)
        if len(values) != count:
            raise InstrumentError(f"expected {count} readings, got {len(values)}", address=self.address,
                                  command=command)
        return np.asarray(values)


def quietly(action, *args: object) -> None:
    """Run a clean-up step while another error is in flight, without hiding that error."""
    try:
        action(*args)
    except InstrumentError as exc:
        _log.debug("clean-up step failed while another error is in flight: %s", exc)


def _plan_sweep(requested: np.ndarray, start_v: float, step_v: float,
                max_points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a list sweep into chunks the instrument holds, each ramped from ``start_v`` and back.

    Between points more than ``step_v`` apart, ramp points are inserted; ``keep`` indexes the
    requested points within each chunk's points.
    """
    def ramp(a: float, b: float) -> list[float]:
        return ramp_steps_v(a, b, step_v) if abs(b - a) > step_v else [b]

    plan: list[tuple[np.ndarray, np.ndarray]] = []
    points, keep = [start_v], []
    for value in map(float, requested):
        ramp_in = ramp(points[-1], value)
        if keep and len(points) + len(ramp_in) + len(ramp(value, start_v)) > max_points:
            points += ramp(points[-1], start_v)
            plan.append((np.asarray(points), np.asarray(keep)))
            points, keep = [start_v], []
            ramp_in = ramp(start_v, value)
        points += ramp_in
        keep.append(len(points) - 1)
        if len(points) + len(ramp(value, start_v)) > max_points:
            raise LimitError("ramp_step_v", step_v, max_points,
                             f"ramping to {value:g} V needs more than {max_points} points")
    points += ramp(points[-1], start_v)
    plan.append((np.asarray(points), np.asarray(keep)))
    return plan


class Keithley2450(SourceMeter):
    """Keithley 2450 SourceMeter in SCPI mode.

    On connect the driver checks ``*IDN?`` (``MODEL 2450``) and ``*LANG?``: an instrument in
    ``TSP`` or ``SCPI2400`` mode is refused with the way to fix it.
    """

    MODEL = "2450"
    MODEL_PATTERN = r"MODEL 2450\b"
    COMPLIANCE = ":SOUR:VOLT:ILIM"
    MIN_CURRENT_RANGE_A = 10e-9
    MAX_CURRENT_RANGE_A = 1.0
    MAX_SWEEP_POINTS = 2500  # the source list holds more; 2500 keeps one reply short

    def _check_identity(self, idn: str) -> None:
        super()._check_identity(idn)
        language = self._query("*LANG?").strip().upper()
        if language != "SCPI":
            raise ProtocolError(
                f"the 2450 is in {language} mode; send '*LANG SCPI' and reboot it "
                "(front panel: Menu > System > Settings > Command Set > SCPI)",
                address=self.address, command="*LANG?")

    def _reset_commands(self) -> list[str]:
        return [":SOUR:FUNC VOLT", ':SENS:FUNC "CURR"', ":SENS:CURR:RANG:AUTO ON", ":SOUR:VOLT 0"]

    def _sweep_chunk(self, points_v: np.ndarray) -> np.ndarray:
        count = len(points_v)
        self._configure(*self._write_list(points_v), ":SOUR:SWE:VOLT:LIST 1, 0", ':TRAC:CLE "defbuffer1"')
        self._write(":INIT")
        self._write("*WAI")
        return self._readings(f':TRAC:DATA? 1, {count}, "defbuffer1", READ', count)


class Keithley2400(SourceMeter):
    """Keithley 2400-series SourceMeter (2400, 2401, 2410, 2420, 2425, 2430, 2440), SCPI.

    Readings carry only the current (``:FORM:ELEM CURR``, set at :meth:`reset`).
    """

    MODEL = "2400"
    MODEL_PATTERN = r"MODEL 24[0-4]\d\b"
    COMPLIANCE = ":SENS:CURR:PROT"
    MIN_CURRENT_RANGE_A = 1e-6
    MAX_CURRENT_RANGE_A = 1.05
    MAX_SWEEP_POINTS = 2500

    def _check_identity(self, idn: str) -> None:
        if re.search(r"MODEL 245\d", idn, re.IGNORECASE):
            raise ProtocolError(f"the instrument is a 2450 ({idn!r}); configure model keithley2450",
                                address=self.address, command="*IDN?")
        super()._check_identity(idn)

    def _reset_commands(self) -> list[str]:
        return [":SOUR:FUNC VOLT", ":SOUR:VOLT:MODE FIX", ':SENS:FUNC "CURR"', ":SENS:CURR:RANG:AUTO ON",
                ":FORM:ELEM CURR", ":SOUR:VOLT 0"]

    def __init__(self, transport: Transport, *, guard: SafetyGuard | None = None) -> None:
        super().__init__(transport, guard=guard)
        self._configure(":FORM:ELEM CURR")

    def _sweep_chunk(self, points_v: np.ndarray) -> np.ndarray:
        count = len(points_v)
        self._configure(":SOUR:VOLT:MODE LIST", *self._write_list(points_v), f":TRIG:COUN {count}", ":OUTP ON")
        try:
            readings = self._readings(":READ?", count)
        except BaseException:
            quietly(self._configure, ":SOUR:VOLT:MODE FIX", ":TRIG:COUN 1")
            raise
        self._configure(":SOUR:VOLT:MODE FIX", ":TRIG:COUN 1")
        return readings
