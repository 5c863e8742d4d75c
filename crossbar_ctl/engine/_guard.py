"""The drift guard: a cheap probe of a programmed plan before it is trusted.

Each tile of the plan is loaded and its transfer measured as the programming's refinement
measures it (:func:`crossbar_ctl.engine._refine.measure_tile`: one unit vector per row,
``repeats`` each, less the all-zero reading, through the board's difference channels when it
has them), so the probe sees what the array does now: drift, temperature, late faults. Each
pair's measured transfer minus its target, in weight units, is its error now.

Per layer the probe estimates the error's **median scale**, the median |error| with the probe's
own read noise taken out in quadrature (as for a normal error), because that is what the realized
median bits count; the rms, noise taken out too, is kept for ``program --update``. Both are held
to the same probe read right after programming (``tile{t}.probe_fresh_s``, written by
``program_plan``; older plans: the refinement's last residual), so the readout's static errors sit
on both sides. The **error budget** is that fresh median times ``2**slack_bits``: the plan may lose
``slack_bits`` of precision before it is refused, widened by the two medians' own sampling error
(``MEDIAN_SIGMAS`` standard deviations of the log2 ratio of two medians of ``n`` pairs:
``MEDIAN_LOG2_SD / sqrt(n)``: 0.38 bit at 40 pairs, 0.05 at the demo's 2,080), and neither median
is taken below the probe's own noise (a pair read with noise sd ``s`` cannot show a median error
finer than ``HALF_NORMAL_MEDIAN * s``): a small layer, or one whose fresh error the noise hides (an
all-zero layer reads 0), is never refused for what its probe cannot resolve.

Why this reading: the closed loop's single-ended probe (offsets in, 2 reads per row) read a pair
with 7.9e-8 S of noise on the 16x16x8 pcb board, 2.4 times the fresh plan's median true error
(3.3e-8): its rms held the noise, so 7 days at the thin-film bound (0.76 bit of realized median
lost) read as 0.38 bit *gained*. Through the difference channels at 4 reads a pair reads with
about 1e-8, and the median scale follows the truth's loss (README "Keeping precision over time").

A plan on several boards is probed on each (every tile on its own board's lab, channels and
twin) and judged per layer and per layer on each board (:func:`board_groups`): boards drift and
warm on their own, and one board a month on can hide in a layer's median behind a fresh one (a
two-board 8x8x6 plan, one board 744 h on at 1e-4: that board's pairs read 2.1 bit lost, the layer's
1.08 against a budget of 1.11).

The probe costs ``2 (rows + 1) repeats`` readout vectors per tile (a 64-row tile at 4: 520), a
small fraction of a check. A plan that was never programmed has no measured error: no guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._affine import reads_differences
from crossbar_ctl.engine._mapping import Tile, pair_transfer
from crossbar_ctl.engine._plan import LayerPlan, SwitchPlan, utc_now
from crossbar_ctl.engine._program import _selection, per_board, readout_limits
from crossbar_ctl.engine._refine import DifferenceChannels, measure_tile

if TYPE_CHECKING:
    from drivers import Lab

__all__ = [
    "DEFAULT_SLACK_BITS",
    "HALF_NORMAL_MEDIAN",
    "PAIR_FACTOR",
    "PROBE_REPEATS",
    "DriftProbe",
    "LayerProbe",
    "ProbeErrors",
    "board_groups",
    "fresh_arrays",
    "guard_plan",
    "layer_residual_s",
    "measure_plan",
    "median_allowance_bits",
    "median_scale",
    "pooled_noise_var",
    "probe_plan",
    "programmed_residual_s",
    "stale_message",
]

DEFAULT_SLACK_BITS = 0.5
"""Precision a plan may lose (median error up by ``2**0.5``) before the guard refuses it."""
PAIR_FACTOR = 2.0
"""A pair is over the budget when its error exceeds this many times the layer's budget rms."""
PROBE_REPEATS = 4
"""Unit-vector reads per row of the probe (16x16x8 pcb: a pair's noise 1.0e-8 S at 4, 1.4e-8 at 2,
0.7e-8 at 8, against a fresh median error of 3.3e-8)."""
_MASK_BITS = 64
"""Every bit of a ``uint64`` mask: a selection of this many branches gives the plan's masks back,
whatever the array's branch count."""
HALF_NORMAL_MEDIAN = 0.6744897501960817
"""Median of |x| for a standard normal x."""
MEDIAN_LOG2_SD = float(np.sqrt(2.0) / (2.0 * 2.0 * np.exp(-HALF_NORMAL_MEDIAN**2 / 2) / np.sqrt(2 * np.pi)
                                       * HALF_NORMAL_MEDIAN * np.log(2.0)))
