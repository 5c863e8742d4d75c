"""What the simulated board does that the controller's models do not share.

The controller fits a twin with three scalar resistances (row wire, column wire, sense), white
Gaussian read noise and ideal converters. A real board has more structure than that; this module
holds it, grouped by where it lives, with a default per named profile:

- ``ideal``: none of it (every effect off): today's self-consistent model, for the theory benches;
- ``pcb``: discrete thin-film resistors behind analog switches on a printed board, 16-bit row
  DACs and an 18-bit-class readout;
- ``harsh``: thick-film resistors, 12-bit DACs, long wires.

Only ``sim`` reads these models (an import-linter contract): the controller learns about the board
by measuring it. Defaults cite the datasheet class they come from; ``docs/simulator.md`` lists
them with their sources. Every relative spread is a standard deviation (lognormal where a sign
change would be unphysical).
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from crossbar_ctl.core.config import StrictModel, config_error

__all__ = ["BoardPhysics", "PROFILES", "ProfileName", "board_physics", "physics_rng"]

ProfileName = Literal["ideal", "pcb", "harsh"]


class WirePhysics(StrictModel):
    """Wires and terminals: each segment, line, cell contact and channel differs."""

    segment_scatter: float = Field(0.0, ge=0, le=1)
    """Relative spread of each wire segment's resistance around the line's value (trace width
    and copper thickness tolerance, IPC-2221 class: about 10 %)."""
    line_variation: float = Field(0.0, ge=0, le=1)
    """Relative spread of each row's and each column's mean wire resistance."""
    length_factor: float = Field(1.0, gt=0, le=100)
    """Multiplies the configured row and column wire resistances (long wires)."""
    contact_resistance_ohm: float = Field(0.0, ge=0, le=100)
    """Mean contact resistance in series with each cell (via, solder joint, switch pin)."""
    contact_spread: float = Field(0.0, ge=0, le=1)
    """Relative spread of the cell contact resistance."""
    driver_output_resistance_ohm: float = Field(0.0, ge=0, le=1e4)
    """Series resistance of each row's driver, in series before the row's first segment: the
    on-resistance of its routing switch (the buffer's own closed-loop output resistance is
    milliohms)."""
    driver_spread: float = Field(0.0, ge=0, le=1)
    """Relative spread of the row drivers' output resistance (channel-to-channel match)."""
    sense_spread: float = Field(0.0, ge=0, le=1)
    """Relative spread of each column's sense input resistance around the configured value."""


class ReadoutPhysics(StrictModel):
    """Converters and channels of the readout (board path) and the SMU's source (SMU path)."""

    gain_error: float = Field(0.0, ge=0, le=0.1)
    """Relative spread of each column channel's gain (transimpedance resistor tolerance)."""
    offset_fraction: float = Field(0.0, ge=0, le=0.01)
    """Spread of each column channel's offset, as a fraction of the ADC range."""
    offset_drift_fraction_per_k: float = Field(0.0, ge=0, le=1e-3)
    """Spread of each channel's offset drift, fraction of the ADC range per kelvin."""
    adc_inl_lsb: float = Field(0.0, ge=0, le=1e3)
    """ADC integral nonlinearity, peak, in LSB (a smooth bow over the range)."""
    adc_dnl_lsb: float = Field(0.0, ge=0, le=1)
    """ADC differential nonlinearity, peak, in LSB (code widths that differ)."""
    dac_bits: int | None = Field(None, ge=4, le=32)
    """Row-driver DAC resolution over its range (None: ideal)."""
    dac_inl_lsb: float = Field(0.0, ge=0, le=1e3)
    """Row-driver DAC integral nonlinearity, peak, in LSB (a bow; needs ``dac_bits``)."""
    differential: bool = False
    """The board has one difference channel per column pair (columns ``2o`` and ``2o + 1``):
    both columns' transimpedance stages, a matched resistor network and one ADC (``CAP?`` lists
    ``DIFF``, ``MVMD`` reads it)."""
    diff_gain_error: float = Field(0.0, ge=0, le=0.1)
    """Relative spread of each difference channel's gain (the network's absolute tolerance)."""
    diff_offset_fraction: float = Field(0.0, ge=0, le=0.01)
    """Spread of each difference channel's offset, as a fraction of the ADC range."""
    diff_cmrr_db: float = Field(200.0, ge=20, le=200)
    """Common-mode rejection of the difference channels, dB: each leaks ``(I+ + I-) / 2`` times
    ``10**(-cmrr/20) * N(0,1)`` (the network's ratio mismatch)."""
    smu_source_error: bool = False
    """Apply the 2450/2400 datasheet source resolution and source and measure accuracy on the SMU
    path (one draw per instrument and range, within the specification)."""


class NoisePhysics(StrictModel):
    """Read noise beyond the white term: 1/f (flicker) noise."""

    flicker_corner_hz: float = Field(0.0, ge=0, le=1e6)
    """Frequency where the 1/f noise density equals the white density (0: white only), so a
    long integration gains less than the square root of its time."""


