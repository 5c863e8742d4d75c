"""The drift guard: a cheap probe of a programmed plan before it is trusted.

Each tile of the plan is loaded and its transfer measured with one unit vector per row (the
closed loop's own reading, :func:`crossbar_ctl.engine._program.measure_transfer`), so the probe
sees what the array does now: drift, temperature, late faults, through the same readout the plan
was verified with. Each pair's measured transfer minus its target, in weight units, is its error
now; per layer the rms of it is compared with the plan's **error budget**: the rms the same probe
read when the plan was programmed (``residual_programmed_s``; plans from before it: the closed
loop's ``residual_after_s``) times ``2**slack_bits``, i.e. the plan may lose ``slack_bits`` of
precision before it is refused.

The probe costs ``repeats`` readings per row of each tile (a 64-row tile: 128), a small fraction of
a check. A plan that was never programmed has no measured error to hold it to: no guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._plan import SwitchPlan, utc_now
from crossbar_ctl.engine._program import probe_errors

if TYPE_CHECKING:
    from drivers import Lab

__all__ = [
    "DEFAULT_SLACK_BITS",
    "PAIR_FACTOR",
    "DriftProbe",
    "LayerProbe",
    "ProbeErrors",
    "guard_plan",
    "probe_plan",
    "programmed_residual_s",
    "stale_message",
]

DEFAULT_SLACK_BITS = 0.5
"""Precision a plan may lose (rms weight error up by ``2**0.5``) before the guard refuses it."""
PAIR_FACTOR = 2.0
"""A pair is over the budget when its error exceeds this many times the layer's budget rms."""


class LayerProbe(StrictModel):
    """One layer's error now against its budget, weight units."""

    index: int
    pairs: int
    error_rms: float
    """rms of measured pair transfer minus target now, over the layer's pairs, weight units, the
    probe's own read noise (estimated from its repeats) taken out in quadrature."""
    programmed_rms: float
    """The same when the plan was programmed (after the closed loop)."""
    budget_rms: float
    """``programmed_rms * 2**slack_bits``: the error the plan may reach."""
    pairs_over: int
    """Pairs whose error exceeds ``PAIR_FACTOR`` times ``budget_rms``."""
    bits_lost: float
    """``log2(error_rms / programmed_rms)``: precision lost since programming (negative: gained)."""


class DriftProbe(StrictModel):
    """What the guard measured before trusting a plan (a check report keeps it)."""

    over_budget: bool
    """Some layer's error exceeds its budget: the guard refuses (unless told to run anyway)."""
    slack_bits: float = Field(ge=0)
    layers: tuple[LayerProbe, ...]
    readings: int
    """Readout vectors the probe used."""
    temperature_c: float | None
    measured_utc: str


@dataclass(frozen=True)
class ProbeErrors:
    """Per tile: the pair errors now, siemens ``(rows, pairs)``, and the measured transfer."""

    error_s: dict[int, np.ndarray]
    measured_s: dict[int, np.ndarray]


def programmed_residual_s(plan: SwitchPlan, t: int) -> np.ndarray:
    """Tile ``t``'s pair residual when the plan was first programmed, siemens ``(rows, pairs)``
    (an updated plan keeps it as ``residual_programmed_s``: its budget does not loosen)."""
    key = f"tile{t}.residual_programmed_s"
    return plan.arrays[key] if key in plan.arrays else plan.tile(t, "residual_after_s")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0


def probe_plan(lab: Lab, plan: SwitchPlan, *, slack_bits: float = DEFAULT_SLACK_BITS, repeats: int = 2,
               errors: list[ProbeErrors] | None = None) -> DriftProbe:
    """Measure every tile of a programmed plan and compare its error with the plan's budget.

    Parameters
    ----------
    lab : drivers.Lab
    plan : SwitchPlan
        A programmed plan (``plan.header.program`` set) of this lab.
    slack_bits : float
        Precision the plan may lose before it is over budget, bits (>= 0).
    repeats : int
        Unit-vector reads per row (2: the closed loop's).
    errors : list, optional
        Appended with the per-tile :class:`ProbeErrors` (``crossbar program --update`` uses them).

    Raises
    ------
    EngineError
        The plan was never programmed (it has no measured error to be held to).
    """
    if plan.header.program is None:
        raise EngineError("the plan was never programmed: it has no measured error to probe against; "
                          "program it with crossbar program")
    if not (np.isfinite(slack_bits) and slack_bits >= 0):
        raise EngineError(f"slack_bits = {slack_bits!r}: must be finite and >= 0")
    per_tile_error, per_tile_measured, per_tile_noise = probe_errors([lab], plan, repeats=repeats)
    readings = repeats * sum(tile.rows for tile in plan.tiles())
    layers = []
    for lp in plan.header.layers:
        cpw = lp.conductance_per_weight_s
        now = np.concatenate([per_tile_error[t].ravel() for t in lp.tiles]) / cpw
        then = np.concatenate([programmed_residual_s(plan, t).ravel() for t in lp.tiles]) / cpw
        programmed = max(_rms(then), 1e-300)
        budget = programmed * 2.0**slack_bits
        # the probe's own read noise taken out of the error now; the budget keeps the noise the
        # programming-time probe read with (a fresh plan is never refused for its noise)
        noise = np.mean([per_tile_noise[t] for t in lp.tiles]) / cpw**2
        error = float(np.sqrt(max(np.mean(np.square(now)) - noise, 0.0)))
        layers.append(LayerProbe(index=lp.index, pairs=int(now.size), error_rms=error, programmed_rms=programmed,
                                 budget_rms=budget, pairs_over=int(np.sum(np.abs(now) > PAIR_FACTOR * budget)),
                                 bits_lost=float(np.log2(max(error, 1e-300) / programmed))))
    if errors is not None:
        errors.append(ProbeErrors(per_tile_error, per_tile_measured))
    try:
        temperature = float(lab.temperature_c())
    except (EngineError, AttributeError, TypeError, ValueError):
        temperature = None
    return DriftProbe(over_budget=any(layer.error_rms > layer.budget_rms for layer in layers),
                      slack_bits=slack_bits, layers=tuple(layers), readings=readings,
                      temperature_c=temperature, measured_utc=utc_now())


def stale_message(probe: DriftProbe) -> str:
    """The guard's one-line refusal: the worst layer, its loss, and what to run."""
    worst = max(probe.layers, key=lambda layer: layer.error_rms / layer.budget_rms)
    return (f"the plan has drifted past its error budget: layer {worst.index} weight error "
            f"{worst.error_rms:.3g} rms, {worst.bits_lost:.2f} bit lost since programming (budget "
            f"{probe.slack_bits:g} bit, {worst.pairs_over} of {worst.pairs} pairs over); run crossbar recalibrate "
            "--calibration CAL --plan PLAN --out CAL2, then crossbar program --update PLAN --calibration CAL2 "
            "(or check --allow-stale to run anyway)")


def guard_plan(lab: Lab, plan: SwitchPlan, *, allow_stale: bool = False,
               slack_bits: float = DEFAULT_SLACK_BITS) -> DriftProbe | None:
    """Probe a plan before it is used; refuse it over its budget unless ``allow_stale``.

    Returns
    -------
    DriftProbe or None
        The probe (None for a plan never programmed, which has no budget).

    Raises
    ------
    EngineError
        Over budget and not ``allow_stale``: one line naming ``crossbar recalibrate``.
    """
    if plan.header.program is None:
        return None
    probe = probe_plan(lab, plan, slack_bits=slack_bits)
    if probe.over_budget and not allow_stale:
        raise EngineError(stale_message(probe))
    return probe