"""Standard deviation of ``log2`` of the ratio of two independent medians of |x| over one pair, x
normal (the sample median's variance ``1 / (4 n f(m)^2)``, ``f`` the half-normal density): 2.38 bit,
divided by ``sqrt(n)`` for ``n`` pairs."""
MEDIAN_SIGMAS = 2.0
"""The budget's allowance for the medians' sampling error, in their standard deviations."""


class LayerProbe(StrictModel):
    """One layer's error now against its budget, weight units (or its tiles on one board's)."""

    index: int
    board: int | None = None
    """The board whose tiles of the layer these are; None: every tile of the layer."""
    pairs: int
    error_median: float
    """Median |pair error| now (measured transfer minus target), the probe's read noise taken out
    (:func:`median_scale`)."""
    programmed_median: float
    """The same, read by the same probe right after programming."""
    budget_median: float
    """``programmed_median * 2**(slack_bits + MEDIAN_SIGMAS * MEDIAN_LOG2_SD / sqrt(pairs))``, each
    median taken no lower than the probe's noise: the median error the plan may reach."""
    error_rms: float
    """rms of the pair errors now, the read noise taken out in quadrature."""
    programmed_rms: float
    """The same right after programming."""
    budget_rms: float
    """``programmed_rms * 2**slack_bits`` (``program --update``'s pair rule)."""
    pairs_over: int
    """Pairs whose error exceeds ``PAIR_FACTOR`` times ``budget_rms``."""
    bits_lost: float
    """``log2(error_median / programmed_median)``: precision lost since programming, the estimate
    of the realized median bits' loss (negative: gained)."""


class DriftProbe(StrictModel):
    """What the guard measured before trusting a plan (a check report keeps it)."""

    over_budget: bool
    """Some layer's median error (or its tiles' on some board) exceeds its budget: the guard
    refuses (unless told to run anyway)."""
    slack_bits: float = Field(ge=0)
    layers: tuple[LayerProbe, ...]
    board_layers: tuple[LayerProbe, ...] = ()
    """A plan on several boards: each layer's tiles on each board (:func:`board_groups`), each
    held to its own budget too."""
    readings: int
    """Readout vectors the probe used."""
    temperature_c: float | None
    """Board 0's temperature, degC (None where the lab cannot read one)."""
    measured_utc: str


@dataclass(frozen=True)
class ProbeErrors:
    """Per tile: the pair errors now, siemens ``(rows, pairs)``, the measured transfer, and the
    variance a pair's error reads with, S^2."""

    error_s: dict[int, np.ndarray]
    measured_s: dict[int, np.ndarray]
    noise_var_s2: dict[int, float]
    readings: int
    board_readings: tuple[int, ...]
    """``readings`` by board."""
    channels: dict[int, DifferenceChannels]
    """Per tile on a board with difference channels: their fit, every reading so far included."""

    def noise_var(self, tiles: Sequence[int]) -> float:
        """The read-noise variance of the pairs of ``tiles``, S^2 (:func:`pooled_noise_var`)."""
        return pooled_noise_var([self.noise_var_s2[t] for t in tiles], [self.error_s[t].size for t in tiles])


def pooled_noise_var(noise_var_s2: Sequence[float], pairs: Sequence[int]) -> float:
    """The read-noise variance of a layer's pairs from its tiles': each tile's weighted by its
    ``pairs`` (a layer's tiles can read with very different noise: the demo's one-row bias tile, 32
    pairs, 9 times the noise of its 2,048-pair tile, took half the layer's unweighted mean)."""
    return float(np.average(noise_var_s2, weights=pairs))


@dataclass(frozen=True)
class _PlannedCells:
    """What :func:`measure_tile` asks of an array model, from the plan: the geometry, and the
    cells' predicted conductances (they set each row's probe voltage)."""

    geometry: tuple[int, int, int]
    cell_s: np.ndarray

    def cell_conductance_s(self, masks: np.ndarray, tile: Tile) -> np.ndarray:
        return self.cell_s