class DevicePhysics(StrictModel):
    """Resistors and switches beyond their nominal spread."""

    tcr_spread_per_k: float = Field(0.0, ge=0, le=1e-2)
    """Spread of each resistor's temperature coefficient around the configured one, 1/K."""
    on_resistance_flatness_per_v: float = Field(0.0, ge=0, le=1)
    """Relative change of a switch's on-resistance per volt of signal (analog-switch flatness):
    ``R_on (1 + k |v|)``, ``v`` the row node's voltage at the cell."""
    settling_time_s: float = Field(0.0, ge=0, le=1)
    """Time constant of the settling after a switch write; a reading taken sooner is off."""
    drift_per_hour: float = Field(1e-4, ge=0, le=0.1)
    """Mean relative random-walk drift of a resistor per square-root hour, when the lab does not set
    ``drift_per_hour`` itself."""
    drift_rate_spread: float = Field(0.0, ge=0, le=3)
    """Lognormal spread (log-sd) of each resistor's own drift rate around the mean rate."""


class EnvironmentPhysics(StrictModel):
    """The room around the board."""

    temperature_wander_k_per_sqrt_h: float = Field(0.0, ge=0, le=100)
    """Random-walk wander of the board temperature while it runs, K per square-root hour."""


class BoardPhysics(StrictModel):
    """Every effect the controller does not model, grouped by where it lives."""

    wires: WirePhysics = WirePhysics()
    readout: ReadoutPhysics = ReadoutPhysics()
    noise: NoisePhysics = NoisePhysics()
    devices: DevicePhysics = DevicePhysics()
    environment: EnvironmentPhysics = EnvironmentPhysics()


PROFILES: dict[str, BoardPhysics] = {
    "ideal": BoardPhysics(),
    "pcb": BoardPhysics(
        wires=WirePhysics(segment_scatter=0.05, line_variation=0.03, contact_resistance_ohm=0.05,
                          contact_spread=0.3, driver_output_resistance_ohm=2.0,
                          driver_spread=0.05, sense_spread=0.02),
        readout=ReadoutPhysics(gain_error=1e-3, offset_fraction=1e-5,
                               offset_drift_fraction_per_k=1e-6, adc_inl_lsb=2.0,
                               adc_dnl_lsb=0.5, dac_bits=16, dac_inl_lsb=2.0,
                               differential=True, diff_gain_error=1e-3, diff_offset_fraction=1e-5,
                               diff_cmrr_db=80.0, smu_source_error=True),
        noise=NoisePhysics(flicker_corner_hz=10.0),
        devices=DevicePhysics(tcr_spread_per_k=1e-5, on_resistance_flatness_per_v=0.02,
                              settling_time_s=1e-3, drift_per_hour=1.6e-5, drift_rate_spread=0.5),
        environment=EnvironmentPhysics(temperature_wander_k_per_sqrt_h=0.2),
    ),
    "harsh": BoardPhysics(
        wires=WirePhysics(segment_scatter=0.15, line_variation=0.10, length_factor=4.0,
                          contact_resistance_ohm=0.5, contact_spread=0.5,
                          driver_output_resistance_ohm=20.0, driver_spread=0.1,
                          sense_spread=0.10),
        readout=ReadoutPhysics(gain_error=5e-3, offset_fraction=2e-4,
                               offset_drift_fraction_per_k=1e-5, adc_inl_lsb=8.0,
                               adc_dnl_lsb=0.9, dac_bits=12, dac_inl_lsb=4.0,
                               differential=True, diff_gain_error=5e-3, diff_offset_fraction=2e-4,
                               diff_cmrr_db=60.0, smu_source_error=True),
        noise=NoisePhysics(flicker_corner_hz=100.0),
        devices=DevicePhysics(tcr_spread_per_k=5e-5, on_resistance_flatness_per_v=0.1,
                              settling_time_s=5e-3, drift_rate_spread=1.0),
        environment=EnvironmentPhysics(temperature_wander_k_per_sqrt_h=1.0),
    ),
}


def board_physics(profile: str, overrides: dict[str, Any] | None = None) -> BoardPhysics:
    """The named profile's physics with ``overrides`` (``{group: {key: value}}``) applied.

    Raises
    ------
    ConfigError
        An unknown profile, group or key, or a value out of range (the key is named).
    """
    if profile not in PROFILES:
        from crossbar_ctl.core.errors import ConfigError

        raise ConfigError(f"sim profile = {profile!r}: must be one of {', '.join(PROFILES)}",
                          key="profile")
    base = PROFILES[profile].model_dump()
    for group, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(base.get(group), dict):
            base[group] = {**base[group], **values}
        else:
            base[group] = values
    try:
        return BoardPhysics.model_validate(base)
    except ValidationError as exc:
        raise config_error(exc, "sim physics") from exc


def physics_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one effect, spawned from the config seed and keyed by its name.

    A child of ``SeedSequence(seed)`` whose spawn key is the CRC-32 of ``name``: it never meets
    the array's numbered children (drift, noise) nor another effect's stream, so adding an effect
    or drawing more from one never changes the draws of the others.
    """
    key = zlib.crc32(name.encode("ascii"))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))
