"""Analog inference checks: run a programmed network on the array and compare with float64.

Layer by layer, each tile is loaded, the layer's inputs (im2col patches for a convolution, plus
the bias row) are mapped to row voltages, the readout returns column currents, and the pair
currents are scaled back to numbers and accumulated digitally; activations are computed
digitally. A plan's residual plan (:mod:`crossbar_ctl.engine._residual`) is run the same way after
it and its outputs added. Each layer is compared with the float64 layer applied to the same
(analog) inputs.

Precision figures per layer (every pair programmed, in weight units, against the layer's max|w|):

- ``enob``: ``(SNR - 1.76) / 6.02`` with ``SNR = var(reference) / mean(error**2)`` in dB (the
  variance convention: each output's mean is not signal; the error's mean is error);
  ``sinad_bits`` keeps the ADC convention, the error's mean removed too (:func:`sinad_db`);
- ``planned_bits``: median, 1st percentile and worst of ``-log2(|planned - target| / max|w|)``,
  where *planned* is the pair transfer the plan predicted (the twin's; far below the others on a
  closed-loop plan, whose masks were chosen against the measured circuit the twin misses);
- ``measured_bits``: the same for the closed loop's last measurement of each programmed pair (read
  noise included): the controller's own view of what it programmed, the figure to read on hardware
  (with a residual plan, :mod:`crossbar_ctl.engine._residual`, the main plan's alone: the residual
  plan lifts the truth above it, by as much as the readout's own error allows);
- ``realized_bits``: the same for the noiseless true transfer of each programmed pair (the
  simulator's circuit with the plan's masks, no read noise, no converters). Only a simulated lab
  knows it (``lab.truth``, read for these figures only, never for control); on hardware None.

The error budget splits a layer's output error into stages that add up: a chain of evaluations
of the same row voltages, each replacing one idealisation of the one before with the truth, and a
stage is the difference of two neighbours. Every evaluation goes through its own affine correction,
fitted as the plan's was (:func:`crossbar_ctl.engine._affine.fit_affine`, the plan's reference
vectors) when the plan has one, so a correction never counts as an error of one stage and a fix of
the next. The chain starts from what the plan itself predicts it programmed:

- a plan programmed open loop (no measurement: a plan only made, a trained plan):

  1. ``quantization``: the twin's transfer with the calibrated conductances vs float64 (the
     subset sum and what pre-distortion left, as the twin sees them);
  2. ``calibration``: the twin with the true branch conductances vs with the calibrated ones;
  3. ``ir_drop`` (wires and the twin's model): the true noiseless circuit vs the twin with the true
     conductances;

- a plan programmed by the closed loop (``tile{t}.measured_s``): the loop measured the circuit,
  wires and calibration errors included, and re-solved against the measurement, so the twin's
  stages would be large and cancel (the masks were chosen to undo them). The programmed error
  (the true circuit vs float64) splits instead by what the loop's last measurement of its
  residual ``m`` (measured vs float64) accounts for: ``quantization`` is its projection on ``m``
  (``beta * m``, ``beta`` by least squares over the layer's outputs: what the loop knew it left),
  ``measurement`` the rest (what it could not see: its probes' noise, channel gains, the wires'
  and the calibration's leftovers, drift since). The two are uncorrelated; the plain increment
  (true circuit vs ``m``) would carry the probes' noise twice, once with each sign in ``m``;

- then, both: ``read_noise`` (the readout): the measurement vs the noiseless true circuit: read
  noise and everything the readout adds (DAC and ADC resolution and nonlinearity, channel gain and
  offset, settling, the switches' nonlinearity).

The truth comes only from a simulated lab (``lab.truth``); on hardware the stages after
``quantization`` are reported together as ``other``. Shares are of mean squares; parts that add up
to an error have shares that sum to 1 less ``cross``, twice their correlation (negative when one
part cancels another). With the truth, ``share`` splits the total into ``programmed`` (the true
noiseless circuit vs float64) and ``read_noise``; ``programmed_share`` splits ``programmed`` into
its stages. On hardware ``share`` splits the total into ``quantization`` and ``other``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_write_text
from crossbar_ctl.engine._affine import (
    correct_pairs, declared_bound, fit_affine, reference_inputs, reference_voltages, tile_pairs, tile_range,
    validate_affine,
)
from crossbar_ctl.engine._guard import DriftProbe
from crossbar_ctl.engine._mapping import CalibrationRef, pair_transfer, row_voltages, weight_magnitude
from crossbar_ctl.engine._network import Layer
from crossbar_ctl.engine._plan import SwitchPlan, utc_now
from crossbar_ctl.engine._cost import ScheduleCost, board_counters, count_since, predict_loads, schedule_cost
from crossbar_ctl.engine._program import (
    dac_step_v, in_parallel, lab_idn, load_tile, per_board, readout_limits, row_bound,
)
from crossbar_ctl.engine._twin import is_ideal, twin_transfer

if TYPE_CHECKING:
    from drivers import Lab

__all__ = [
    "CheckReport", "ErrorBudget", "LayerCheck", "PrecisionBits", "effective_bits", "precision_bits", "run_check",
    "sinad_db", "snr_db", "truth_of",
]

CHECK_SCHEMA_VERSION = 2


def snr_db(reference: np.ndarray, error: np.ndarray) -> float:
    """SNR in dB, the ``enob`` convention: ``var(reference) / mean(error**2)``.

    Parameters
    ----------
    reference, error : ndarray (samples,) or (samples, outputs)
        The signal is each output's variance over the samples (its mean, an offset, is not
        signal), pooled over the outputs; the error is its mean square, its mean included (a
        constant error is error).
    """
    signal = float(np.mean(np.var(reference, axis=0)))
    noise = float(np.mean(np.square(error)))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def sinad_db(reference: np.ndarray, error: np.ndarray) -> float:
    """SINAD in dB: signal variance over error variance, each output's mean removed.

    Parameters
    ----------
    reference, error : ndarray (samples,) or (samples, outputs)
        Each column is one output over the samples; its mean (an offset) is neither signal nor
        noise, as in an ADC's SINAD. The variances are pooled over the outputs.
    """
    signal = float(np.mean(np.var(reference, axis=0)))
    noise = float(np.mean(np.var(error, axis=0)))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def effective_bits(snr: float) -> float:
    """Effective number of bits of an SNR or SINAD in dB, ``(snr - 1.76) / 6.02`` (ideal N-bit
    quantizer of a full-scale sine: N)."""
    return (snr - 1.76) / 6.02


class PrecisionBits(StrictModel):
    """Bits of weights against their layer's max|w|: ``-log2(|w - target| / max|w|)`` per pair."""

    median: float
    p01: float
    """1st percentile (the worst 1 % of the pairs lie below)."""
    worst: float
    pairs: int


