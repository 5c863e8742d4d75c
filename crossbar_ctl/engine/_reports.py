"""Tables and plots of the engine's results (matplotlib is imported only to plot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossbar_ctl.engine._check import LayerCheck
from crossbar_ctl.core.errors import EngineError

__all__ = ["layer_rows", "plot_check"]


def layer_rows(layers: Sequence[LayerCheck]) -> list[dict]:
    """One table row per layer: precision, error and its budget."""
    rows = []
    for layer in layers:
        budget = layer.budget
        row = {
            "layer": layer.index, "kind": layer.kind, "outputs": layer.outputs, "tiles": layer.tiles,
            "branches/w": layer.branches_per_weight, "w_bits": layer.weight_error_bits,
            "rel_error": layer.relative_error, "snr_db": layer.snr_db,
            "eff_bits": layer.effective_bits, "quant": budget.quantization,
        }
        if budget.source == "simulator truth":
            row.update({"calib": budget.calibration, "ir_drop": budget.ir_drop, "noise": budget.read_noise})
        else:
            row["other"] = budget.other
        rows.append(row)
    return rows


def plot_check(details: dict, path: str | Path, *, title: str = "") -> list[Path]:
    """Analog vs float64 scatter per layer and the error histogram, in one PNG.

    Parameters
    ----------
    details : dict
        ``reference`` and ``analog``: lists of per-layer outputs (``run_check(details=...)``).
    path : path
        The PNG file.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise EngineError("plots need matplotlib: pip install 'crossbar-ctl[plot]'") from exc
    references, analogs = details["reference"], details["analog"]
    count = len(references)
    fig, axes = plt.subplots(2, count, figsize=(4 * count, 7), squeeze=False)
    for k, (ref, ana) in enumerate(zip(references, analogs)):
        ax = axes[0, k]
        ax.plot(ref.ravel(), ana.ravel(), ".", markersize=1.5, alpha=0.5)
        low, high = float(ref.min()), float(ref.max())
        ax.plot([low, high], [low, high], "k-", linewidth=0.5)
        ax.set(title=f"layer {k}", xlabel="float64 output", ylabel="analog output")
        err = (ana - ref).ravel()
        scale = float(np.sqrt(np.mean(ref**2))) or 1.0
        axes[1, k].hist(err / scale, bins=80)
        axes[1, k].set(xlabel="error / rms(float64)", ylabel="outputs")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return [path]
