"""Switch plans: a network mapped onto measured pools, one set of branch masks per tile.

:func:`make_plan` scales each layer (:mod:`crossbar_ctl.engine._mapping`), tiles it, and solves one
signed subset-sum per differential pair over the calibration's measured branch conductances
(faulty branches excluded). With wire resistance in the fitted twin it pre-distorts, so that the
twin's outputs, not just the cells, match the targets: a solve with every cell's pool weighted by
the share of its conductance that reaches its column (``T / G``), then rounds of local pair
refinement on the twin's linearised response (:mod:`crossbar_ctl.engine._predistort`).

A :class:`SwitchPlan` saves as a checksummed ``.npz`` record (``crossbar_ctl.core.files``) holding the
network too, so ``crossbar check`` needs only the plan and the data.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from calibration import TwinParameters
from crossbar_ctl import __version__
from crossbar_ctl.engine._mapping import (
    Tile,
    augmented_matrix,
    check_reach,
    choose_scale,
    masks_from_selection,
    pair_pool,
    plan_tiles,
    selection_from_masks,
)
from crossbar_ctl.engine._network import Network, build_network
from crossbar_ctl.engine._predistort import MAX_SIDE_BRANCHES, refine_pairs, subset_sums, twin_response
from crossbar_ctl.engine._twin import is_ideal, twin_transfer
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.files import load_record, save_record

__all__ = [
    "ArrayModel",
    "CalibrationRef",
    "LayerPlan",
    "PlanHeader",
    "PlanOptions",
    "ProgramRecord",
    "SwitchPlan",
    "TileRecord",
    "inference_vectors",
    "make_plan",
    "network_tiles",
]

PLAN_SCHEMA_VERSION = 1
Solver = Callable[..., object]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class CalibrationRef(StrictModel):
    """The calibration a plan was solved from, to refuse it on another array."""

    checksum: str = ""
    """Identity of the calibration record (its content checksum)."""
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    branches: int = Field(ge=1)
    board_idn: str = ""
    """The switch board's ``*IDN?`` when calibrated."""
    created_utc: str = ""


@dataclass(frozen=True)
class ArrayModel:
    """What the engine needs from a calibration record.

    Attributes
    ----------
    conductance_s, sigma_s : ndarray (rows, cols, branches)
        Measured branch conductances through their switches, and their standard uncertainties.
    usable : ndarray (rows, cols, branches) of bool
        Branches the plan may close (no fault flag).
    twin : TwinParameters or None
        Fitted wire parameters (``None``: no twin).
    reference : CalibrationRef
    forced : ndarray (rows, cols, branches) of bool, optional
        Branches that conduct whatever the mask says (switches stuck closed): never chosen, but
        always part of their cell.
    """

    conductance_s: np.ndarray
    sigma_s: np.ndarray
    usable: np.ndarray
    twin: TwinParameters | None = None
    reference: CalibrationRef | None = None
    forced: np.ndarray | None = None

    def forced_pair_s(self, tile: Tile, gain: np.ndarray | None = None) -> np.ndarray:
        """Signed conductance the forced branches add to each pair of a tile, ``(rows * pairs,)``.

        With ``gain`` ``(tile.rows, 2 * tile.pairs)`` each cell's forced conductance is weighted by
        its own gain (the plus and the minus cell of a pair differ under IR drop).
        """
        if self.forced is None:
            return np.zeros(tile.rows * tile.pairs)
        cell = np.sum(np.where(self.forced, np.nan_to_num(self.conductance_s), 0.0), axis=-1)
        block = cell[: tile.rows, : 2 * tile.pairs]
        if gain is not None:
            block = block * gain
        return (block[:, 0::2] - block[:, 1::2]).ravel()

    @property
    def geometry(self) -> tuple[int, int, int]:
        return tuple(self.conductance_s.shape)  # type: ignore[return-value]

    def cell_conductance_s(self, masks: np.ndarray) -> np.ndarray:
        """Predicted conductance of cells ``(r, c)`` with masks ``uint64 (r, c)`` at the top-left."""
        r, c = masks.shape
        closed = selection_from_masks(masks, self.geometry[2])
        if self.forced is not None:
            closed = closed | self.forced[:r, :c]
        return np.sum(closed * self.conductance_s[:r, :c], axis=-1)


