"""Mapping, the first stage of a plan: a network's weights become target conductances on pools.

A weight flows forward through three stages: **mapping** (here: scale, signs, tiles, target
conductances, the pools that can realise them, row voltages), **solving**
(:mod:`crossbar_ctl.engine._solve`: the optimizer per tile, pre-distortion against the twin) and the
**plan** (:mod:`crossbar_ctl.engine._plan`: the :class:`SwitchPlan` record of masks, predicted
conductances and error figures). :func:`map_network` is this stage's entry point.

Layout of one tile on the array (its placement, :mod:`crossbar_ctl.engine._schedule`, sets the board,
the program step and the array row and column of its first cell, ``row_offset`` and ``col_offset``):

- the layer's *augmented* matrix is ``A = [W.T; b / beta]``, shape ``(in + 1, out)``: the bias is
  one more input row, driven at the constant input value ``beta`` (``bias_input``);
- input ``i`` of the tile drives array row ``row_offset + i``; output ``o`` is the differential pair
  of columns ``col_offset + 2 o`` (plus) and ``col_offset + 2 o + 1`` (minus), its current their
  difference;
- the optimizer sees each pair as one signed pool of ``2 n`` values: ``+g`` of the plus cell's
  branches then ``-g`` of the minus cell's.

Weights become conductances through one scale per layer, ``G = w * conductance_per_weight_s``,
chosen so that the largest ``|w|`` lands about ``density_std`` standard deviations of the pool's
subset sums from the pool's centre, where subset sums are dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._schedule import place_tiles

if TYPE_CHECKING:
    from calibration import TwinParameters
    from crossbar_ctl.engine._network import Network

__all__ = [
    "ArrayModel",
    "CalibrationRef",
    "LayerMapping",
    "NetworkMapping",
    "Tile",
    "augmented_matrix",
    "check_reach",
    "choose_scale",
    "inference_vectors",
    "input_grid",
    "map_network",
    "masks_from_selection",
    "network_tiles",
    "occupied_pools",
    "pair_pool",
    "pair_transfer",
    "plan_tiles",
    "row_voltages",
    "selection_from_masks",
    "weight_magnitude",
]


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
    fingerprint_json: str = ""
    """The calibration's array fingerprint (``calibration.Fingerprint`` as JSON; ``""``: none)."""


@dataclass(frozen=True)
class Tile:
    """A block of a layer's augmented matrix that fits the array at once.

    Attributes
    ----------
    layer : int
    input_start, input_stop : int
        Augmented input rows (the bias row is index ``in``).
    output_start, output_stop : int
        Outputs (differential pairs).
    board : int
        The board (array) it is programmed on, an index into the lab's boards.
    step : int
        The program step: tiles of one step sit on one board at disjoint rows and columns and are
        loaded together (see :mod:`crossbar_ctl.engine._schedule`).
    row_offset, col_offset : int
        Array row and column of the tile's first cell.
    """

    layer: int
    input_start: int
    input_stop: int
    output_start: int
    output_stop: int
    board: int = 0
    step: int = 0
    row_offset: int = 0
    col_offset: int = 0

    @property
    def rows(self) -> int:
        return self.input_stop - self.input_start

    @property
    def pairs(self) -> int:
        return self.output_stop - self.output_start

    @property
    def inputs(self) -> slice:
        return slice(self.input_start, self.input_stop)

    @property
    def outputs(self) -> slice:
        return slice(self.output_start, self.output_stop)

    @property
    def block(self) -> tuple[slice, slice]:
        """The tile's cells on the array: ``(rows, 2 * pairs)`` from its offsets."""
        return (slice(self.row_offset, self.row_offset + self.rows),
                slice(self.col_offset, self.col_offset + 2 * self.pairs))


