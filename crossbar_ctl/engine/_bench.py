"""``crossbar bench branches``: bits against branches per cell, through the whole job, per profile.

One simulated array geometry and one synthetic dense layer of U(-1, 1) weights and biases; for
each number of branches per cell a fresh simulated lab of the chosen profile (same seed) is
calibrated, the layer programmed with the hardware in the loop and checked on random inputs. Beside
what the job achieves, ``subset_sum_bits_median`` is the maths alone: the optimizer on the true
branch conductances (exact values, no wires, no noise) for the same targets, the ceiling the
random-subset-sum theory sets at about one bit per resistor of the pair's pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.core.files import atomic_save_figure, pyplot
from crossbar_ctl.engine._check import precision_bits, truth_of
from crossbar_ctl.engine._mapping import pair_pool, pair_transfer, weight_magnitude
from crossbar_ctl.engine._network import Network, build_network

__all__ = ["BRANCHES", "bench_branches", "plot_branches", "uniform_layer"]

BRANCHES = (4, 6, 8, 12, 16)
"""Branches per cell of the bench's rows (pools of 8 to 32 signed values)."""


def uniform_layer(inputs: int, outputs: int, *, samples: int, seed: int = 0) -> tuple[Network, np.ndarray]:
    """A dense layer with U(-1, 1) weights and biases, and U(-1, 1) inputs ``(samples, inputs)``."""
    rng = np.random.default_rng(seed)
    weight = rng.uniform(-1.0, 1.0, size=(outputs, inputs))
    bias = rng.uniform(-1.0, 1.0, size=outputs)
    network = build_network([weight], [bias], ["none"], input_shape=None, strides=[1], paddings=[0],
                            name=f"uniform {inputs}-{outputs}")
    return network, rng.uniform(-1.0, 1.0, size=(samples, inputs))


def _subset_sum_bits(truth: Any, plan: Any, network: Network, solver: Callable) -> float:
    """Median bits of the optimizer on the true branch conductances, for the plan's targets."""
    true_s = np.asarray(truth.branch_conductance_s())
    lp = plan.header.layers[0]
    layer = network.layers[0]
    achieved, targets = [], []
    for t in lp.tiles:
        tile = plan.header.tiles[t].tile
        values, _, usable = pair_pool(true_s, np.zeros_like(true_s), np.ones(true_s.shape, bool), tile)
        target = plan.tile(t, "target_s").ravel()
        achieved.append(solver(values, target).achieved_s)
        targets.append(target)
    cpw = lp.conductance_per_weight_s
    return precision_bits(np.concatenate(achieved) / cpw, np.concatenate(targets) / cpw,
                          weight_magnitude(layer.matrix, layer.bias)).median


def _full_scale_s(plan: Any, network: Network) -> float:
    """The conductance of the layer's max|w| (what the bits figures are against), siemens."""
    layer = network.layers[0]
    return plan.header.layers[0].conductance_per_weight_s * weight_magnitude(layer.matrix, layer.bias)


def _calibration_floor_bits(record: Any, plan: Any, network: Network) -> float:
    """Median bits the calibration's uncertainty alone allows the programmed pairs: each pair's
    closed branches' sigmas in quadrature, against the layer's max|w| (the floor of a solve on the
    calibrated values, which measured refinement can pass)."""
    from crossbar_ctl.engine._mapping import selection_from_masks

    lp = plan.header.layers[0]
    sigma = np.asarray(record.sigma_s)
    scale = _full_scale_s(plan, network)
    bits = []
    for t in lp.tiles:
        block = plan.header.tiles[t].tile.block
        closed = selection_from_masks(plan.tile(t, "masks")[block], sigma.shape[2])
        var = np.sum(np.where(closed, sigma[block] ** 2, 0.0), axis=-1)
        with np.errstate(divide="ignore"):  # a pair with nothing closed: no calibration floor (inf)
            bits.append(-np.log2(np.sqrt(var[:, 0::2] + var[:, 1::2]) / scale).ravel())
    return float(np.median(np.concatenate(bits)))


def _readout_floor_bits(lab: Any, record: Any, plan: Any, network: Network, *, repeats: int = 256) -> float:
    """Median bits the readout's own systematic error leaves the programmed pairs: the plan's tile
    read with ``repeats`` unit vectors per row through the columns (offsets removed, the column
    gains of the calibration divided out; noise ~5e-9 S per element at 256 on pcb) against the truth's
    pair transfer, against the layer's max|w|. The refinement can place a pair no closer to its
    target than it reads it: its difference channels are fitted on these columns."""
    from crossbar_ctl.engine._program import _selection, readout_limits
    from crossbar_ctl.engine._refine import measure_tile
    from crossbar_ctl.engine._workflow import array_model

    lp = plan.header.layers[0]
    model = array_model(record)
    bits = []
    for t in lp.tiles:
        tile = plan.header.tiles[t].tile
        selection = _selection(plan.tile(t, "masks")[tile.block], tile, model.geometry[2])
        context = plan.step_masks(tile.step) & ~plan.tile(t, "masks")
        _, measured, _, _ = measure_tile(lab, model, tile, selection, context, repeats=repeats,
                                         limits=readout_limits(lab), twin=plan.board_twin(0))
        error = pair_transfer(measured) - pair_transfer(np.asarray(truth_of(lab).transfer_s())[tile.block])
        bits.append(error.ravel())
    scale = _full_scale_s(plan, network)
    return float(np.median(-np.log2(np.abs(np.concatenate(bits)) / scale)))


