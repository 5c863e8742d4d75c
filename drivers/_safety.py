"""Safety by structure: every request is checked against the lab's limits before a byte leaves.

:class:`SafetyGuard` holds the frozen :class:`~crossbar_ctl.core.config.Limits` and the smallest
resistance any line can see (the lab's declaration, or a conservative default); drivers call it
before they write, so an unsafe or invalid value raises and sends nothing. Nothing here clips.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import LimitError

__all__ = ["DEFAULT_MIN_RESISTANCE_OHM", "SafetyGuard", "check_choice", "check_int", "check_number", "ramp_steps_v"]

DEFAULT_MIN_RESISTANCE_OHM = 1e3
"""Smallest resistance assumed behind a closed branch when the lab declares none (conservative)."""


def check_number(name: str, value: float, low: float, high: float) -> float:
    """A finite real number (not a string, not a bool) within ``[low, high]``, else :class:`LimitError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LimitError(name, math.nan, high, f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise LimitError(name, number, high, f"not a finite number: {value!r}")
    if not low <= number <= high:
        raise LimitError(name, number, high if number > high else low, f"allowed range [{low:g}, {high:g}]")
    return number


def check_int(name: str, value: int, low: int, high: int) -> int:
    """An integer (not a bool, not a float) within ``[low, high]``, else :class:`LimitError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LimitError(name, math.nan, high, f"not an integer: {value!r}")
    if not low <= int(value) <= high:
        raise LimitError(name, int(value), high if value > high else low, f"allowed range [{low}, {high}]")
    return int(value)


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (case-insensitive, returned upper-case), else :class:`LimitError`."""
    allowed = tuple(choices)
    if not isinstance(value, str) or value.upper() not in allowed:
        raise LimitError(name, math.nan, math.nan, f"{value!r} is not one of {', '.join(allowed)}")
    return value.upper()


def ramp_steps_v(start_v: float, stop_v: float, step_v: float) -> list[float]:
    """Levels from ``start_v`` (excluded) to ``stop_v`` (included), at most ``step_v`` apart."""
    count = max(1, math.ceil(abs(stop_v - start_v) / step_v - 1e-12))
    return [start_v + (stop_v - start_v) * k / count for k in range(1, count)] + [stop_v]


class SafetyGuard:
    """The lab's limits, applied before anything is sent.

    Parameters
    ----------
    limits : Limits
        The lab's safety limits.
    min_resistance_ohm : float
        The smallest resistance a driven line can see through one closed branch (resistor plus
        switch), used to bound power and current before sending.
    """

    def __init__(self, limits: Limits | None = None, *, min_resistance_ohm: float = DEFAULT_MIN_RESISTANCE_OHM) -> None:
        if not min_resistance_ohm > 0:
            raise ValueError(f"min_resistance_ohm must be > 0, got {min_resistance_ohm!r}")
        self.limits = limits if limits is not None else Limits()
        self.min_resistance_ohm = float(min_resistance_ohm)

    def __repr__(self) -> str:
        return f"SafetyGuard({self.limits!r}, min_resistance_ohm={self.min_resistance_ohm:g})"

    def voltage_v(self, value: float, name: str = "voltage_v") -> float:
        """One line's voltage: finite, within ``max_voltage_v`` and the power per resistor."""
        limits = self.limits
        voltage = check_number(name, value, -math.inf, math.inf)
        if abs(voltage) > limits.max_voltage_v:
            raise LimitError("max_voltage_v", voltage, limits.max_voltage_v, name)
        power_w = voltage * voltage / self.min_resistance_ohm
        if power_w > limits.max_power_w:
            raise LimitError("max_power_w", power_w, limits.max_power_w,
                             f"{voltage:g} V across {self.min_resistance_ohm:g} ohm")
        return voltage

    def voltages_v(self, values: object, name: str = "voltage_v") -> np.ndarray:
        """Many voltages at once (any shape), each checked as :meth:`voltage_v`."""
        try:
            raw = np.asarray(values)
        except (TypeError, ValueError):
            raw = np.asarray([None])
        if raw.dtype.kind not in "iuf":
            raise LimitError(name, math.nan, self.limits.max_voltage_v, f"not an array of numbers ({raw.dtype})")
        array = raw.astype(float)
        if array.size == 0:
            raise LimitError(name, 0, 0, "no voltages given")
        if not np.all(np.isfinite(array)):
            raise LimitError(name, math.nan, self.limits.max_voltage_v, "not finite")
        self.voltage_v(float(array.max()), name)
        self.voltage_v(float(array.min()), name)
        return array

    def compliance_current_a(self, value: float) -> float:
        """An SMU current compliance: positive, at most ``max_current_a``."""
        return check_number("max_current_a", value, 1e-12, self.limits.max_current_a)

    def total_current_a(self, voltage_v: np.ndarray, conductance_bound_s: np.ndarray) -> float:
        """Bound the total current of driving rows at once; refuse beyond ``max_total_current_a``.

        Parameters
        ----------
        voltage_v : ndarray, shape (rows,) or (batch, rows)
            Row voltages.
        conductance_bound_s : ndarray, shape (rows,)
            An upper bound on each row's conductance to the columns (closed branches over the
            smallest resistance).

        Returns
        -------
        float
            The largest bound over the batch, in amperes.
        """
        bound_a = float(np.max(np.abs(np.atleast_2d(voltage_v)) @ conductance_bound_s))
        if bound_a > self.limits.max_total_current_a:
            raise LimitError("max_total_current_a", bound_a, self.limits.max_total_current_a,
                             "bound from the closed branches and the smallest resistance")
        return bound_a