class PlanOptions(StrictModel):
    """How a network is mapped and solved."""

    density_std: float = Field(1.25, gt=0, le=4)
    """The largest |w| of a layer lands this many pool standard deviations from the centre."""
    conductance_per_weight_s: float | None = Field(None, gt=0)
    """Force one scale for every layer instead of choosing it from the pools."""
    predistort: bool = True
    """Solve against the twin's outputs (wire resistance) instead of the bare cells."""
    predistort_iterations: int = Field(12, ge=0, le=50)
    """Rounds of pair refinement on the twin's linearised response."""
    locality: float = Field(0.001, ge=0)
    """Refinement penalty: siemens of output error charged per siemens of conductance moved."""
    max_tiles: int = Field(64, ge=1)
    """Refuse a layer that needs more tiles than this."""
    max_closed: int | None = Field(None, ge=1)
    """Close at most this many branches per differential pair (limits common-mode current)."""


class TileRecord(StrictModel):
    """One tile of one layer."""

    layer: int
    input_start: int
    input_stop: int
    output_start: int
    output_stop: int

    @classmethod
    def of(cls, tile: Tile) -> "TileRecord":
        """The record of a :class:`crossbar_ctl.engine._mapping.Tile` (the same fields, validated)."""
        return cls(**dataclasses.asdict(tile))

    @property
    def tile(self) -> Tile:
        return Tile(self.layer, self.input_start, self.input_stop, self.output_start, self.output_stop)


class LayerPlan(StrictModel):
    """How one layer is mapped, and the predicted precision of its weights."""

    index: int
    kind: Literal["dense", "conv"]
    conductance_per_weight_s: float
    """G = w * this, siemens per weight unit."""
    bias_input: float
    """The bias row carries b / bias_input and is driven as the input value bias_input."""
    tiles: tuple[int, ...]
    """Indices into the plan's tiles."""
    branches_per_weight: float
    """Mean usable branches per differential pair (both sides)."""
    weight_error_rms: float
    """Predicted rms error of the realised weights (twin outputs vs targets), weight units."""
    weight_error_bits: float
    """log2(max|w| / weight_error_rms), at most 52 (see :func:`weight_magnitude`)."""
    subset_sum_error_s: float
    """rms error of the subset sums themselves (what the optimizer achieved), siemens."""
    expected_subset_sum_error_s: float
    """Random-subset-sum expectation for these pools and targets, siemens: the ``2**m`` subset
    sums of a pool fall about normally (centre ``sum(v) / 2``, deviation ``sqrt(sum(v**2)) / 2``),
    so near a target ``t`` they are ``2**m * pdf(t)`` per siemens apart and the nearest lies
    ``1 / (sqrt(2) * 2**m * pdf(t))`` away, rms: one bit per resistor."""


class ProgramRecord(StrictModel):
    """What programming with the hardware in the loop did."""

    programmed_utc: str
    lab_idn: dict[str, str] = {}
    iterations: tuple[int, ...]
    """Per tile: measure / re-solve rounds used."""
    cells_resolved: tuple[int, ...]
    """Per tile: cells re-solved because they were off by more than their uncertainty."""
    residual_rms_before_s: tuple[float, ...]
    """Per tile: rms of measured minus target (pair transfer), before the closed loop."""
    residual_rms_after_s: tuple[float, ...]
    max_residual_sigma_after: tuple[float, ...]
    """Per tile: largest |measured - predicted| of a pair in its predicted standard deviations,
    in the configuration kept."""
    cells_remeasured: int = 0
    """Pairs whose branches were measured again (a model error no gain explains)."""
    branches_found_open: int = 0
    """Branches found open (or shorted) that the calibration had as usable: faults found late."""