def precision_bits(weight: np.ndarray, target: np.ndarray, magnitude: float) -> PrecisionBits:
    """:class:`PrecisionBits` of weights against their targets (same shape, weight units).

    An error below float64 resolution (``magnitude * 2**-52``) counts as 52 bits.
    """
    error = np.abs(np.ravel(weight) - np.ravel(target)) / magnitude
    bits = -np.log2(np.maximum(error, 2.0**-52))
    return PrecisionBits(median=float(np.median(bits)), p01=float(np.percentile(bits, 1)),
                         worst=float(np.min(bits)), pairs=int(bits.size))


class ErrorBudget(StrictModel):
    """rms output error of one layer by cause, in the layer's output units (the module's chain)."""

    source: Literal["simulator truth", "measurement only"]
    prediction: Literal["twin", "closed loop"] = "twin"
    """What ``quantization`` compares with float64: the twin's transfer (open loop) or the closed
    loop's last measurement (and the chain that follows from it)."""
    quantization: float
    """The plan's own prediction of its programmed transfer vs float64 (closed loop, with the
    truth: the part of the true error the loop's measured residual accounts for)."""
    calibration: float | None = None
    """Open loop: the twin with the true vs the calibrated branch conductances."""
    ir_drop: float | None = None
    """Open loop: wires and the twin's model: the true noiseless circuit vs the twin with the true
    conductances."""
    measurement: float | None = None
    """Closed loop: the part of the true error the loop's last measurement did not see."""
    read_noise: float | None = None
    """The readout: measured vs the noiseless true circuit."""
    other: float | None = None
    """On hardware: everything but quantization, together."""
    programmed: float | None = None
    """The stages before ``read_noise`` together: the true noiseless circuit vs float64."""
    total: float
    share: dict[str, float]
    """Top-level parts' mean squares over the total's (``programmed`` and ``read_noise``, or on
    hardware ``quantization`` and ``other``) and ``cross``: 1 less their sum."""
    programmed_share: dict[str, float] | None = None
    """The stages of ``programmed`` over it (mean squares), and ``cross``: 1 less their sum."""