def _common_mode_full_scale(plan: Any, network: Network) -> float:
    """Median over the layer's pairs of the plan's ``(G+ + G-)`` against the layer's full scale
    (the conductance of max|w|): the common mode the readout's gain errors act on, in the units of
    the bits figures."""
    lp = plan.header.layers[0]
    scale = _full_scale_s(plan, network)
    common = [(c[:, 0::2] + c[:, 1::2]).ravel() for c in (plan.tile(t, "cell_s") for t in lp.tiles)]
    return float(np.median(np.concatenate(common)) / scale)


def bench_branches(*, profile: str = "ideal", branches: Sequence[int] = BRANCHES, rows: int = 16,
                   cols: int = 16, samples: int = 200, nplc: float = 4.0, seed: int = 0,
                   plan_options: Any = None,
                   progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Calibrate, program and check one U(-1, 1) layer on simulated labs with 4..16 branches per cell.

    Parameters
    ----------
    profile : {"ideal", "pcb", "harsh"}
        The simulated board's hidden physics (``sim`` profiles).
    branches : sequence of int
        Branches per cell, one row each (the pair's pool holds twice as many values).
    rows, cols : int
        The array; the layer has ``rows - 1`` inputs (plus the bias row) and ``cols // 2`` outputs,
        one tile.
    samples : int
        Random inputs of the check.
    nplc : float
        Readout integration time of the check, power-line cycles.
    seed : int
        Seed of the layer, its inputs and every lab.
    plan_options : PlanOptions, optional
        How the layer is planned (default ``PlanOptions()``, the engine's).
    progress : callable, optional
        Called with 1 after each row.

    Returns
    -------
    list of dict
        One row per branch count: ``branches``, ``pool``, ``realized_bits_median``,
        ``realized_bits_p01``, ``planned_bits_median``, ``subset_sum_bits_median``,
        ``calibration_floor_bits`` (:func:`_calibration_floor_bits`), ``readout_floor_bits``
        (:func:`_readout_floor_bits`), ``common_mode_ratio`` (the check's median
        ``(G+ + G-) / |G+ - G-|``), ``common_mode_full_scale`` (:func:`_common_mode_full_scale`),
        ``enob``, ``agreement`` (the output's argmax as float64's), ``refine_readings`` (readout
        vectors of the closed-loop refinement), ``switch_writes`` (programming's, refinement included), ``wall_s``.
    """
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._workflow import check_network, program_network
    from crossbar_ctl.optimizer import solve_subset_sum

    if rows < 2 or cols < 2:
        raise EngineError(f"a {rows}x{cols} array is too small for the bench (at least 2 x 2)")
    network, x = uniform_layer(rows - 1, cols // 2, samples=samples, seed=seed)
    results = []
    for n in branches:
        started = time.monotonic()
        config = {"name": f"bench-branches-{profile}-{n}",
                  "sim": {"rows": rows, "cols": cols, "branches": int(n), "profile": profile, "seed": seed}}
        with open_lab(config) as lab:
            record = calibrate(lab)
            plan = program_network(lab, network, record, plan_options=plan_options)
            report = check_network(lab, plan, x, nplc=nplc)
            subset_sum = _subset_sum_bits(truth_of(lab), plan, network, solve_subset_sum)
            readout_floor = _readout_floor_bits(lab, record, plan, network)
        program = plan.header.program
        layer = report.layers[0]
        results.append({
            "branches": int(n), "pool": 2 * int(n),
            "realized_bits_median": layer.realized_bits.median, "realized_bits_p01": layer.realized_bits.p01,
            "planned_bits_median": layer.planned_bits.median, "subset_sum_bits_median": subset_sum,
            "calibration_floor_bits": _calibration_floor_bits(record, plan, network),
            "readout_floor_bits": readout_floor, "common_mode_ratio": layer.common_mode_ratio,
            "common_mode_full_scale": _common_mode_full_scale(plan, network),
            "enob": layer.enob, "agreement": report.agreement, "refine_readings": program.refine_readings,
            "switch_writes": program.cost.switch_writes if program.cost else None,
            "wall_s": time.monotonic() - started,
        })
        if progress:
            progress(1)
    return results


def plot_branches(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> list[Path]:
    """Bits against branches per cell beside the one-bit-per-resistor line, as a PNG.

    The line starts at the subset-sum median of the smallest pool and rises one bit per value of
    the pair's pool (two per branch of each cell).
    """
    plt = pyplot(EngineError, "plots need")
    n = np.array([row["branches"] for row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label, style in (
        ("subset_sum_bits_median", "subset sum, true values (median)", "o-"),
        ("planned_bits_median", "planned (median)", "s-"),
        ("realized_bits_median", "realized, true circuit (median)", "^-"),
        ("realized_bits_p01", "realized (1st percentile)", "v--"),
        ("enob", "ENOB of the layer's outputs", "d:"),
    ):
        ax.plot(n, [row[key] for row in rows], style, label=label)
    ax.plot(n, rows[0]["subset_sum_bits_median"] + 2.0 * (n - n[0]), "k-", linewidth=0.7,
            label="one bit per resistor")
    ax.set(xlabel="branches per cell", ylabel="bits against max|w|", xticks=n, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return [path]
