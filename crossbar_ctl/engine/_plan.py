"""Switch plans, the last stage: solved tiles become a record of masks, predictions and error figures.

A weight flows forward: :func:`crossbar_ctl.engine._mapping.map_network` scales, signs and tiles
every layer into target pair conductances on the measured pools;
:func:`crossbar_ctl.engine._solve.solve_tile` solves each tile (the optimizer per pair, then
pre-distortion against the twin); :func:`make_plan` records the masks, the predicted
conductances and transfers, and the error figures of each layer in a :class:`SwitchPlan`.

A :class:`SwitchPlan` saves as a checksummed ``.npz`` record (``crossbar_ctl.core.files``) holding the
network too, so ``crossbar check`` needs only the plan and the data.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from calibration import TwinParameters
from crossbar_ctl import __version__
from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.files import load_record, save_record
from crossbar_ctl.engine._affine import AffineRecord
from crossbar_ctl.engine._mapping import (  # ArrayModel ... pair_transfer: re-exported for callers
    ArrayModel,
    CalibrationRef,
    LayerMapping,
    Tile,
    inference_vectors,
    map_network,
    network_tiles,
    pair_transfer,
    weight_magnitude,
)
from crossbar_ctl.engine._cost import ScheduleCost
from crossbar_ctl.engine._network import Layer, Network, build_network
from crossbar_ctl.engine._schedule import step_masks
from crossbar_ctl.engine._distributed import TileMap, solve_tiles
from crossbar_ctl.engine._solve import Solver, TileSolution, default_solver
from crossbar_ctl.engine._twin import is_ideal

__all__ = [
    "COMMON_MODE_WEIGHT",
    "ArrayModel",
    "BoardRef",
    "CalibrationRef",
    "LayerPlan",
    "PlanHeader",
    "PlanOptions",
    "ProgramRecord",
    "SwitchPlan",
    "TileRecord",
    "expected_subset_sum_error_s",
    "inference_vectors",
    "make_plan",
    "network_tiles",
    "pair_transfer",
    "weight_magnitude",
]

RESIDUAL_PREFIX = "residual."
PLAN_SCHEMA_VERSION = 2  # 2: post (digital steps between layers); version 1 plans load with none


COMMON_MODE_WEIGHT = 3e-5
"""Default joint-cost weight: the readout's error per siemens of a pair's common mode on ``pcb``
(the two columns' calibrated gains differ by about 2-3e-5), so a subset gives up no more error
than the readout would add on the common mode it saves. It keeps a pair's ``G+ + G-`` from growing
with the branches (bench branches pcb: 4.3 / 2.7 / 2.8 times the full scale at 8 / 12 / 16, 5.1 /
6.0 / 7.8 without) and its readout error with it (enob at 12 / 16 branches 9.9 / 9.8 against 8.9 /
8.4). On the demo (8 branches, where the common mode grows least) it is about neutral: enob 9.70 /
10.68 against 9.86 / 10.72, realized median 12.72 / 12.41 against 12.84 / 12.43, 1st percentile
10.10 / 10.24 against 10.15 / 9.71, 9 % fewer switch writes, and the drift guard passes its fresh
plan (README, "Realized weight precision on the pcb board"). A 2 x 16 pool's solve costs about
2.7x the least error's."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
    max_tiles: int | None = Field(None, ge=1)
    """Refuse a layer that needs more tiles than this (``None``: no limit; time on the array grows
    with the tiles, see ``crossbar program``'s cost)."""
    pack: bool = True
    """Pack several small tiles into one program step where they fit (``_schedule``)."""
    max_closed: int | None = Field(None, ge=1)
    """Close at most this many branches per differential pair (limits common-mode current)."""
    common_mode_weight: float = Field(COMMON_MODE_WEIGHT, ge=0, lt=1)
    """Common-mode-aware joint cost: each pair's subset minimises ``|error| + common_mode_weight *
    (G+ + G-)`` (then the fewest closed), siemens of error charged per siemens of common mode:
    dimensionless, so the choice is the same at any conductance scale and geometry (0: the least
    error alone). See :data:`COMMON_MODE_WEIGHT`."""

    @model_validator(mode="before")
    @classmethod
    def _drop_common_mode_sigmas(cls, data: Any) -> Any:
        """Plans written before the joint cost replaced the window ``common_mode_sigmas`` load: the
        key is dropped (their masks stand as solved; re-solves take ``common_mode_weight``)."""
        if isinstance(data, dict) and "common_mode_sigmas" in data:
            data = {key: value for key, value in data.items() if key != "common_mode_sigmas"}
        return data


class TileRecord(StrictModel):
    """One tile of one layer."""

    layer: int
    input_start: int
    input_stop: int
    output_start: int
    output_stop: int
    board: int = 0
    step: int = 0
    row_offset: int = 0
    col_offset: int = 0
    """Placement (:class:`crossbar_ctl.engine._mapping.Tile`); plans before placement: 0."""

    @classmethod
    def of(cls, tile: Tile) -> "TileRecord":
        """The record of a :class:`crossbar_ctl.engine._mapping.Tile` (the same fields, validated)."""
        return cls(**dataclasses.asdict(tile))

    @property
    def tile(self) -> Tile:
        return Tile(**self.model_dump())


class BoardRef(StrictModel):
    """A further board of a plan on several (board 0 is the header's ``calibration`` and ``twin``)."""

    calibration: CalibrationRef
    twin: TwinParameters | None


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
    refine_rounds: tuple[int, ...] = ()
    """Per tile: measured re-solve rounds of the closed-loop refinement (:mod:`crossbar_ctl.engine._refine`)."""
    refine_readings: int = 0
    """Readout vectors the refinement read (its switch writes are in ``cost``)."""
    cost: ScheduleCost | None = None
    """Switch writes and settling of programming (:mod:`crossbar_ctl.engine._cost`); the prediction
    is one pass without corrections, so the closed loop's re-loads come on top of it."""


class PlanHeader(StrictModel):
    """Header of a switch plan record."""

    schema_version: int = PLAN_SCHEMA_VERSION
    kind: Literal["switch_plan"] = "switch_plan"
    network_name: str
    activations: tuple[str, ...]
    post: tuple[tuple[str, ...], ...] = ()
    """Per layer: its digital steps after the activation (``str`` of ``Op``); empty: none."""
    strides: tuple[int, ...]
    paddings: tuple[int, ...]
    input_shape: tuple[int, ...]
    calibration: CalibrationRef
    twin: TwinParameters | None
    """The twin the plan was pre-distorted with (``None``: solved for the bare cells)."""
    boards: tuple[BoardRef, ...] = ()
    """Boards 1, 2, ... of a plan on several boards (tiles name theirs)."""
    options: PlanOptions
    layers: tuple[LayerPlan, ...]
    tiles: tuple[TileRecord, ...]
    created_utc: str
    software: str = f"crossbar-ctl {__version__}"
    program: ProgramRecord | None = None
    affine: AffineRecord | None = None
    """The affine correction measured after programming (:mod:`crossbar_ctl.engine._affine`; its
    arrays ``tile{t}.affine_gain`` and ``tile{t}.affine_offset_a``); None: none (older plans)."""
    residual: PlanHeader | None = None
    """The residual plan (:mod:`crossbar_ctl.engine._residual`): the programmed weights' measured
    residual, on the same tiles at its own scale, which ``check`` adds; its arrays carry the prefix
    ``residual.``. None: none."""


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

    def network(self, weights: Sequence[np.ndarray] | None = None, biases: Sequence[np.ndarray] | None = None,
                name: str | None = None) -> Network:
        """The plan's network, or its layers with other ``weights`` and ``biases`` of the same shapes."""
        h = self.header
        count = len(h.layers)
        shape = h.input_shape if len(h.input_shape) == 3 else None
        return build_network(
            list(weights) if weights is not None else [self.arrays[f"net.layer{k}.weight"] for k in range(count)],
            list(biases) if biases is not None else [self.arrays[f"net.layer{k}.bias"] for k in range(count)],
            list(h.activations), input_shape=shape, strides=list(h.strides),
            paddings=list(h.paddings), name=name or h.network_name, posts=list(h.post) or None,
        )

    @property
    def residual(self) -> "SwitchPlan | None":
        """The residual plan (header ``residual``, arrays ``residual.*``), or None."""
        if self.header.residual is None:
            return None
        return SwitchPlan(self.header.residual, {name.removeprefix(RESIDUAL_PREFIX): value
                                                 for name, value in self.arrays.items()
                                                 if name.startswith(RESIDUAL_PREFIX)})

    def with_residual(self, residual: "SwitchPlan | None") -> "SwitchPlan":
        """This plan carrying ``residual`` (None: none) in place of any it had."""
        arrays = {name: value for name, value in self.arrays.items() if not name.startswith(RESIDUAL_PREFIX)}
        if residual is not None:
            arrays.update({RESIDUAL_PREFIX + name: value for name, value in residual.arrays.items()})
        header = self.header.model_copy(update={"residual": None if residual is None else residual.header})
        return SwitchPlan(header, arrays)

    def tile(self, index: int, name: str) -> np.ndarray:
        return self.arrays[f"tile{index}.{name}"]

    @property
    def board_count(self) -> int:
        return 1 + len(self.header.boards)

    def board_calibration(self, board: int) -> CalibrationRef:
        return self.header.boards[board - 1].calibration if board else self.header.calibration

    def board_twin(self, board: int) -> TwinParameters | None:
        return self.header.boards[board - 1].twin if board else self.header.twin

    def tiles(self) -> list[Tile]:
        """Every tile with its placement."""
        return [record.tile for record in self.header.tiles]

    def step_masks(self, step: int) -> np.ndarray:
        """The configuration of a program step: its tiles' masks together, ``uint64 (rows, cols)``."""
        ref = self.header.calibration
        return step_masks((self.tile(t, "masks") for t, tile in enumerate(self.tiles()) if tile.step == step),
                          (ref.rows, ref.cols))


def expected_subset_sum_error_s(values_s: np.ndarray, usable: np.ndarray, target_s: np.ndarray) -> np.ndarray:
    """Per pool: the rms distance from ``target_s`` to the nearest of its random subset sums."""
    v = np.where(usable, values_s, 0.0)
    centre = 0.5 * v.sum(axis=1)
    spread = 0.5 * np.sqrt(np.sum(v**2, axis=1))
    density = 2.0 ** usable.sum(axis=1) * np.exp(-0.5 * ((target_s - centre) / spread) ** 2) / (
        np.sqrt(2 * np.pi) * spread)
    return 1.0 / (np.sqrt(2.0) * density)


def _rms(parts: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([np.ravel(p) for p in parts]) ** 2)))