class PlanHeader(StrictModel):
    """Header of a switch plan record."""

    schema_version: int = PLAN_SCHEMA_VERSION
    kind: Literal["switch_plan"] = "switch_plan"
    network_name: str
    activations: tuple[str, ...]
    strides: tuple[int, ...]
    paddings: tuple[int, ...]
    input_shape: tuple[int, ...]
    calibration: CalibrationRef
    twin: TwinParameters | None
    """The twin the plan was pre-distorted with (``None``: solved for the bare cells)."""
    options: PlanOptions
    layers: tuple[LayerPlan, ...]
    tiles: tuple[TileRecord, ...]
    created_utc: str
    software: str = f"crossbar-ctl {__version__}"
    program: ProgramRecord | None = None


@dataclass(frozen=True)
class SwitchPlan:
    """A header and its arrays.

    Arrays per tile ``t`` (``rows x pairs`` the tile's size; ``R x C`` the array's):
    ``tile{t}.masks`` uint64 (R, C) branch masks (zero outside the tile);
    ``tile{t}.target_s`` (rows, pairs) target pair transfer, siemens;
    ``tile{t}.cell_s`` (rows, 2 pairs) predicted cell conductances;
    ``tile{t}.predicted_s`` (rows, 2 pairs) the twin's transfer matrix for these masks;
    after programming also ``tile{t}.measured_s`` (rows, 2 pairs) and
    ``tile{t}.residual_before_s`` / ``tile{t}.residual_after_s`` (rows, pairs).
    The network travels as ``net.layer{k}.weight`` and ``net.layer{k}.bias``.
    """

    header: PlanHeader
    arrays: dict[str, np.ndarray]

    def save(self, path: str | Path) -> None:
        save_record(path, self.header, self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> "SwitchPlan":
        header, arrays = load_record(path, PlanHeader, kind="switch_plan")
        return cls(header, arrays)

    def network(self) -> Network:
        h = self.header
        count = len(h.layers)
        shape = h.input_shape if len(h.input_shape) == 3 else None
        return build_network(
            [self.arrays[f"net.layer{k}.weight"] for k in range(count)],
            [self.arrays[f"net.layer{k}.bias"] for k in range(count)],
            list(h.activations), input_shape=shape, strides=list(h.strides),
            paddings=list(h.paddings), name=h.network_name,
        )

    def tile(self, index: int, name: str) -> np.ndarray:
        return self.arrays[f"tile{index}.{name}"]


def default_solver() -> Solver:
    from crossbar_ctl.optimizer._solver import solve_subset_sum

    return solve_subset_sum


def solve_tile(model: ArrayModel, tile: Tile, target_s: np.ndarray, *, gain: np.ndarray | None,
               solver: Solver, max_closed: int | None,
               cells: np.ndarray | None = None, previous: np.ndarray | None = None) -> np.ndarray:
    """Solve the tile's pairs; returns the selection ``bool (cells, 2 n)``.

    With ``cells`` (bool per cell) only those are re-solved; the rest keep ``previous``.
    """
    values, sigma, usable = pair_pool(model.conductance_s, model.sigma_s, model.usable, tile, gain=gain)
    target = target_s.ravel() - model.forced_pair_s(tile, gain)
    if cells is None:
        return np.asarray(solver(values, target, sigma_s=sigma, usable=usable, max_closed=max_closed).mask)
    selection = previous.copy()
    if np.any(cells):
        result = solver(values[cells], target[cells], sigma_s=sigma[cells], usable=usable[cells],
                        max_closed=max_closed)
        selection[cells] = np.asarray(result.mask)
    return selection


def gains(transfer_s: np.ndarray, cell_s: np.ndarray) -> np.ndarray:
    """Share of each cell's conductance that reaches its column, ``T / G`` (column median where G = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cell_s > 0, transfer_s / cell_s, np.nan)
    fill = np.nanmedian(np.where(np.isnan(ratio).all(axis=0), 1.0, ratio), axis=0)
    return np.where(np.isnan(ratio), fill, ratio)


def pair_transfer(t: np.ndarray) -> np.ndarray:
    """Differential transfer ``T[:, 2o] - T[:, 2o + 1]``."""
    return t[:, 0::2] - t[:, 1::2]


def array_conductance_s(model: ArrayModel, cell_s: np.ndarray) -> np.ndarray:
    """The whole array's cells, ``(rows, cols)``: a tile's cells at the top-left, elsewhere only
    the branches that conduct whatever the masks say (stuck closed)."""
    full = model.cell_conductance_s(np.zeros(model.geometry[:2], dtype=np.uint64))
    full[: cell_s.shape[0], : cell_s.shape[1]] = cell_s
    return full


def array_transfer(model: ArrayModel, twin: TwinParameters | None, cell_s: np.ndarray) -> np.ndarray:
    """The twin's transfer of a tile's cells placed at the array's top-left, ``(rows, 2 pairs)``."""
    full = twin_transfer(twin, array_conductance_s(model, cell_s))
    return full[: cell_s.shape[0], : cell_s.shape[1]]


def side_tables(model: ArrayModel, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """Subset conductances of every plus and minus cell of a tile, ``(cells, 2**n)`` each."""
    block = (slice(0, tile.rows), slice(0, 2 * tile.pairs))
    g, usable = model.conductance_s[block], model.usable[block]
    forced = np.zeros(g.shape[:2]) if model.forced is None else np.sum(
        np.where(model.forced[block], np.nan_to_num(g), 0.0), axis=-1)
    n = g.shape[-1]
    tables = []
    for side in (0, 1):
        sums = subset_sums(g[:, side::2].reshape(-1, n), usable[:, side::2].reshape(-1, n))
        tables.append(sums + forced[:, side::2].reshape(-1, 1))
    return tables[0], tables[1]


def refine_tile(tables: tuple[np.ndarray, np.ndarray], target_s: np.ndarray, cell_s: np.ndarray,
                transfer_s: np.ndarray, slope: np.ndarray, *, branches: int,
                locality: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's best selection under the response linearised at ``(cell_s, transfer_s, slope)``.

    Returns
    -------
    selection : ndarray (cells, 2 n) of bool
    predicted_s : ndarray (cells,)
        The linearised pair outputs of that selection.
    """
    sides = [{"sums": sums, "g0": cell_s[:, k::2].ravel(), "t0": transfer_s[:, k::2].ravel(),
              "slope": slope[:, k::2].ravel()} for k, sums in enumerate(tables)]
    plus, minus, predicted = refine_pairs(target_s, sides[0], sides[1], locality=locality)
    bits = np.arange(branches)
    selection = np.concatenate([(plus[:, None] >> bits) & 1, (minus[:, None] >> bits) & 1], axis=1)
    return selection.astype(bool), predicted


def _solve_layer_tile(model: ArrayModel, tile: Tile, target_s: np.ndarray, twin: TwinParameters | None,
                      options: PlanOptions, solver: Solver) -> dict[str, np.ndarray]:
    """Solve a tile; with a non-ideal twin, pre-distort against the twin's outputs.

    The optimizer solves the bare pools, then once more with each cell's pool weighted by its
    gain ``T / G`` in that configuration; :func:`crossbar_ctl.engine._predistort.refine_pairs` then
    refines every pair on the twin's linearised response, round by round.
    """
    values, _, _ = pair_pool(model.conductance_s, model.sigma_s, model.usable, tile)
    selection = solve_tile(model, tile, target_s, gain=None, solver=solver, max_closed=options.max_closed)
    quantization = (np.sum(np.where(selection, values, 0.0), axis=1) + model.forced_pair_s(tile)
                    - target_s.ravel())
    masks = masks_from_selection(selection, tile.rows, tile.pairs)
    cell_s = model.cell_conductance_s(masks)
    predicted_s = array_transfer(model, twin, cell_s)
    branches = model.geometry[2]
    if not is_ideal(twin):
        selection = solve_tile(model, tile, target_s, gain=gains(predicted_s, cell_s), solver=solver,
                               max_closed=options.max_closed)
        refine = branches <= MAX_SIDE_BRANCHES and options.max_closed is None
        tables = side_tables(model, tile) if refine else None
        target = target_s.ravel()
        best = None
        for round_ in range(options.predistort_iterations + 1):
            masks = masks_from_selection(selection, tile.rows, tile.pairs)
            cell_s = model.cell_conductance_s(masks)
            transfer, slope = array_response(model, twin, cell_s)
            residual = pair_transfer(transfer).ravel() - target
            rms = float(np.sqrt(np.mean(residual**2)))
            if best is None or rms < best[0]:
                best = (rms, selection, masks, cell_s, transfer)
            if not refine or round_ == options.predistort_iterations:
                break
            chosen, predicted = refine_tile(tables, target, cell_s, transfer, slope, branches=branches,
                                            locality=options.locality)
            move = np.abs(predicted - target) < np.abs(residual)
            selection = np.where(move[:, None], chosen, selection)
        _, selection, masks, cell_s, predicted_s = best
    return {"masks": masks, "cell_s": cell_s, "predicted_s": predicted_s, "selection": selection,
            "quantization_s": quantization}


def array_response(model: ArrayModel, twin: TwinParameters, cell_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The twin's transfer and its slope ``dT/dG`` for a tile's cells, ``(rows, 2 pairs)`` each."""
    transfer, slope = twin_response(twin, array_conductance_s(model, cell_s))
    block = (slice(0, cell_s.shape[0]), slice(0, cell_s.shape[1]))
    return transfer[block], slope[block]


def expected_subset_sum_error_s(values_s: np.ndarray, usable: np.ndarray, target_s: np.ndarray) -> np.ndarray:
    """Per pool: the rms distance from ``target_s`` to the nearest of its random subset sums."""
    v = np.where(usable, values_s, 0.0)
    centre = 0.5 * v.sum(axis=1)
    spread = 0.5 * np.sqrt(np.sum(v**2, axis=1))
    density = 2.0 ** usable.sum(axis=1) * np.exp(-0.5 * ((target_s - centre) / spread) ** 2) / (
        np.sqrt(2 * np.pi) * spread)
    return 1.0 / (np.sqrt(2.0) * density)


def network_tiles(network: Network, rows: int, cols: int, *, max_tiles: int = 64) -> list[Tile]:
    """Every tile of every layer on a ``rows x cols`` array, in programming order."""
    return [tile for k, layer in enumerate(network.layers)
            for tile in plan_tiles(layer.matrix.shape[1] + 1, layer.matrix.shape[0], rows=rows, cols=cols,
                                   layer=k, max_tiles=max_tiles)]


def inference_vectors(network: Network, rows: int, cols: int, samples: int) -> int:
    """Readout vectors an analog run of ``samples`` inputs takes (im2col patches times tiles)."""
    count = 0
    for k, layer in enumerate(network.layers):
        patches = layer.out_size // layer.matrix.shape[0]
        tiles = plan_tiles(layer.matrix.shape[1] + 1, layer.matrix.shape[0], rows=rows, cols=cols, layer=k,
                           max_tiles=10**9)
        count += samples * patches * len(tiles)
    return count


def weight_magnitude(weight: np.ndarray, bias: np.ndarray) -> float:
    """The magnitude a layer is scaled and scored by: max|w|, else max|b|, else 1.

    A layer of zeros (or of biases only) has no max|w| to map or to score against; it is mapped
    as if its largest weight were 1 (or its largest bias), which keeps every figure finite.
    """
    for array in (weight, bias):
        magnitude = float(np.max(np.abs(array), initial=0.0))
        if magnitude > 0:
            return magnitude
    return 1.0


def make_plan(network: Network, model: ArrayModel, *, options: PlanOptions | None = None,
              solver: Solver | None = None, progress: Callable[[int], None] | None = None) -> SwitchPlan:
    """Map a network onto measured pools and solve every tile.

    Parameters
    ----------
    network : Network
    model : ArrayModel
        The calibration's branch conductances, uncertainties, faults and twin.
    options : PlanOptions, optional
    solver : callable, optional
        ``solve_subset_sum`` (default) or a compatible function.
    progress : callable, optional
        Called with 1 after each tile.

    Raises
    ------
    EngineError
        Too many tiles, or weights beyond what the pools can reach. Nothing is programmed.
    """
    options = options or PlanOptions()
    solver = solver or default_solver()
    rows, cols, branches = model.geometry
    twin = model.twin if options.predistort and not is_ideal(model.twin) else None
    tiles = network_tiles(network, rows, cols, max_tiles=options.max_tiles)  # refused before solving
    layer_tiles = [[t for t, tile in enumerate(tiles) if tile.layer == k] for k in range(len(network.layers))]
    full = Tile(0, 0, min(rows, max(t.rows for t in tiles)), 0, max(t.pairs for t in tiles))
    values, _, usable = pair_pool(model.conductance_s, model.sigma_s, model.usable, full)
    scales, targets = [], []
    for k, layer in enumerate(network.layers):
        w_max = weight_magnitude(layer.matrix, layer.bias)
        b_max = float(np.max(np.abs(layer.bias)))
        bias_input = b_max / w_max if b_max > 0 else 1.0
        scale = options.conductance_per_weight_s or choose_scale(
            values, usable, w_max, density_std=options.density_std)
        aug = augmented_matrix(layer.matrix, layer.bias, bias_input) * scale
        for t in layer_tiles[k]:
            tile = tiles[t]
            target = aug[tile.inputs, tile.outputs]
            tile_values, _, tile_usable = pair_pool(model.conductance_s, model.sigma_s, model.usable, tile)
            check_reach(tile_values, tile_usable, target.ravel(), layer=k)
            targets.append(target)
        scales.append((scale, bias_input))
    arrays: dict[str, np.ndarray] = {}
    layer_plans = []
    for k, layer in enumerate(network.layers):
        arrays[f"net.layer{k}.weight"] = layer.weight
        arrays[f"net.layer{k}.bias"] = layer.bias
        scale, bias_input = scales[k]
        weight_err, subset_err, expected = [], [], []
        for t in layer_tiles[k]:
            tile = tiles[t]
            solved = _solve_layer_tile(model, tile, targets[t], twin, options, solver)
            full_masks = np.zeros((rows, cols), dtype=np.uint64)
            full_masks[: tile.rows, : 2 * tile.pairs] = solved["masks"]
            arrays[f"tile{t}.masks"] = full_masks
            arrays[f"tile{t}.target_s"] = targets[t]
            arrays[f"tile{t}.cell_s"] = solved["cell_s"]
            arrays[f"tile{t}.predicted_s"] = solved["predicted_s"]
            weight_err.append((pair_transfer(solved["predicted_s"]) - targets[t]).ravel())
            subset_err.append(solved["quantization_s"])
            expected.append(expected_subset_sum_error_s(
                *pair_pool(model.conductance_s, model.sigma_s, model.usable, tile)[::2], targets[t].ravel()))
            if progress:
                progress(1)
        err_w = float(np.sqrt(np.mean(np.concatenate(weight_err) ** 2))) / scale
        w_max = weight_magnitude(layer.matrix, layer.bias)
        err_w = max(err_w, w_max * 2.0**-52)  # realised exactly (all zero): float64 resolution
        tile_usable = [pair_pool(model.conductance_s, model.sigma_s, model.usable, tiles[t])[2]
                       for t in layer_tiles[k]]
        layer_plans.append(LayerPlan(
            index=k, kind="conv" if layer.is_conv else "dense", conductance_per_weight_s=scale,
            bias_input=bias_input, tiles=tuple(layer_tiles[k]),
            branches_per_weight=float(np.mean(np.concatenate([u.sum(axis=1) for u in tile_usable]))),
            weight_error_rms=err_w,
            weight_error_bits=float(np.log2(w_max / err_w)),
            subset_sum_error_s=float(np.sqrt(np.mean(np.concatenate(subset_err) ** 2))),
            expected_subset_sum_error_s=float(np.sqrt(np.mean(np.concatenate(expected) ** 2))),
        ))
    first = network.layers[0]
    header = PlanHeader(
        network_name=network.name,
        activations=tuple(layer.activation for layer in network.layers),
        strides=tuple(layer.stride for layer in network.layers),
        paddings=tuple(layer.padding for layer in network.layers),
        input_shape=first.input_shape,
        calibration=model.reference or CalibrationRef(rows=rows, cols=cols, branches=branches),
        twin=twin, options=options, layers=tuple(layer_plans),
        tiles=tuple(TileRecord.of(t) for t in tiles),
        created_utc=utc_now(),
    )
    return SwitchPlan(header, arrays)
