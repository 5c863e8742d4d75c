"""``crossbar demo``: calibrate the default simulated lab, program the digits network, check it.

The lab is the default simulated one plus a few faults (``crossbar_ctl/data/demo_lab.toml``); the
network is the shipped 64-32-10 digits MLP (``crossbar_ctl/data/digits_mlp.npz``, trained by
``scripts/train_digits.py``) with its held-out test set.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from importlib.resources import files
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from crossbar_ctl.engine._check import CheckReport, truth_of
from crossbar_ctl.engine._workflow import array_model, check_lab, check_network
from crossbar_ctl.engine._network import Network, load_network
from crossbar_ctl.engine._plan import (
    ArrayModel,
    PlanOptions,
    SwitchPlan,
    inference_vectors,
    make_plan,
    network_tiles,
    pair_transfer,
)
from crossbar_ctl.engine._program import ProgramOptions, load_tile, program_plan
from crossbar_ctl.engine._residual import plan_options_for
from crossbar_ctl.core.errors import EngineError

__all__ = [
    "DEMO_LAB", "DEMO_NPLC", "DEMO_PROGRAM", "DIGITS_NETWORK", "demo_lab", "demo_targets", "predistortion_effect",
    "progress_bar",
    "run_demo", "with_sim",
]

DEMO_LAB = files("crossbar_ctl") / "data" / "demo_lab.toml"
DIGITS_NETWORK = files("crossbar_ctl") / "data" / "digits_mlp.npz"
DEMO_NPLC = 4.0
"""Readout integration time of the demo's inference run (power-line cycles)."""
DEMO_PROGRAM = ProgramOptions(residual=True)
"""How the demo programs: with the residual plan (:mod:`crossbar_ctl.engine._residual`)."""


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True):
    """A tqdm bar on stderr (disabled: a bar that prints nothing)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=description, file=sys.stderr, leave=False, disable=not enabled) as bar:
        yield bar


def predistortion_effect(lab: Any, network: Network, plans: dict[str, SwitchPlan], x: np.ndarray
                         ) -> list[dict[str, float]]:
    """Relative output error per layer of several plans, on the simulator's noiseless truth.

    Each layer is fed the float64 activations of ``x``; each plan's tiles are loaded and the
    layer's output through the true circuit (wires included, no read noise) is compared with
    float64. Needs a simulated lab (``lab.truth``).
    """
    truth = truth_of(lab)
    if truth is None:
        raise EngineError("the pre-distortion effect is measured on the simulator's truth; this lab has none")
    rows = []
    activation = np.asarray(x, dtype=np.float64)
    inputs: list[np.ndarray] = []  # every layer's input so far: residual adds read them
    for k, layer in enumerate(network.layers):
        inputs.append(activation)
        reference = layer.pre_activation(activation)
        row: dict[str, float] = {"layer": k}
        for name, plan in plans.items():
            lp = plan.header.layers[k]
            patches = layer.patches(activation)
            x_aug = np.hstack([patches, np.full((len(patches), 1), lp.bias_input)])
            out = np.zeros((len(patches), layer.matrix.shape[0]))
            for t in lp.tiles:
                tile = plan.header.tiles[t].tile
                load_tile(lab, plan.step_masks(tile.step))
                transfer = np.asarray(truth.transfer_s())[tile.block]
                out[:, tile.outputs] += x_aug[:, tile.inputs] @ pair_transfer(transfer)
            out = layer.assemble(out / lp.conductance_per_weight_s, len(activation))
            row[name] = float(np.sqrt(np.mean((out - reference) ** 2)) / np.sqrt(np.mean(reference**2)))
        rows.append(row)
        activation = layer.activate(reference, inputs)
    return rows


def run_demo(*, lab_config: Any = None, profile: str | None = None, network: Network | None = None,
             samples: int | None = None,
             plan_options: PlanOptions | None = None, program_options: ProgramOptions | None = None,
             calibration_options: Any = None, nplc: float | None = DEMO_NPLC,
             plot_dir: str | Path | None = None, show_progress: bool = True,
             served: bool = False, noise_seed: int | None = None) -> dict[str, Any]:
    """Calibrate, program and check a network on a simulated lab; returns the summary.

    Parameters
    ----------
    lab_config : path, dict or LabConfig, optional
        Default: the demo lab (the default simulated lab with a few faults).
    profile : {"ideal", "pcb", "harsh"}, optional
        Run on this simulated board profile instead of the lab's own (the demo lab's: ``pcb``).
    network : Network, optional
        Default: the shipped digits MLP; its test set is the data.
    samples : int, optional
        Use only the first ``samples`` test samples (1 to all of them; default: all).
    nplc : float, optional
        Readout integration time of the inference run (default 4 power-line cycles).
    plot_dir : path, optional
        Write ``check.png`` (analog vs float64 per layer, error histograms) there.
    plan_options, program_options : optional
        Default: programmed with the residual plan (:data:`DEMO_PROGRAM`), planned with the joint
        cost's weight for it (:data:`crossbar_ctl.engine._residual.RESIDUAL_COMMON_MODE_WEIGHT`;
        without the residual, :data:`crossbar_ctl.engine._plan.COMMON_MODE_WEIGHT`).
    served : bool
        Talk to the simulated instruments through the real stacks: the source-meter over loopback
        TCP with pyvisa, the switch board over a pseudo-terminal with pyserial.
    noise_seed : int, optional
        Another realization of the read noise on the same board (``[sim] noise_seed``).

    Returns
    -------
    dict
        ``profile`` (the simulated board's), ``noise_seed`` (None: the lab's own noise),
        ``digital_accuracy``, ``analog_accuracy``, ``agreement``, ``layers`` (:class:`LayerCheck`
        as data: ``enob``, ``planned_bits``, ``measured_bits``, ``realized_bits``, the error budget
        with its shares), ``predistortion``, ``program`` and ``residual_program`` (the residual
        plan's, None without), ``calibration``, ``timings_s``.
    """
    from calibration import calibrate

    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, Integral) or samples < 1):
        raise EngineError(f"samples = {samples!r}: expected a positive whole number of test samples")
    timings: dict[str, float] = {}
    started = time.monotonic()
    network = network or load_network(DIGITS_NETWORK)
    if network.test_x is None:
        raise EngineError(f"{network.name} has no test set (test.x, test.y) to run the demo on")
    if samples is not None and samples > len(network.test_x):
        raise EngineError(f"samples = {samples}: {network.name} has only {len(network.test_x)} test samples")
    x, y = network.test_x[:samples], network.test_y[:samples]
    sim = {key: value for key, value in (("profile", profile), ("noise_seed", noise_seed)) if value is not None}
    if sim:
        lab_config = with_sim(lab_config if lab_config is not None else str(DEMO_LAB), **sim)
    with demo_lab(lab_config, served=served) as lab:
        if truth_of(lab) is None:
            raise EngineError("the demo runs on a simulated lab (its figures need the simulator's truth); "
                              "use crossbar calibrate, program and check on hardware")
        mark = time.monotonic()
        with progress_bar(1, "calibrate", enabled=show_progress) as bar:
            record = calibrate(lab, options=calibration_options, progress=_calibration_progress(bar))
        timings["calibrate"] = time.monotonic() - mark
        model: ArrayModel = array_model(record)
        check_lab(model.reference, lab)

        mark = time.monotonic()
        program_options = program_options or DEMO_PROGRAM
        plan_options = plan_options or plan_options_for(program_options)
        rows, cols, _ = lab.geometry
        tiles = len(network_tiles(network, rows, cols))
        with progress_bar(2 * tiles, "solve + program", enabled=show_progress) as bar:
            plan = make_plan(network, model, options=plan_options, progress=bar.update)
            programmed = program_plan(lab, plan, model, options=program_options, progress=bar.update)
        timings["program"] = time.monotonic() - mark

        mark = time.monotonic()
        details: dict = {}
        with progress_bar(inference_vectors(network, rows, cols, len(x)), "analog inference",
                          enabled=show_progress) as bar:
            report: CheckReport = check_network(lab, programmed, x, y, nplc=nplc, progress=bar.update,
                                                details=details)
        timings["check"] = time.monotonic() - mark

        mark = time.monotonic()
        bare = make_plan(network, model, options=plan_options.model_copy(update={"predistort": False}))
        effect = predistortion_effect(lab, network, {"bare": bare, "predistorted": plan,
                                                     "closed_loop": programmed}, x)
        timings["predistortion"] = time.monotonic() - mark
        calibration = record.summary()
        profile = lab.config.sim.profile if lab.config.sim is not None else None
        noise = lab.config.sim.noise_seed if lab.config.sim is not None else None
    if plot_dir is not None:
        from crossbar_ctl.engine._reports import plot_check

        plot_check(details, Path(plot_dir) / "check.png", title=f"{network.name}: analog vs float64")
    timings["total"] = time.monotonic() - started
    program = programmed.header.program
    return {
        "network": network.name,
        "profile": profile,
        "noise_seed": noise,
        "samples": report.samples,
        "digital_accuracy": report.digital_accuracy,
        "analog_accuracy": report.analog_accuracy,
        "agreement": report.agreement,
        "layers": [layer.model_dump() for layer in report.layers],
        "predistortion": effect,
        "program": program.model_dump() if program else None,
        "residual_program": (programmed.residual.header.program.model_dump()
                             if programmed.residual is not None else None),
        "affine": programmed.header.affine.model_dump() if programmed.header.affine else None,
        "calibration": calibration,
        "nplc": nplc,
        "timings_s": timings,
    }


def demo_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's figures against issue 12's targets (``crossbar bench demo``): one row per figure
    with ``value``, ``target`` and ``met``."""
    bits = min(layer["enob"] for layer in result["layers"])
    gap = abs(result["analog_accuracy"] - result["digital_accuracy"])
    realized = min(layer["realized_bits"]["median"] for layer in result["layers"] if layer["realized_bits"])
    total = result["timings_s"]["total"]
    return [
        {"figure": "agreement", "value": result["agreement"], "target": ">= 0.995",
         "met": result["agreement"] >= 0.995},
        {"figure": "|analog - digital| accuracy", "value": gap, "target": "<= 0.005", "met": gap <= 0.005},
        {"figure": "min enob, bits", "value": bits, "target": ">= 11", "met": bits >= 11},
        {"figure": "min realized median, bits", "value": realized, "target": ">= 15", "met": realized >= 15},
        {"figure": "total time, s", "value": total, "target": "<= 60 warm, <= 120 cold", "met": total <= 60},
    ]


def with_sim(lab_config: Any, **sim: Any) -> Any:
    """A simulated lab configuration with keys of its ``[sim]`` table replaced (``profile``:
    ``ideal``, ``pcb``, ``harsh``; ``noise_seed``).

    Raises
    ------
    ConfigError
        The configuration is invalid, has no simulated array, or a value is not allowed.
    """
    from crossbar_ctl.core.config import LabConfig, config_error, load_lab_config
    from crossbar_ctl.core.errors import ConfigError
    from pydantic import ValidationError

    config = load_lab_config(lab_config)
    if config.sim is None:
        raise ConfigError(f"{', '.join(sim)} needs a simulated lab (a [sim] table)", key=next(iter(sim)))
    data = config.model_dump()
    data["sim"].update(sim)
    try:
        return LabConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, "lab configuration") from exc


def demo_lab(lab_config: Any = None, *, served: bool = False):
    """The demo's simulated lab, in process or served (pyvisa over TCP, pyserial over a pty)."""
    from crossbar_ctl._lab import open_lab

    return open_lab(lab_config if lab_config is not None else str(DEMO_LAB), served=served)


def _calibration_progress(bar):
    def update(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(stage, refresh=False)
        bar.refresh()

    return update


