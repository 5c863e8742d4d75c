"""Analog inference checks: run a programmed network on the array and compare with float64.

Layer by layer, each tile is loaded, the layer's inputs (im2col patches for a convolution, plus
the bias row) are mapped to row voltages, the readout returns column currents, and the pair
currents are scaled back to numbers and accumulated digitally; activations are computed
digitally. Each layer is compared with the float64 layer applied to the same (analog) inputs.

The error budget splits a layer's output error into stages, each the difference of two
evaluations of the same row voltages:

1. ``quantization``: the plan's predicted transfer (twin, calibrated conductances) vs float64;
2. ``calibration``: the twin with the true branch conductances vs with the calibrated ones;
3. ``ir_drop``: the true circuit (noiseless) vs the twin with the true conductances, i.e. the
   wire error the pre-distortion did not remove;
4. ``read_noise``: the measurement vs the noiseless true circuit (noise, ADC quantization).

Stages 2 to 4 need the truth, which only a simulated lab has (``lab.sim``); on hardware they are
reported together as ``other``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_write_text
from crossbar_ctl.engine._mapping import CalibrationRef, pair_transfer, row_voltages
from crossbar_ctl.engine._network import Layer
from crossbar_ctl.engine._plan import SwitchPlan, utc_now
from crossbar_ctl.engine._program import lab_idn, load_tile, readout_limits, row_bound
from crossbar_ctl.engine._twin import is_ideal, twin_transfer

if TYPE_CHECKING:
    from drivers import Lab

__all__ = ["CheckReport", "ErrorBudget", "LayerCheck", "run_check", "snr_db", "effective_bits"]

CHECK_SCHEMA_VERSION = 1
_BATCH = 64  # input vectors per readout call


def snr_db(reference: np.ndarray, error: np.ndarray) -> float:
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
    """Effective number of bits of a SINAD in dB, ``(SINAD - 1.76) / 6.02`` (ideal N-bit quantizer
    of a full-scale sine: N)."""
    return (snr - 1.76) / 6.02


class ErrorBudget(StrictModel):
    """rms output error of one layer by cause, in the layer's output units."""

    source: Literal["simulator truth", "measurement only"]
    quantization: float
    """Subset-sum quantization (and what pre-distortion left, as the twin predicts it)."""
    calibration: float | None = None
    """Calibration uncertainty and drift: true vs calibrated branch conductances."""
    ir_drop: float | None = None
    """Wire resistance not removed by pre-distortion: true circuit vs twin."""
    read_noise: float | None = None
    """Read noise and readout quantization: measured vs noiseless true circuit."""
    other: float | None = None
    """On hardware: everything but quantization, together."""
    total: float