@dataclass(frozen=True)
class ArrayModel:
    """What the engine needs from a calibration record: the input of every stage.

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

    @property
    def geometry(self) -> tuple[int, int, int]:
        return tuple(self.conductance_s.shape)  # type: ignore[return-value]

    def pool(self, tile: Tile, gain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The signed pools of a tile's pairs (:func:`pair_pool` of this model)."""
        return pair_pool(self.conductance_s, self.sigma_s, self.usable, tile, gain=gain)

    def forced_pair_s(self, tile: Tile, gain: np.ndarray | None = None) -> np.ndarray:
        """Signed conductance the forced branches add to each pair of a tile, ``(rows * pairs,)``.

        With ``gain`` ``(tile.rows, 2 * tile.pairs)`` each cell's forced conductance is weighted by
        its own gain (the plus and the minus cell of a pair differ under IR drop).
        """
        if self.forced is None:
            return np.zeros(tile.rows * tile.pairs)
        cell = np.sum(np.where(self.forced, np.nan_to_num(self.conductance_s), 0.0), axis=-1)
        block = cell[tile.block]
        if gain is not None:
            block = block * gain
        return pair_transfer(block).ravel()

    def cell_conductance_s(self, masks: np.ndarray, tile: Tile | None = None) -> np.ndarray:
        """Predicted conductance of cells ``(r, c)`` with masks ``uint64 (r, c)``: a tile's cells
        (at its placement), else the array's top-left ``r x c``."""
        block = tile.block if tile is not None else (slice(0, masks.shape[0]), slice(0, masks.shape[1]))
        closed = selection_from_masks(masks, self.geometry[2])
        if self.forced is not None:
            closed = closed | self.forced[block]
        return np.sum(closed * self.conductance_s[block], axis=-1)


