"""Tables and plots of the engine's results (matplotlib is imported only to plot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossbar_ctl.engine._check import LayerCheck
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_save_figure, pyplot

__all__ = ["budget_rows", "layer_rows", "plot_check"]

_NONE = "-"


def _bits(figure, key: str):
    return _NONE if figure is None else getattr(figure, key)


def layer_rows(layers: Sequence[LayerCheck]) -> list[dict]:
    """One table row per layer: precision and error, the unit in every header (``[1]``: a ratio,
    ``[#]``: a count; planned: the twin's prediction; measured: the closed loop's last reading,
    ``-`` for a plan not programmed; realized: the true circuit, ``-`` on hardware)."""
    return [{
        "layer": layer.index, "kind": layer.kind, "outputs [#]": layer.outputs, "tiles [#]": layer.tiles,
        "branches/w [#]": layer.branches_per_weight,
        "planned median [bit]": layer.planned_bits.median,
        "measured median [bit]": _bits(layer.measured_bits, "median"),
        "realized median [bit]": _bits(layer.realized_bits, "median"),
        "realized p01 [bit]": _bits(layer.realized_bits, "p01"),
        "realized worst [bit]": _bits(layer.realized_bits, "worst"),
        "rel error [1]": layer.relative_error, "snr [dB]": layer.snr_db, "enob [bit]": layer.enob,
        "sinad [bit]": layer.sinad_bits,
        "common mode [1]": _NONE if layer.common_mode_ratio is None else layer.common_mode_ratio,
    } for layer in layers]


def budget_rows(layers: Sequence[LayerCheck]) -> list[dict]:
    """The error budget: one row per layer and stage, its rms and its share of mean(error^2) (the
    parts of ``programmed``, indented: their share of its mean square)."""
    rows = []
    for layer in layers:
        budget = layer.budget

        def row(stage: str, name: str, share: float) -> dict:
            rms = getattr(budget, stage) if stage != "cross" else None
            return {"layer": layer.index, "stage": name, "rms [output units]": _NONE if rms is None else rms,
                    "share [1]": share}

        for stage, share in budget.share.items():
            rows.append(row(stage, stage, share))
            if stage == "programmed" and budget.programmed_share is not None:
                rows += [row(part, f"  {part}", value) for part, value in budget.programmed_share.items()]
        rows.append(row("total", "total", 1.0))
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
    plt = pyplot(EngineError, "plots need")
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
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return [path]