class LayerCheck(StrictModel):
    """Analog vs float64 for one layer."""

    index: int
    kind: Literal["dense", "conv"]
    outputs: int
    tiles: int
    relative_error: float
    """rms(analog - float64) / rms(float64)."""
    snr_db: float
    """SINAD of the layer's outputs, dB: variances, each output's mean removed (:func:`snr_db`)."""
    effective_bits: float
    """``(snr_db - 1.76) / 6.02``."""
    budget: ErrorBudget
    branches_per_weight: float
    """Usable branches per differential pair (one bit per resistor expected)."""
    weight_error_bits: float
    """log2(max|w| / rms weight error) as planned."""
    subset_sum_error_s: float
    expected_subset_sum_error_s: float
    measured_weight_error_rms: float | None
    """rms of measured minus target pair transfer after programming, in weight units."""


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

    def save(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if np.size(a) else 0.0


class _Truth:
    """The simulated array behind a lab, read only for the error budget."""

    def __init__(self, lab: Lab) -> None:
        self.array = lab.sim.array

    def cell_conductance_s(self) -> np.ndarray:
        """True cell conductances ``(rows, cols)`` for the masks now set (faults included)."""
        return np.asarray(self.array.cell_conductance_s())

    def currents_a(self, voltage_v: np.ndarray) -> np.ndarray:
        """Noiseless column currents for row voltages ``(batch, rows)`` with the masks now set."""
        return np.asarray(self.array.circuit().solve(voltage_v).col_current_a)


def _truth(lab: Lab) -> _Truth | None:
    return _Truth(lab) if getattr(lab, "sim", None) is not None else None


def _mvm(lab: Lab, voltage_v: np.ndarray, progress: Callable[[int], None] | None) -> np.ndarray:
    out = []
    for start in range(0, len(voltage_v), _BATCH):
        out.append(np.asarray(lab.readout.mvm(voltage_v[start:start + _BATCH])))
        if progress:
            progress(len(voltage_v[start:start + _BATCH]))
    return np.concatenate(out) if out else np.zeros((0, lab.readout.cols))


def _run_layer(lab: Lab, plan: SwitchPlan, layer: Layer, k: int, x: np.ndarray, limits: dict[str, float],
               truth: _Truth | None, progress: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    """One layer on the array: flat inputs (batch, in) -> analog outputs and budget stages."""
    lp = plan.header.layers[k]
    patches = layer.patches(x)
    x_aug = np.hstack([patches, np.full((len(patches), 1), lp.bias_input)])
    outputs = layer.matrix.shape[0]
    names = ["analog", "planned"] + (["twin_true", "circuit"] if truth else [])
    stages = {name: np.zeros((len(patches), outputs)) for name in names}
    twin = plan.header.twin
    rows = lab.readout.rows
    for t in lp.tiles:
        tile = plan.header.tiles[t].tile
        masks = plan.tile(t, "masks")
        load_tile(lab, masks)
        voltage, per_unit = row_voltages(x_aug[:, tile.inputs], plan.tile(t, "cell_s"),
                                         row_bound_s=row_bound(lab, tile.rows), **limits)
        full = np.zeros((len(voltage), rows))
        full[:, : tile.rows] = voltage
        used = slice(0, 2 * tile.pairs)
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(per_unit > 0, 1.0 / (per_unit * lp.conductance_per_weight_s), 0.0)[:, None]
        currents = {"analog": _mvm(lab, full, progress)[:, used],
                    "planned": voltage @ plan.tile(t, "predicted_s")}
        if truth:
            true_transfer = twin_transfer(twin, truth.cell_conductance_s())
            currents["twin_true"] = voltage @ true_transfer[: tile.rows, used]
            currents["circuit"] = truth.currents_a(full)[:, used]
        for name, current in currents.items():
            stages[name][:, tile.outputs] += pair_transfer(current) * unit
    return {name: layer.assemble(value, len(x)) for name, value in stages.items()}


def run_check(lab: Lab, plan: SwitchPlan, x: np.ndarray, y: np.ndarray | None = None, *,
              nplc: float | None = None, progress: Callable[[int], None] | None = None,
              details: dict | None = None) -> CheckReport:
    """Run a programmed network on the array and compare with float64.

    Parameters
    ----------
    lab : drivers.Lab
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
        Inputs of the wrong shape or not finite; a plan for another array.
    """
    started = time.monotonic()
    network = plan.network()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != network.in_size or not np.all(np.isfinite(x)):
        raise EngineError(f"inputs must be finite, shape (samples, {network.in_size}); got {x.shape}")
    rows, cols = lab.readout.rows, lab.readout.cols
    ref = plan.header.calibration
    if (ref.rows, ref.cols) != (rows, cols):
        raise EngineError(f"the plan is for a {ref.rows}x{ref.cols} array but this lab has {rows}x{cols}; "
                          "calibrate and program this lab")
    if nplc is not None:
        lab.readout.set_nplc(nplc)
    limits = readout_limits(lab)
    truth = _truth(lab)
    layers = []
    activation = x
    for k, layer in enumerate(network.layers):
        reference = layer.pre_activation(activation)
        stages = _run_layer(lab, plan, layer, k, activation, limits, truth, progress)
        analog = stages["analog"]
        error = analog - reference
        if truth:
            budget = ErrorBudget(
                source="simulator truth", quantization=_rms(stages["planned"] - reference),
                calibration=_rms(stages["twin_true"] - stages["planned"]),
                ir_drop=_rms(stages["circuit"] - stages["twin_true"]),
                read_noise=_rms(analog - stages["circuit"]), total=_rms(error))
        else:
            budget = ErrorBudget(source="measurement only",
                                 quantization=_rms(stages["planned"] - reference),
                                 other=_rms(analog - stages["planned"]), total=_rms(error))
        lp = plan.header.layers[k]
        measured = None
        if plan.header.program is not None:
            residuals = [plan.tile(t, "residual_after_s").ravel() for t in lp.tiles]
            measured = _rms(np.concatenate(residuals)) / lp.conductance_per_weight_s
        snr = snr_db(reference, error)
        layers.append(LayerCheck(
            index=k, kind=lp.kind, outputs=layer.out_size, tiles=len(lp.tiles),
            relative_error=_rms(error) / max(_rms(reference), 1e-300), snr_db=snr,
            effective_bits=effective_bits(snr), budget=budget,
            branches_per_weight=lp.branches_per_weight, weight_error_bits=lp.weight_error_bits,
            subset_sum_error_s=lp.subset_sum_error_s,
            expected_subset_sum_error_s=lp.expected_subset_sum_error_s,
            measured_weight_error_rms=measured,
        ))
        if details is not None:
            details.setdefault("reference", []).append(reference)
            details.setdefault("analog", []).append(analog)
        activation = layer.activate(analog)
    digital = network.predict(x)
    analog_pred = np.argmax(analog, axis=1)
    accuracy = (lambda p: float(np.mean(p == y))) if y is not None else (lambda p: None)
    return CheckReport(
        network_name=network.name, samples=len(x), digital_accuracy=accuracy(digital),
        analog_accuracy=accuracy(analog_pred), agreement=float(np.mean(digital == analog_pred)),
        layers=tuple(layers), calibration=ref, predistorted=not is_ideal(plan.header.twin),
        lab_idn=lab_idn(lab), duration_s=time.monotonic() - started, created_utc=utc_now(),
    )