def plan_tiles(inputs: int, outputs: int, *, rows: int, cols: int, layer: int = 0,
               max_tiles: int | None = None) -> tuple[Tile, ...]:
    """Split an ``(inputs, outputs)`` augmented matrix into array-sized tiles (not yet placed).

    Parameters
    ----------
    max_tiles : int, optional
        A limit the user sets (time on the array grows with the tiles); ``None``: no limit.

    Raises
    ------
    EngineError
        The array has fewer than two columns (no differential pair), or more than ``max_tiles``
        tiles would be needed.
    """
    pairs = cols // 2
    if pairs < 1 or rows < 1:
        raise EngineError(f"a {rows}x{cols} array holds no differential pair; it needs at least 2 columns")
    row_blocks = -(-inputs // rows)
    col_blocks = -(-outputs // pairs)
    if max_tiles is not None and row_blocks * col_blocks > max_tiles:
        raise EngineError(
            f"layer{layer} ({outputs} outputs x {inputs - 1} inputs + bias) needs "
            f"{row_blocks * col_blocks} tiles of {rows}x{pairs} pairs on this array, more than the "
            f"limit of {max_tiles}; use a smaller layer, a larger array or raise max_tiles "
            "(crossbar program --max-tiles)"
        )
    return tuple(
        Tile(layer, r * rows, min(inputs, (r + 1) * rows), c * pairs, min(outputs, (c + 1) * pairs))
        for c in range(col_blocks)
        for r in range(row_blocks)
    )


def network_tiles(network: Network, rows: int, cols: int, *, max_tiles: int | None = None, boards: int = 1,
                  pack: bool = True) -> list[Tile]:
    """Every tile of every layer on ``boards`` arrays of ``rows x cols``, placed, in programming order
    (:func:`crossbar_ctl.engine._schedule.place_tiles`)."""
    tiles = [tile for k, layer in enumerate(network.layers)
             for tile in plan_tiles(layer.matrix.shape[1] + 1, layer.matrix.shape[0], rows=rows, cols=cols,
                                    layer=k, max_tiles=max_tiles)]
    return place_tiles(tiles, rows, cols, boards=boards, pack=pack)


def inference_vectors(network: Network, rows: int, cols: int, samples: int) -> int:
    """Readout vectors an analog run of ``samples`` inputs takes (im2col patches times tiles)."""
    count = 0
    for k, layer in enumerate(network.layers):
        patches = layer.out_size // layer.matrix.shape[0]
        tiles = plan_tiles(layer.matrix.shape[1] + 1, layer.matrix.shape[0], rows=rows, cols=cols, layer=k)
        count += samples * patches * len(tiles)
    return count


def augmented_matrix(weight: np.ndarray, bias: np.ndarray, bias_input: float) -> np.ndarray:
    """``[W.T; b / beta]``, shape ``(in + 1, out)``, in weight units."""
    return np.vstack([weight.T, bias[None, :] / bias_input])


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


def pair_transfer(t: np.ndarray) -> np.ndarray:
    """Differential transfer of cells ``(rows, 2 pairs)``: ``T[:, 2o] - T[:, 2o + 1]``."""
    return t[:, 0::2] - t[:, 1::2]


def pair_pool(conductance_s: np.ndarray, sigma_s: np.ndarray, usable: np.ndarray, tile: Tile,
              *, gain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The signed pools of a tile's differential pairs, cells in ``(row, pair)`` C order.

    Parameters
    ----------
    conductance_s, sigma_s : ndarray (rows, cols, branches)
        Measured branch conductances and their uncertainties, siemens.
    usable : ndarray (rows, cols, branches) of bool
        Branches the plan may close (faulty ones excluded).
    tile : Tile
    gain : ndarray (tile.rows, 2 * tile.pairs), optional
        Per-cell multiplicative factor (pre-distortion: how much of a cell's conductance reaches
        the output); 1 when omitted.

    Returns
    -------
    values_s, sigma_s : ndarray (cells, 2 * branches)
    usable : ndarray (cells, 2 * branches) of bool
    """
    block = tile.block
    g = conductance_s[block]
    s = sigma_s[block]
    if gain is not None:
        g = g * gain[..., None]
        s = s * gain[..., None]
    u = usable[block]

    def pairs(a: np.ndarray, negate: bool = False) -> np.ndarray:
        both = np.concatenate([a[:, 0::2], -a[:, 1::2] if negate else a[:, 1::2]], axis=-1)
        return both.reshape(tile.rows * tile.pairs, -1)

    return pairs(g, negate=True), pairs(s), pairs(u)


def choose_scale(values_s: np.ndarray, usable: np.ndarray, max_abs_weight: float, *,
                 density_std: float = 1.25, quantile: float = 0.01) -> float:
    """Siemens per weight unit so that ``max_abs_weight`` lands in the dense part of the pools.

    For each pool (row of ``values_s``) the sum of a random subset has centre ``sum(v) / 2`` and
    standard deviation ``sqrt(sum(v**2)) / 2``; the dense reach on both signs is
    ``density_std * std - |centre|``. The scale uses a low quantile of that reach over the pools so
    a few damaged cells don't shrink the whole layer.
    """
    v = np.where(usable, values_s, 0.0)
    reach = density_std * 0.5 * np.sqrt(np.sum(v**2, axis=1)) - np.abs(0.5 * np.sum(v, axis=1))
    reach_s = float(np.quantile(reach, quantile))
    if reach_s <= 0 or max_abs_weight <= 0:
        raise EngineError("the measured pools have no dense signed range; is the calibration all flagged?")
    return reach_s / max_abs_weight


def check_reach(values_s: np.ndarray, usable: np.ndarray, target_s: np.ndarray, *, layer: int) -> None:
    """Refuse targets beyond what a pool can reach at all (all its + or all its - values closed)."""
    v = np.where(usable, values_s, 0.0)
    high = np.sum(np.maximum(v, 0), axis=1)
    low = np.sum(np.minimum(v, 0), axis=1)
    beyond = (target_s > high) | (target_s < low)
    if np.any(beyond):
        worst = int(np.argmax(np.maximum(target_s - high, low - target_s)))
        raise EngineError(
            f"layer{layer}: {int(beyond.sum())} weights are beyond what their cells' pools can reach "
            f"(e.g. {target_s[worst]:.3g} S where the pool spans [{low[worst]:.3g}, {high[worst]:.3g}] S); "
            "lower the conductance scale or recalibrate the array"
        )


@dataclass(frozen=True)
class LayerMapping:
    """How one layer's weights become target conductances.

    Attributes
    ----------
    index : int
    conductance_per_weight_s : float
        ``G = w * conductance_per_weight_s``, siemens per weight unit.
    bias_input : float
        The bias row carries ``b / bias_input`` and is driven as the input value ``bias_input``.
    magnitude : float
        The layer's :func:`weight_magnitude` (its figures are scored against it).
    tiles : tuple of int
        Indices into :attr:`NetworkMapping.tiles`.
    """

    index: int
    conductance_per_weight_s: float
    bias_input: float
    magnitude: float
    tiles: tuple[int, ...]


@dataclass(frozen=True)
class NetworkMapping:
    """A network mapped onto an array: every tile and its target pair conductances.

    Attributes
    ----------
    tiles : tuple of Tile
        In programming order, layer by layer.
    targets_s : tuple of ndarray (tile.rows, tile.pairs)
        Per tile: the target transfer of each differential pair, siemens.
    layers : tuple of LayerMapping
    """

    tiles: tuple[Tile, ...]
    targets_s: tuple[np.ndarray, ...]
    layers: tuple[LayerMapping, ...]


def occupied_pools(models: Sequence[ArrayModel], tiles: Sequence[Tile]) -> tuple[np.ndarray, np.ndarray]:
    """The signed pools of every pair some tile occupies, over every board: ``values_s``, ``usable``
    ``(pairs, 2 * branches)``, each pair once."""
    values, usable = [], []
    for board, model in enumerate(models):
        rows, cols, _ = model.geometry
        occupied = np.zeros((rows, cols // 2), dtype=bool)
        for tile in tiles:
            if tile.board == board:
                rs, cs = tile.block
                occupied[rs, cs.start // 2: cs.stop // 2] = True
        v, _, u = model.pool(Tile(0, 0, rows, 0, cols // 2))
        values.append(v[occupied.ravel()])
        usable.append(u[occupied.ravel()])
    return np.concatenate(values), np.concatenate(usable)


def map_network(network: Network, model: ArrayModel | Sequence[ArrayModel], *, density_std: float = 1.25,
                conductance_per_weight_s: float | None = None, max_tiles: int | None = None,
                pack: bool = True) -> NetworkMapping:
    """Scale, tile, place and sign every layer: the target conductance of every differential pair.

    Parameters
    ----------
    network : Network
    model : ArrayModel or sequence of ArrayModel
        The measured pools the targets must lie within: one per board (boards of one geometry),
        the tiles split among them (:func:`crossbar_ctl.engine._schedule.place_tiles`).
    density_std : float
        See :func:`choose_scale` (over the pools of every cell a tile occupies, on every board).
    conductance_per_weight_s : float, optional
        One scale for every layer instead of one chosen from the pools, siemens per weight unit.
    max_tiles : int, optional
        Refuse a layer that needs more tiles than this (``None``: no limit).
    pack : bool
        Pack several small tiles into one program step where they fit.

    Raises
    ------
    EngineError
        Too many tiles, boards of different geometries, or weights beyond what their pools can reach.
    """
    models = [model] if isinstance(model, ArrayModel) else list(model)
    if len({m.geometry for m in models}) != 1:
        raise EngineError("every board must have the same geometry (rows, cols, branches); got "
                          + ", ".join("x".join(map(str, m.geometry)) for m in models))
    rows, cols, _ = models[0].geometry
    tiles = network_tiles(network, rows, cols, max_tiles=max_tiles, boards=len(models), pack=pack)
    values, usable = occupied_pools(models, tiles)
    targets, layers = [], []
    for k, layer in enumerate(network.layers):
        magnitude = weight_magnitude(layer.matrix, layer.bias)
        b_max = float(np.max(np.abs(layer.bias)))
        bias_input = b_max / magnitude if b_max > 0 else 1.0
        scale = conductance_per_weight_s or choose_scale(values, usable, magnitude, density_std=density_std)
        aug = augmented_matrix(layer.matrix, layer.bias, bias_input) * scale
        indices = tuple(t for t, tile in enumerate(tiles) if tile.layer == k)
        for t in indices:
            target = aug[tiles[t].inputs, tiles[t].outputs]
            tile_values, _, tile_usable = models[tiles[t].board].pool(tiles[t])
            check_reach(tile_values, tile_usable, target.ravel(), layer=k)
            targets.append(target)
        layers.append(LayerMapping(k, scale, bias_input, magnitude, indices))
    return NetworkMapping(tuple(tiles), tuple(targets), tuple(layers))


def masks_from_selection(selection: np.ndarray, rows: int, pairs: int) -> np.ndarray:
    """Optimizer selections ``(cells, 2 n)`` -> cell masks ``uint64 (rows, 2 * pairs)``."""
    n = selection.shape[1] // 2
    weights = np.left_shift(np.uint64(1), np.arange(n, dtype=np.uint64))
    bits = selection.reshape(rows, pairs, 2, n).astype(np.uint64)
    masks = np.sum(bits * weights, axis=-1, dtype=np.uint64)  # (rows, pairs, 2)
    return masks.reshape(rows, 2 * pairs)


def selection_from_masks(masks: np.ndarray, branches: int) -> np.ndarray:
    """Cell masks ``uint64 (rows, cols)`` -> closed branches ``bool (rows, cols, branches)``."""
    shifts = np.arange(branches, dtype=np.uint64)
    return (np.right_shift(masks.astype(np.uint64)[..., None], shifts) & np.uint64(1)).astype(bool)


def input_grid(x: np.ndarray, *, finest_bits: int = 16) -> float | None:
    """The grid of inputs ``(batch, rows)``: the finest over the rows that lie on one of the coarsest
    ``2**-k`` (``k`` 0 to ``finest_bits``) their entries are whole multiples of (pixels of ``k``-bit
    images scaled to [0, 1], integers); None when no row does. Rows off any grid (a bias row's
    constant) and rows of zeros do not count."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    on = ~np.any(x != 0, axis=0)  # a row of zeros carries nothing to land
    grid = None
    for k in range(finest_bits + 1):
        scaled = x * 2.0**k
        whole = np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled)), axis=0)
        if np.any(whole & ~on):
            grid = 2.0**-k
        on |= whole
    return grid