def _layer_plan(layer: Layer, mapped: LayerMapping, models: Sequence[ArrayModel], tiles: Sequence[Tile],
                targets_s: Sequence[np.ndarray], solutions: Sequence[TileSolution]) -> LayerPlan:
    """A layer's error figures from its solved tiles (``tiles``, ``targets_s``, ``solutions`` alike)."""
    pools = [models[tile.board].pool(tile) for tile in tiles]
    scale = mapped.conductance_per_weight_s
    err_w = _rms([pair_transfer(s.predicted_s) - t for s, t in zip(solutions, targets_s)]) / scale
    err_w = max(err_w, mapped.magnitude * 2.0**-52)  # realised exactly (all zero): float64 resolution
    return LayerPlan(
        index=mapped.index, kind="conv" if layer.is_conv else "dense", conductance_per_weight_s=scale,
        bias_input=mapped.bias_input, tiles=mapped.tiles,
        branches_per_weight=float(np.mean(np.concatenate([usable.sum(axis=1) for _, _, usable in pools]))),
        weight_error_rms=err_w,
        weight_error_bits=float(np.log2(mapped.magnitude / err_w)),
        subset_sum_error_s=_rms([s.quantization_s for s in solutions]),
        expected_subset_sum_error_s=_rms([expected_subset_sum_error_s(values, usable, t.ravel())
                                          for (values, _, usable), t in zip(pools, targets_s)]),
    )