def measure_plan(labs: Sequence[Lab], plan: SwitchPlan, *, repeats: int = PROBE_REPEATS,
                 passes: int = 1) -> ProbeErrors:
    """Load each tile's program step and measure its pairs' transfer minus their targets, as the
    refinement measures (offsets removed, through the difference channels when the board has them).

    The channels' gains and leaks are fitted on every reading of the tile so far: those the plan
    keeps from programming (``tile{t}.probe_channels_xx`` / ``_xy``) and this probe's. A fit on one
    16-row reading alone moves a pair's reading by 2.6e-8 S rms between two probes (16x16x8 pcb,
    its read noise 1.4e-8): the median read 0.25 bit apart on a plan just programmed.

    Parameters
    ----------
    labs : sequence of drivers.Lab
        One per board of the plan.
    plan : SwitchPlan
    repeats : int
        Unit-vector reads per row (>= 2: the noise is estimated from them).
    passes : int
        Readings of each tile; the last is returned, all feed the channels' fit (programming: 1).
    """
    if repeats < 2 or passes < 1:
        raise EngineError(f"repeats = {repeats!r}, passes = {passes!r}: the probe needs >= 2 reads per row "
                          "(its noise is estimated from them) and >= 1 pass")
    labs = per_board(list(labs), plan.board_count, "labs")
    error, measured_s, noise_var, fits, readings = {}, {}, {}, {}, [0] * len(labs)
    for t, tile in enumerate(plan.tiles()):
        lab = labs[tile.board]
        masks = plan.arrays[f"tile{t}.masks"]
        geometry = (*masks.shape, _MASK_BITS)
        selection = _selection(masks[tile.block], tile, _MASK_BITS)
        channels = None
        if reads_differences(lab, tile, True):
            channels = fits[t] = DifferenceChannels(tile.pairs)
            if f"tile{t}.probe_channels_xx" in plan.arrays:
                channels.xx = plan.arrays[f"tile{t}.probe_channels_xx"].copy()
                channels.xy = plan.arrays[f"tile{t}.probe_channels_xy"].copy()
        for _ in range(passes):
            _, measured, noise, count = measure_tile(
                lab, _PlannedCells(geometry, plan.tile(t, "cell_s")), tile, selection, plan.step_masks(tile.step),
                repeats=repeats, limits=readout_limits(lab), twin=plan.board_twin(tile.board), channels=channels)
            readings[tile.board] += count
        measured_s[t] = measured
        error[t] = pair_transfer(measured) - plan.tile(t, "target_s")
        noise_var[t] = 2 * noise**2
    return ProbeErrors(error, measured_s, noise_var, sum(readings), tuple(readings), fits)


def fresh_arrays(probe: ProbeErrors) -> dict[str, np.ndarray]:
    """The plan arrays that hold later probes to this one (taken right after programming): each
    tile's pair errors and its channels' fit."""
    arrays = {f"tile{t}.probe_fresh_s": error for t, error in probe.error_s.items()}
    for t, channels in probe.channels.items():
        arrays.update({f"tile{t}.probe_channels_xx": channels.xx, f"tile{t}.probe_channels_xy": channels.xy})
    return arrays


def programmed_residual_s(plan: SwitchPlan, t: int) -> np.ndarray:
    """Tile ``t``'s pair errors as the probe read them right after the plan was first programmed,
    siemens ``(rows, pairs)`` (an updated plan keeps them: its budget does not loosen; a plan from
    before the probe read them: the refinement's last residual, read the same way)."""
    key = f"tile{t}.probe_fresh_s"
    return plan.arrays[key] if key in plan.arrays else plan.tile(t, "residual_after_s")


def layer_residual_s(plan: SwitchPlan, tiles: Sequence[int]) -> np.ndarray:
    """:func:`programmed_residual_s` of a layer's ``tiles``, every pair in one flat array, siemens."""
    return np.concatenate([programmed_residual_s(plan, t).ravel() for t in tiles])


def median_scale(error: np.ndarray, noise_var: float = 0.0) -> float:
    """The median |error| of the error without its read noise: ``Q sqrt((m / Q)^2 - noise_var)``
    with ``m`` the median |error| and ``Q`` the median |x| of a standard normal (0 when the noise
    explains it all).

    Parameters
    ----------
    error : ndarray
        Measured errors (any unit).
    noise_var : float
        Variance of the read noise in each, the unit squared.
    """
    if not error.size:
        return 0.0
    scale = np.median(np.abs(error)) / HALF_NORMAL_MEDIAN
    return float(HALF_NORMAL_MEDIAN * np.sqrt(max(scale**2 - noise_var, 0.0)))


def _rms(a: np.ndarray, noise_var: float = 0.0) -> float:
    return float(np.sqrt(max(np.mean(np.square(a)) - noise_var, 0.0))) if a.size else 0.0


