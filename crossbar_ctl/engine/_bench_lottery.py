"""``crossbar bench lottery-train``: a dense network mapped by subset sums against masks trained on the pools.

Three methods on the same calibrated simulated array (one lab, calibrated once) and the same data:

- ``dense+subset-sum``, the engine before training: a float64 dense network of the same
  architecture (:func:`._lottery.train_dense`), each weight then approximated by a subset sum of its
  pair's measured pool (``program_network``);
- ``edge-popup-measured``: masks trained on the measured pools with the twin in the forward pass
  (:func:`._lottery.train_masks`);
- ``random-mask``, the floor: the same pools under the scores' random start (0 epochs).

Each is programmed with the hardware in the loop and checked on the held-out test set:
``digital_accuracy`` is the float64 network's (for the masks: the twin's weights of the masks),
``analog_accuracy`` the array's, ``agreement`` how often they predict the same class, ``enob_min``
the worst layer's ENOB (variance convention, ``_check``), ``train_s`` the training's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_save_figure, pyplot

__all__ = ["METHODS", "bench_lottery_train", "plot_lottery_train"]

METHODS = ("dense+subset-sum", "edge-popup-measured", "random-mask")


def bench_lottery_train(*, profile: str = "pcb", arch: str = "64-32-10", data: str = "digits8", rows: int = 64,
                        cols: int = 64, branches: int = 8, epochs: int = 30, samples: int | None = None,
                        seed: int = 0, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train, program and check the three :data:`METHODS` on one calibrated simulated array.

    Parameters
    ----------
    profile : {"ideal", "pcb", "harsh"}
        The simulated board's hidden physics.
    arch : str
        ``_lottery.parse_arch``, e.g. ``"64-32-10"``.
    data : str
        ``digits8``, ``digits28`` or a data file.
    rows, cols, branches : int
        The simulated array.
    epochs : int
        Training epochs of the dense network and of the masks.
    samples : int, optional
        Check only the first ``samples`` held-out samples (default: all).
    seed : int
        Seed of the lab and of training.
    progress : callable, optional
        Called with the name of each stage done (calibrate, then each method).

    Returns
    -------
    list of dict
        One row per method: ``method``, ``arch``, ``digital_accuracy``, ``analog_accuracy``,
        ``agreement``, ``enob_min``, ``train_s``, ``program_s``, ``check_s``.
    """
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._datasets import load_data
    from crossbar_ctl.engine._lottery import (
        DENSE_LEARNING_RATE, TrainOptions, program_trained, train_dense, train_masks,
    )
    from crossbar_ctl.engine._workflow import array_model, check_network, program_network

    dataset = load_data(data)
    x, y = dataset.test_x[:samples], dataset.test_y[:samples]
    config = {"name": f"bench-lottery-train-{profile}",
              "sim": {"rows": rows, "cols": cols, "branches": branches, "profile": profile, "seed": seed}}
    results = []
    with open_lab(config) as lab:
        if getattr(lab, "truth", None) is None:
            raise EngineError("bench lottery-train runs on a simulated lab")
        record = calibrate(lab)
        model = array_model(record)
        if progress:
            progress("calibrate")
        for method in METHODS:
            if method == "dense+subset-sum":
                network, train_s = train_dense(dataset, arch, options=TrainOptions(
                    epochs=epochs, learning_rate=DENSE_LEARNING_RATE, seed=seed))
                started = time.monotonic()
                plan = program_network(lab, network, record)
            else:
                trained = train_masks(model, dataset, arch, options=TrainOptions(
                    epochs=epochs if method == "edge-popup-measured" else 0, seed=seed))
                train_s = trained.train_s
                started = time.monotonic()
                plan = program_trained(lab, trained.plan, record)
            program_s = time.monotonic() - started
            started = time.monotonic()
            report = check_network(lab, plan, x, y)
            results.append({
                "method": method, "arch": arch, "digital_accuracy": report.digital_accuracy,
                "analog_accuracy": report.analog_accuracy, "agreement": report.agreement,
                "enob_min": min(layer.enob for layer in report.layers), "train_s": train_s,
                "program_s": program_s, "check_s": time.monotonic() - started,
            })
            if progress:
                progress(method)
    return results


def plot_lottery_train(rows: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Digital and analog held-out accuracy of each method, side by side, as a figure."""
    plt = pyplot(EngineError, "--plot needs")
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    where = np.arange(len(rows))
    for offset, key, label in ((-0.2, "digital_accuracy", "digital (float64)"),
                               (0.2, "analog_accuracy", "analog (the array)")):
        values = [100.0 * row[key] for row in rows]
        bars = ax.bar(where + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set(xticks=where, xticklabels=[row["method"] for row in rows], ylabel="held-out accuracy [%]",
           ylim=(0, 105), title=title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