def make_plan(network: Network, model: ArrayModel | Sequence[ArrayModel], *, options: PlanOptions | None = None,
              solver: Solver | None = None, progress: Callable[[int], None] | None = None,
              tile_map: TileMap | None = None) -> SwitchPlan:
    """Map a network onto measured pools, solve every tile and record the plan.

    Parameters
    ----------
    network : Network
    model : ArrayModel or sequence of ArrayModel
        The calibration's branch conductances, uncertainties, faults and twin; one per board for
        several boards (the tiles are split among them, each solved on its own board's model).
    options : PlanOptions, optional
    solver : callable, optional
        ``solve_subset_sum`` (default) or a compatible function.
    progress : callable, optional
        Called with 1 after each tile.
    tile_map : callable, optional
        How the tiles are solved: in this process (default,
        :func:`crossbar_ctl.engine._distributed.solve_tiles`) or on a Dask cluster
        (:func:`crossbar_ctl.engine._distributed.tile_map`); the masks are the same.

    Raises
    ------
    EngineError
        Too many tiles, or weights beyond what the pools can reach. Nothing is programmed.
    """
    options = options or PlanOptions()
    solver = solver or default_solver(options.common_mode_weight)
    models = [model] if isinstance(model, ArrayModel) else list(model)
    rows, cols, branches = models[0].geometry
    twins = [m.twin if options.predistort and not is_ideal(m.twin) else None for m in models]
    mapping = map_network(network, models, density_std=options.density_std,  # refused before solving
                          conductance_per_weight_s=options.conductance_per_weight_s,
                          max_tiles=options.max_tiles, pack=options.pack)
    solved_tiles: list[TileSolution] = [None] * len(mapping.tiles)  # type: ignore[list-item]
    for board, board_model in enumerate(models):
        mine = [t for t, tile in enumerate(mapping.tiles) if tile.board == board]
        solve = {"twin": twins[board], "solver": solver, "max_closed": options.max_closed,
                 "iterations": options.predistort_iterations, "locality": options.locality}
        solved = (tile_map or solve_tiles)(board_model, [(mapping.tiles[t], mapping.targets_s[t]) for t in mine],
                                           solve, progress=progress)
        for t, solution in zip(mine, solved):
            solved_tiles[t] = solution
    arrays: dict[str, np.ndarray] = {}
    layer_plans = []
    for layer, mapped in zip(network.layers, mapping.layers):
        arrays[f"net.layer{mapped.index}.weight"] = layer.weight
        arrays[f"net.layer{mapped.index}.bias"] = layer.bias
        solutions = []
        for t in mapped.tiles:
            tile, target, solved = mapping.tiles[t], mapping.targets_s[t], solved_tiles[t]
            full_masks = np.zeros((rows, cols), dtype=np.uint64)
            full_masks[tile.block] = solved.masks
            arrays.update({f"tile{t}.masks": full_masks, f"tile{t}.target_s": target,
                           f"tile{t}.cell_s": solved.cell_s, f"tile{t}.predicted_s": solved.predicted_s})
            solutions.append(solved)
        layer_plans.append(_layer_plan(layer, mapped, models, [mapping.tiles[t] for t in mapped.tiles],
                                       [mapping.targets_s[t] for t in mapped.tiles], solutions))
    header = plan_header(network, models, twins, options, layer_plans, mapping.tiles)
    return SwitchPlan(header, arrays)


def plan_header(network: Network, models: Sequence[ArrayModel], twins: Sequence[TwinParameters | None],
                options: PlanOptions, layers: Sequence[LayerPlan], tiles: Sequence[Tile]) -> PlanHeader:
    """A plan's header: the network's shape, each board's calibration and twin, layers and tiles."""
    rows, cols, branches = models[0].geometry

    def reference(model: ArrayModel) -> CalibrationRef:
        return model.reference or CalibrationRef(rows=rows, cols=cols, branches=branches)

    return PlanHeader(
        network_name=network.name,
        activations=tuple(layer.activation for layer in network.layers),
        post=(tuple(tuple(str(op) for op in layer.post) for layer in network.layers)
              if any(layer.post for layer in network.layers) else ()),
        strides=tuple(layer.stride for layer in network.layers),
        paddings=tuple(layer.padding for layer in network.layers),
        input_shape=network.layers[0].input_shape,
        calibration=reference(models[0]), twin=twins[0],
        boards=tuple(BoardRef(calibration=reference(m), twin=twin) for m, twin in zip(models[1:], twins[1:])),
        options=options, layers=tuple(layers), tiles=tuple(TileRecord.of(t) for t in tiles),
        created_utc=utc_now(),
    )