def probe_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan, *, slack_bits: float = DEFAULT_SLACK_BITS,
               repeats: int = PROBE_REPEATS, errors: list[ProbeErrors] | None = None) -> DriftProbe:
    """Measure every tile of a programmed plan and compare its error with the plan's budget.

    A plan on several boards is probed on every board, each tile on its own (its board's lab,
    channels and twin); a layer's budget holds all its tiles, whichever board they are on.

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan, in order (``open_labs``)
    plan : SwitchPlan
        A programmed plan (``plan.header.program`` set) of this lab.
    slack_bits : float
        Precision the plan may lose before it is over budget, bits (>= 0).
    repeats : int
        Unit-vector reads per row.
    errors : list, optional
        Appended with the :class:`ProbeErrors` (``crossbar recalibrate --plan`` uses them).

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
    labs = per_board(lab, plan.board_count, "labs")
    probe = measure_plan(labs, plan, repeats=repeats)
    layers = [_group_probe(plan, probe, lp, lp.tiles, None, slack_bits) for lp in plan.header.layers]
    parts = [_group_probe(plan, probe, lp, tiles, board, slack_bits)
             for lp, board, tiles in board_groups(plan)] if plan.board_count > 1 else []
    if errors is not None:
        errors.append(probe)
    try:
        temperature = float(labs[0].temperature_c())
    except (EngineError, AttributeError, TypeError, ValueError):
        temperature = None
    return DriftProbe(over_budget=any(group.error_median > group.budget_median for group in layers + parts),
                      slack_bits=slack_bits, layers=tuple(layers), board_layers=tuple(parts),
                      readings=probe.readings, temperature_c=temperature, measured_utc=utc_now())


def board_groups(plan: SwitchPlan) -> list[tuple[LayerPlan, int | None, list[int]]]:
    """Each layer's tiles by board, ``(layer, board, tiles)``: on one board the whole layer (board
    None); on several, one group per board holding some of the layer (each board drifts and warms
    on its own, so each is held to its own fresh error)."""
    if plan.board_count == 1:
        return [(lp, None, list(lp.tiles)) for lp in plan.header.layers]
    tiles = plan.tiles()
    return [(lp, board, [t for t in lp.tiles if tiles[t].board == board])
            for lp in plan.header.layers for board in sorted({tiles[t].board for t in lp.tiles})]


def median_allowance_bits(pairs: int) -> float:
    """The budget's allowance for the sampling error of two medians of ``pairs`` pair errors, bits
    (``MEDIAN_SIGMAS * MEDIAN_LOG2_SD / sqrt(pairs)``): how far a fresh plan may read from its own
    fresh reading."""
    return MEDIAN_SIGMAS * MEDIAN_LOG2_SD / np.sqrt(max(pairs, 1))


def _group_probe(plan: SwitchPlan, probe: ProbeErrors, lp: LayerPlan, tiles: Sequence[int], board: int | None,
                 slack_bits: float) -> LayerProbe:
    """One layer's (or its tiles on one board's) error now against its budget, weight units."""
    cpw = lp.conductance_per_weight_s
    now = np.concatenate([probe.error_s[t].ravel() for t in tiles]) / cpw
    then = layer_residual_s(plan, tiles) / cpw
    # the same probe's noise on both sides: a fresh plan reads its own errors again
    noise = probe.noise_var(tiles) / cpw**2
    floor = max(HALF_NORMAL_MEDIAN * np.sqrt(noise), 1e-300)  # the finest median the probe resolves
    median, programmed = max(median_scale(now, noise), floor), max(median_scale(then, noise), floor)
    rms, programmed_rms = _rms(now, noise), max(_rms(then, noise), 1e-300)
    return LayerProbe(
        index=lp.index, board=board, pairs=int(now.size), error_rms=rms, programmed_rms=programmed_rms,
        budget_rms=programmed_rms * 2.0**slack_bits, error_median=median, programmed_median=programmed,
        budget_median=programmed * 2.0 ** (slack_bits + median_allowance_bits(now.size)),
        pairs_over=int(np.sum(np.abs(now) > PAIR_FACTOR * programmed_rms * 2.0**slack_bits)),
        bits_lost=float(np.log2(median / programmed)))


def stale_message(probe: DriftProbe) -> str:
    """The guard's one-line refusal: the layer (on a board) furthest past its budget, its loss, and
    what to run."""
    worst = max(probe.layers + probe.board_layers,
                key=lambda group: group.bits_lost - np.log2(group.budget_median / group.programmed_median))
    budget_bits = np.log2(worst.budget_median / worst.programmed_median)
    where = f"layer {worst.index}" + ("" if worst.board is None else f" on board {worst.board}")
    return (f"the plan has drifted past its error budget: {where} median weight error "
            f"{worst.error_median:.3g}, {worst.bits_lost:.2f} bit lost since programming (budget "
            f"{budget_bits:.2f} bit, {worst.pairs_over} of {worst.pairs} pairs over); run crossbar recalibrate "
            "--calibration CAL --plan PLAN --out CAL2, then crossbar program --update PLAN --calibration CAL2 "
            "(or check --allow-stale to run anyway)")


def guard_plan(lab: Lab | Sequence[Lab], plan: SwitchPlan, *, allow_stale: bool = False,
               slack_bits: float = DEFAULT_SLACK_BITS) -> DriftProbe | None:
    """Probe a plan before it is used (every board of it: :func:`probe_plan`); refuse it over its
    budget unless ``allow_stale``.

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