class LayerCheck(StrictModel):
    """Analog vs float64 for one layer."""

    index: int
    kind: Literal["dense", "conv"]
    outputs: int
    tiles: int
    relative_error: float
    """rms(analog - float64) / rms(float64)."""
    snr_db: float
    """``var(float64) / mean(error**2)`` in dB (:func:`snr_db`)."""
    enob: float
    """``(snr_db - 1.76) / 6.02``, bits."""
    sinad_db: float
    """SINAD in dB, the error's mean removed too (:func:`sinad_db`)."""
    sinad_bits: float
    """``(sinad_db - 1.76) / 6.02``: effective bits in the ADC convention (an offset is free)."""
    planned_bits: PrecisionBits
    """The plan's predicted pair transfers (the twin's) against the targets."""
    measured_bits: PrecisionBits | None = None
    """The closed loop's last measured pair transfers against the targets (None: a plan not
    programmed with the hardware in the loop)."""
    realized_bits: PrecisionBits | None
    """The true noiseless transfers of the programmed pairs (simulated labs; None on hardware)."""
    budget: ErrorBudget
    branches_per_weight: float
    """Usable branches per differential pair (one bit per resistor expected)."""
    weight_error_bits: float
    """log2(max|w| / rms weight error) as planned."""
    subset_sum_error_s: float
    expected_subset_sum_error_s: float
    measured_weight_error_rms: float | None
    """rms of measured minus target pair transfer after programming, in weight units."""
    common_mode_ratio: float | None = None
    """Median over the layer's pairs of ``(G+ + G-) / |G+ - G-|``, the plan's cell conductances:
    how much common mode each pair carries beside its signal."""