def row_voltages(x: np.ndarray, cell_conductance_s: np.ndarray, *, max_voltage_v: float,
                 max_current_a: float, max_total_current_a: float, row_bound_s: np.ndarray | None = None,
                 margin: float = 0.9, dac_lsb_v: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map input vectors to row voltages, as large as the limits allow, one scale per vector.

    Parameters
    ----------
    x : ndarray (batch, rows)
        Inputs in their own units.
    cell_conductance_s : ndarray (rows, cols)
        Predicted conductance of every cell of the tile, siemens (bounds the column currents).
    max_voltage_v : float
        Largest |V| on any row (the lab limit and the DAC range, whichever is lower).
    max_current_a : float
        Largest |I| into any column (the ADC range and the lab limit, whichever is lower).
    max_total_current_a : float
        Largest sum of |I| over all driven rows.
    row_bound_s : ndarray (rows,), optional
        The bound on each row's conductance the drivers check the total current with (closed
        branches over the smallest resistance); default the rows' predicted conductance.
    margin : float
        Fraction of each current bound used.
    dac_lsb_v : float, optional
        The row DACs' step. When inputs lie on a grid (:func:`input_grid`), each vector's scale is
        rounded down to a whole number of steps per grid unit, so every row voltage on the grid is
        one of the DACs' codes (no quantization error; at most one step per grid unit of the scale
        given up); rows off it are quantized as before.

    Returns
    -------
    voltage_v : ndarray (batch, rows)
    volts_per_unit : ndarray (batch,)
        ``voltage_v = x * volts_per_unit[:, None]``; all-zero inputs get 0 V.
    """
    x = np.asarray(x, dtype=np.float64)
    peak = np.max(np.abs(x), axis=1)
    column_a = np.abs(x) @ cell_conductance_s  # current per unit scale, (batch, cols)
    total_a = np.sum(column_a, axis=1) if row_bound_s is None else np.abs(x) @ row_bound_s
    with np.errstate(divide="ignore"):
        scale = np.minimum.reduce([
            max_voltage_v / peak,
            margin * max_current_a / np.max(column_a, axis=1),
            margin * max_total_current_a / total_a,
        ])
    scale = np.where(np.isfinite(scale), scale, 0.0)
    grid = input_grid(x) if dac_lsb_v else None
    if grid is not None:
        step = dac_lsb_v / grid  # volts per input unit that put every grid value on a code
        scale = np.where(scale >= step, np.floor(scale / step) * step, scale)
    return x * scale[:, None], scale