class CheckReport(StrictModel):
    """The result of ``crossbar check``."""

    schema_version: int = CHECK_SCHEMA_VERSION
    kind: Literal["check_report"] = "check_report"
    network_name: str
    samples: int
    digital_accuracy: float | None
    analog_accuracy: float | None
    agreement: float
    """Fraction of samples where analog and float64 predict the same class."""
    layers: tuple[LayerCheck, ...]
    calibration: CalibrationRef
    predistorted: bool
    lab_idn: dict[str, str] = {}
    duration_s: float
    created_utc: str
    cost: ScheduleCost | None = None
    """Switch writes (counted and predicted) and settling of the run (:mod:`crossbar_ctl.engine._cost`)."""
    drift_probe: DriftProbe | None = None
    """The drift guard's probe before the run (:mod:`crossbar_ctl.engine._guard`; None: no guard)."""

    def save(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if np.size(a) else 0.0


def _ms(a: np.ndarray) -> float:
    return float(np.mean(np.square(a))) if np.size(a) else 0.0


def _shares(parts: dict[str, np.ndarray], whole: np.ndarray) -> dict[str, float]:
    """Each part's mean square over the whole's, and ``cross``: 1 less their sum."""
    scale = _ms(whole)
    if scale == 0:
        return {**{name: 0.0 for name in parts}, "cross": 0.0}
    share = {name: _ms(value) / scale for name, value in parts.items()}
    return {**share, "cross": 1.0 - sum(share.values())}


def _budget(evaluations: dict[str, np.ndarray], reference: np.ndarray, *, truth: bool) -> ErrorBudget:
    """The budget of one layer from its evaluations (corrected outputs: ``planned``, ``measured``
    for a closed-loop plan, with the truth ``twin_true`` and ``circuit``, and ``analog``)."""
    closed = "measured" in evaluations
    prediction = evaluations["measured" if closed else "planned"]
    analog = evaluations["analog"]
    total = analog - reference
    stages = {"quantization": prediction - reference}
    if not truth:
        stages["other"] = analog - prediction
        return ErrorBudget(source="measurement only", prediction="closed loop" if closed else "twin",
                           total=_rms(total), share=_shares(stages, total),
                           **{name: _rms(value) for name, value in stages.items()})
    circuit = evaluations["circuit"]
    programmed, read_noise = circuit - reference, analog - circuit
    if closed:  # the part of the true error the loop's measured residual accounts for, and the rest
        known = stages["quantization"]
        scale = float(np.sum(known**2))
        beta = float(np.sum(programmed * known)) / scale if scale > 0 else 0.0
        stages = {"quantization": beta * known, "measurement": programmed - beta * known}
    else:
        stages["calibration"] = evaluations["twin_true"] - prediction
        stages["ir_drop"] = circuit - evaluations["twin_true"]
    return ErrorBudget(source="simulator truth", prediction="closed loop" if closed else "twin", total=_rms(total),
                       programmed=_rms(programmed), read_noise=_rms(read_noise),
                       share=_shares({"programmed": programmed, "read_noise": read_noise}, total),
                       programmed_share=_shares(stages, programmed),
                       **{name: _rms(value) for name, value in stages.items()})


def _common_mode_ratio(plan: SwitchPlan, tiles: Sequence[int]) -> float | None:
    cells = [plan.tile(t, "cell_s") for t in tiles]
    common = np.concatenate([(c[:, 0::2] + c[:, 1::2]).ravel() for c in cells])
    signal = np.concatenate([np.abs(c[:, 0::2] - c[:, 1::2]).ravel() for c in cells])
    ratio = common[signal > 0] / signal[signal > 0]
    return float(np.median(ratio)) if ratio.size else None


def truth_of(lab: Lab):
    """The simulated lab's truth (``lab.truth``, see ``crossbar_ctl._lab.SimTruth``), or None."""
    return getattr(lab, "truth", None)


def _run_tile(lab: Lab, plan: SwitchPlan, t: int, x_aug: np.ndarray, cpw: float, limits: dict[str, float],
              truth, progress: Callable[[int], None] | None,
              reference_x: np.ndarray | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Tile ``t`` on its board, every input vector through it: its step loaded (the board sends
    nothing when the step is loaded already), the corrected pair outputs in weight units of each
    evaluation (the measurement and the budget's, see the module), and the pairs' weights."""
    tile = plan.header.tiles[t].tile
    load_tile(lab, plan.step_masks(tile.step))
    affine = plan.header.affine
    # the rows scaled to the total-current bound the correction was measured with (older plans: closed
    # branches); through the difference channels, at the tile's ADC range, when it was measured so
    with declared_bound(lab, plan, t, enabled=affine is not None and affine.measured_bound):
        # inputs on a grid (k-bit pixels) land on the DACs' codes
        voltage, per_unit = row_voltages(x_aug[:, tile.inputs], plan.tile(t, "cell_s"),
                                         row_bound_s=row_bound(lab, tile.block[0]), dac_lsb_v=dac_step_v(lab),
                                         **limits)
        full = np.zeros((len(voltage), lab.readout.rows))
        full[:, tile.block[0]] = voltage
        analog = correct_pairs(plan, t, tile_pairs(lab, full, tile, plan.board_twin(tile.board), progress=progress,
                                                   differential=affine is not None and affine.differential,
                                                   range_a=tile_range(plan, t)))
        reference_v = None if reference_x is None else reference_voltages(lab, plan, t, reference_x, limits)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(per_unit > 0, 1.0 / (per_unit * cpw), 0.0)[:, None]
    transfers = {"planned": pair_transfer(plan.tile(t, "predicted_s"))}
    if f"tile{t}.measured_s" in plan.arrays:
        transfers["measured"] = pair_transfer(plan.tile(t, "measured_s"))
    weights = {name: transfers[name] / cpw for name in ("planned", "measured") if name in transfers}
    weights["target"] = plan.tile(t, "target_s") / cpw
    if truth:
        twin_true = twin_transfer(plan.board_twin(tile.board), np.asarray(truth.cell_conductance_s()))
        circuit = np.asarray(truth.transfer_s())[tile.block]  # linear: I = V @ T
        transfers["twin_true"] = pair_transfer(twin_true[tile.block])
        transfers["circuit"] = pair_transfer(circuit)
        weights["realized"] = transfers["circuit"] / cpw
    outputs = {"analog": analog * unit}
    for name, pairs_s in transfers.items():
        fitted = None if reference_v is None else fit_affine(plan, t, reference_v, pairs_s)
        outputs[name] = correct_pairs(plan, t, voltage @ pairs_s, fitted) * unit
    return outputs, weights


def _run_layer(labs: Sequence[Lab], plan: SwitchPlan, layer: Layer, k: int, x: np.ndarray,
               limits: Sequence[dict[str, float]], truths: Sequence, progress: Callable[[int], None] | None,
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One layer on the boards: flat inputs (batch, in) -> the corrected outputs of each evaluation
    (``analog`` and the budget's), and the pairs' ``target``, ``planned`` (and ``measured``,
    ``realized``) weights. A plan's residual plan (:mod:`crossbar_ctl.engine._residual`) runs
    after it and adds its outputs and its pairs' ``planned`` and ``realized`` weights; ``measured``
    stays the plan's own (the residual was made from that measurement, so their sum would only
    show the residual's own error), and so do the targets."""
    stages, weights = _run_part(labs, plan, layer, k, x, limits, truths, progress)
    if plan.residual is not None:
        extra_stages, extra_weights = _run_part(labs, plan.residual, layer, k, x, limits, truths, progress)
        stages = {name: value + extra_stages[name] for name, value in stages.items()}
        weights.update({name: weights[name] + extra_weights[name] for name in ("planned", "realized")
                        if name in weights})
    return stages, weights


def _run_part(labs: Sequence[Lab], plan: SwitchPlan, layer: Layer, k: int, x: np.ndarray,
              limits: Sequence[dict[str, float]], truths: Sequence, progress: Callable[[int], None] | None,
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`_run_layer` for one plan alone. Each board runs its tiles in plan order, the boards
    in parallel."""
    lp = plan.header.layers[k]
    patches = layer.patches(x)
    x_aug = np.hstack([patches, np.full((len(patches), 1), lp.bias_input)])
    outputs = layer.matrix.shape[0]
    tiles = plan.header.tiles
    affine = plan.header.affine
    reference_x = None if affine is None else reference_inputs(plan, vectors=affine.vectors, seed=affine.seed)

    def run_board(board: int) -> dict[int, tuple]:
        return {t: _run_tile(labs[board], plan, t, x_aug, lp.conductance_per_weight_s, limits[board],
                             truths[board], progress, None if reference_x is None else reference_x[t])
                for t in lp.tiles if tiles[t].board == board}

    done = {t: result for board in in_parallel(run_board, len(labs)) for t, result in board.items()}
    stages: dict[str, np.ndarray] = {}
    weights: dict[str, list[np.ndarray]] = {"target": [], "planned": [], "measured": [], "realized": []}
    for t in lp.tiles:  # in plan order: the sums come out the same whatever the boards
        outputs_w, tile_weights = done[t]
        for name, value in outputs_w.items():
            stages.setdefault(name, np.zeros((len(patches), outputs)))[:, tiles[t].tile.outputs] += value
        for name, value in tile_weights.items():
            weights[name].append(value)
    flat = {name: np.concatenate([w.ravel() for w in parts]) for name, parts in weights.items()
            if len(parts) == len(lp.tiles)}  # every tile's, or none
    return {name: layer.assemble(value, len(x)) for name, value in stages.items()}, flat


def run_check(lab: Lab | Sequence[Lab], plan: SwitchPlan, x: np.ndarray, y: np.ndarray | None = None, *,
              nplc: float | None = None, progress: Callable[[int], None] | None = None,
              details: dict | None = None) -> CheckReport:
    """Run a programmed network on the array and compare with float64.

    The schedule (:mod:`crossbar_ctl.engine._schedule`): layer by layer, each board loads its
    program steps in order, each once, and streams every input vector through each tile of the
    step (all of them batched) before the next; the boards run in parallel. ``cost`` in the report
    counts the switch writes the drivers sent beside the model's prediction.

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan
    plan : SwitchPlan
        A plan, normally programmed (``program_plan``) on this lab.
    x : ndarray (samples, in_size)
    y : ndarray (samples,) of int, optional
        Labels, for accuracies.
    nplc : float, optional
        Readout integration time for the run.
    progress : callable, optional
        Called with the number of input vectors done.
    details : dict, optional
        Filled with per-layer ``reference`` and ``analog`` outputs (for plots).

    Raises
    ------
    EngineError
        Inputs of the wrong shape or not finite; a plan for another array; a damaged affine
        correction (its outputs are corrected by it, :mod:`crossbar_ctl.engine._affine`).
    """
    started = time.monotonic()
    network = plan.network()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != network.in_size or not np.all(np.isfinite(x)):
        raise EngineError(f"inputs must be finite, shape (samples, {network.in_size}); got {x.shape}")
    validate_affine(plan)
    labs = per_board(lab, plan.board_count, "labs")
    ref = plan.header.calibration
    for board_lab in labs:
        rows, cols = board_lab.readout.rows, board_lab.readout.cols
        if (ref.rows, ref.cols) != (rows, cols):
            raise EngineError(f"the plan is for a {ref.rows}x{ref.cols} array but this lab has {rows}x{cols}; "
                              "calibrate and program this lab")
        if nplc is not None:
            board_lab.readout.set_nplc(nplc)
    limits = [readout_limits(board_lab) for board_lab in labs]
    truths = [truth_of(board_lab) for board_lab in labs]
    truth = truths[0]
    parts = [part for part in (plan, plan.residual) if part is not None]  # the order run_check loads them in
    loads = [[part.step_masks(part.header.tiles[t].step) for k in range(len(plan.header.layers)) for part in parts
              for t in part.header.layers[k].tiles if part.header.tiles[t].board == board]
             for board in range(len(labs))]
    predicted = [predict_loads(loads[board], labs[board].board.known_masks(), settle_s=labs[board].board.settle_s)
                 for board in range(len(labs))]
    before = [board_counters(board_lab) for board_lab in labs]
    layers = []
    activation = x
    inputs: list[np.ndarray] = []  # every layer's (analog) input so far: residual adds read them
    for k, layer in enumerate(network.layers):
        inputs.append(activation)
        reference = layer.pre_activation(activation)
        stages, weights = _run_layer(labs, plan, layer, k, activation, limits, truths, progress)
        analog = stages["analog"]
        error = analog - reference
        budget = _budget(stages, reference, truth=truth is not None)
        magnitude = weight_magnitude(layer.matrix, layer.bias)
        lp = plan.header.layers[k]
        measured = None
        if plan.header.program is not None:
            residuals = [plan.tile(t, "residual_after_s").ravel() for t in lp.tiles]
            measured = _rms(np.concatenate(residuals)) / lp.conductance_per_weight_s
        snr, sinad = snr_db(reference, error), sinad_db(reference, error)
        layers.append(LayerCheck(
            index=k, kind=lp.kind, outputs=layer.out_size, tiles=len(lp.tiles),
            relative_error=_rms(error) / max(_rms(reference), 1e-300), snr_db=snr,
            enob=effective_bits(snr), sinad_db=sinad, sinad_bits=effective_bits(sinad),
            planned_bits=precision_bits(weights["planned"], weights["target"], magnitude),
            measured_bits=(precision_bits(weights["measured"], weights["target"], magnitude)
                           if "measured" in weights else None),
            realized_bits=(precision_bits(weights["realized"], weights["target"], magnitude)
                           if "realized" in weights else None),
            budget=budget,
            branches_per_weight=lp.branches_per_weight, weight_error_bits=lp.weight_error_bits,
            subset_sum_error_s=lp.subset_sum_error_s,
            expected_subset_sum_error_s=lp.expected_subset_sum_error_s,
            measured_weight_error_rms=measured, common_mode_ratio=_common_mode_ratio(plan, lp.tiles),
        ))
        if details is not None:
            details.setdefault("reference", []).append(reference)
            details.setdefault("stages", []).append(stages)
            details.setdefault("analog", []).append(analog)
        activation = layer.activate(analog, inputs)  # activation and digital steps (pooling, ...)
    cost = schedule_cost([count_since(board_lab, b) for board_lab, b in zip(labs, before)], predicted,
                         steps=sum(len({tile.step for tile in part.tiles()}) for part in parts),
                         tiles=sum(len(part.header.tiles) for part in parts))
    digital = network.predict(x)
    analog_pred = np.argmax(activation, axis=1)  # the network's output, as Network.predict
    accuracy = (lambda p: float(np.mean(p == y))) if y is not None else (lambda p: None)
    return CheckReport(
        network_name=network.name, samples=len(x), digital_accuracy=accuracy(digital),
        analog_accuracy=accuracy(analog_pred), agreement=float(np.mean(digital == analog_pred)),
        layers=tuple(layers), calibration=ref, predistorted=not is_ideal(plan.header.twin),
        lab_idn=lab_idn(labs[0]), duration_s=time.monotonic() - started, created_utc=utc_now(), cost=cost,
    )
