"""Strong lottery tickets on the array: switch masks trained on the measured branch conductances.

Edge-popup (Ramanujan et al., CVPR 2020; da Cunha, Natale and Viennot, ICLR 2022 for convolutions)
keeps random weights fixed and learns only which to keep. Here the fixed random weights are the
calibrated branch conductances, laid out as the engine maps a layer (:mod:`._mapping`): the
augmented matrix ``[W.T; b / beta]`` of a layer is tiled onto the array's top-left, and the weight
of input ``i``, output ``o`` is its differential pair's signed pool of ``2 n`` values (``+g`` of
the plus cell's branches, ``-g`` of the minus cell's). Every branch gets a score; the forward pass
closes the top ``keep_fraction`` of each layer's usable branches (a straight-through estimator:
the gradient reaches the scores as if the mask were the scores), and the weight is the sum of the
closed values, each weighted by its cell's gain ``T / G`` (:func:`._solve.gains`: the share of the
cell's conductance that reaches its column in the twin, with the wires' IR drop), refreshed from
the twin at every epoch's masks; stuck-closed branches always count. So the masks are trained on
what the array computes, not on bare conductances.

The result is a :class:`SwitchPlan` like any other: its masks are the trained ones, its targets
and its network's weights the twin's exact transfer of those masks (``pair_transfer(T) / scale``),
so ``crossbar program`` verifies and corrects it on the board and ``crossbar check`` compares the
array with that network in float64.

Weights are in units of ``conductance_per_weight_s`` per layer, chosen once from the pools so that
a random mask gives Kaiming-scaled weights (std ``sqrt(2 / fan_in)``); the bias row is driven at
``bias_input = 1``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._datasets import Dataset
from crossbar_ctl.engine._mapping import (
    ArrayModel,
    LayerMapping,
    Tile,
    masks_from_selection,
    network_tiles,
    pair_transfer,
    weight_magnitude,
)
from crossbar_ctl.engine._network import Network, build_network
from crossbar_ctl.engine._plan import PlanOptions, SwitchPlan, _layer_plan, plan_header
from crossbar_ctl.engine._solve import TileSolution, array_transfer, gains
from crossbar_ctl.engine._twin import is_ideal

if TYPE_CHECKING:
    from calibration import CalibrationRecord
    from crossbar_ctl.engine._program import ProgramOptions
    from drivers import Lab

__all__ = ["LayerShape", "TrainOptions", "TrainResult", "parse_arch", "program_trained", "train_dense",
           "train_masks"]

BIAS_INPUT = 1.0
DENSE_LEARNING_RATE = 0.2
"""The dense baseline's peak learning rate (64-32-10 on 8x8 digits: 0.05 -> 96.4 %, 0.2 -> 97.8 %)."""
_CONV = re.compile(r"^c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?$")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise EngineError("training needs PyTorch: pip install 'crossbar-ctl[train]'") from exc
    return torch


@contextmanager
def _one_thread(torch):
    """Torch on one thread: its matrices here are small, and its thread pool made training 5x
    slower on a loaded 2-core machine (48 s against 9.5 s for 10 epochs of 64-32-10)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class LayerShape:
    """One layer of an architecture: dense (``kernel == 0``) or convolutional.

    Attributes
    ----------
    input_shape : tuple of int
        ``(in,)`` or ``(channels, height, width)``.
    outputs : int
        Units, or output channels.
    kernel, stride, padding : int
        Square convolution kernel (0: dense), stride and zero padding.
    """

    input_shape: tuple[int, ...]
    outputs: int
    kernel: int = 0
    stride: int = 1
    padding: int = 0

    @property
    def fan_in(self) -> int:
        """Inputs of one output: the matrix's columns, without the bias."""
        return self.input_shape[0] * self.kernel**2 if self.kernel else self.input_shape[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        if not self.kernel:
            return (self.outputs,)
        _, height, width = self.input_shape
        side = lambda s: (s + 2 * self.padding - self.kernel) // self.stride + 1  # noqa: E731
        return (self.outputs, side(height), side(width))


def parse_arch(arch: str, input_shape: Sequence[int]) -> tuple[LayerShape, ...]:
    """Layers of an architecture string such as ``64-32-10`` or ``64-c4k3-32-10``.

    The first token is the input size (the data's features); each further token a layer: ``N``
    dense with N outputs, ``cNkK[sS][pP]`` a convolution with N channels, a KxK kernel, stride S
    (default 1) and padding P (default 0), on image data (``input_shape`` ``(c, h, w)``). A dense
    layer after a convolution reads its flattened ``(channel, y, x)`` output.

    Raises
    ------
    EngineError
        A token that is not a layer, an input size that is not the data's, a convolution on flat
        data or one whose kernel does not fit.
    """
    tokens = arch.strip().split("-")
    features = int(np.prod(input_shape))
    if len(tokens) < 2 or not tokens[0].isdigit():
        raise EngineError(f"--arch {arch!r}: expected the input size then layers, e.g. {features}-32-10")
    if int(tokens[0]) != features:
        raise EngineError(f"--arch {arch!r} starts with {tokens[0]} inputs but the data has {features} features")
    shape = tuple(int(s) for s in input_shape)
    layers = []
    for token in tokens[1:]:
        conv = _CONV.match(token)
        if token.isdigit() and int(token) > 0:
            layer = LayerShape((int(np.prod(shape)),), int(token))
        elif conv and all(int(g) > 0 for g in conv.groups()[:2]):
            if len(shape) != 3:
                raise EngineError(f"--arch {arch!r}: {token} is a convolution but its input {shape} is not an "
                                  "image (channels, height, width)")
            stride, padding = int(conv[3] or 1), int(conv[4] or 0)
            layer = LayerShape(shape, int(conv[1]), int(conv[2]), max(stride, 1), padding)
            if min(layer.output_shape[1:]) < 1:
                raise EngineError(f"--arch {arch!r}: the {token} kernel does not fit its {shape} input")
        else:
            raise EngineError(f"--arch {arch!r}: {token!r} is not a layer (N for dense, cNkK[sS][pP] for a "
                              "convolution)")
        layers.append(layer)
        shape = layer.output_shape
    return tuple(layers)


class TrainOptions(StrictModel):
    """How masks (or, for the baseline, dense weights) are trained."""

    epochs: int = Field(30, ge=0, le=10_000)
    """Passes over the training set (0: the scores' random start, a random mask: the floor)."""
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2.0, gt=0)
    """Peak learning rate of SGD with momentum 0.9 (cosine decay to 0). For scores: their gradient
    is the weight's times the branch's value, small in weight units (0.5 to 5 train 64-32-10
    alike); the dense baseline takes about 0.1."""
    weight_decay: float = Field(1e-4, ge=0)
    keep_fraction: float = Field(0.5, gt=0, le=1)
    """Fraction of each layer's usable branches the mask closes (edge-popup's k)."""
    seed: int = Field(0, ge=0)
    """Seed of the scores' initial values and of the batch order (``torch.Generator``)."""
    max_tiles: int | None = Field(None, ge=1)
    """Refuse a layer that needs more tiles than this (``None``: no limit)."""


@dataclass(frozen=True)
class TrainResult:
    """A trained switch plan and how training went.

    Attributes
    ----------
    plan : SwitchPlan
        Not yet programmed.
    network : Network
        The plan's network (the twin's weights of the trained masks), with the held-out test set.
    train_accuracy, test_accuracy : float
        Float64 accuracy of ``network`` on the training set and on the held-out test set.
    losses : tuple of float
        Mean training loss per epoch.
    train_s : float
        Wall time of training, seconds.
    """

    plan: SwitchPlan
    network: Network
    train_accuracy: float
    test_accuracy: float
    losses: tuple[float, ...]
    train_s: float


@dataclass
class _LayerPools:
    """One layer's tiles on the array (placed as the engine places them), its weight scale."""

    shape: LayerShape
    indices: tuple[int, ...]  # the tiles' indices in the plan
    tiles: tuple[Tile, ...]
    usable: tuple[np.ndarray, ...]  # per tile (cells, 2 n) of bool
    conductance_per_weight_s: float


def _skeleton(layers: Sequence[LayerShape], data: Dataset) -> Network:
    """A network of zeros with the architecture's shapes: what the engine tiles and places."""
    return _network("skeleton", layers, [np.zeros((s.fan_in + 1, s.outputs)) for s in layers], data)


def _layer_pools(model: ArrayModel, layers: Sequence[LayerShape], data: Dataset, keep: float,
                 max_tiles: int | None) -> list[_LayerPools]:
    rows, cols, _ = model.geometry
    tiles = network_tiles(_skeleton(layers, data), rows, cols, max_tiles=max_tiles)
    pools = []
    for k, shape in enumerate(layers):
        indices = tuple(t for t, tile in enumerate(tiles) if tile.layer == k)
        parts = [model.pool(tiles[t]) for t in indices]
        # a random mask keeping `keep` of the branches: weight variance keep (1 - keep) sum(v**2)
        power = np.mean(np.concatenate([np.sum(np.where(u, v, 0.0) ** 2, axis=1) for v, _, u in parts]))
        scale = math.sqrt(keep * (1 - keep) * power * shape.fan_in / 2.0) if keep < 1 else math.sqrt(power)
        if not scale > 0:
            raise EngineError(f"layer{k}: its cells have no usable branch; is the calibration all flagged?")
        pools.append(_LayerPools(shape, indices, tuple(tiles[t] for t in indices), tuple(u for _, _, u in parts),
                                 scale))
    return pools


def _values(model: ArrayModel, pools: Sequence[_LayerPools], selections: Sequence[Sequence[np.ndarray]],
            twin: Any) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per layer and tile: the signed pool in weight units, each cell weighted by its twin gain at
    the present masks, and what every pair gets whatever its mask, ``(cells,)``: its forced
    branches and, with wires, the twin's sneak-path output of an open cell (``T`` where ``G = 0``),
    so that at the present masks the pairs' weights are the twin's transfer exactly."""
    out = []
    for layer, selection in zip(pools, selections):
        parts = []
        for tile, chosen in zip(layer.tiles, selection):
            gain, constant = None, 0.0
            if not is_ideal(twin):
                cell_s = model.cell_conductance_s(masks_from_selection(chosen, tile.rows, tile.pairs), tile)
                transfer = array_transfer(model, twin, cell_s, tile)
                gain = gains(transfer, cell_s)
                constant = pair_transfer(np.where(cell_s > 0, 0.0, transfer)).ravel()
            values, _, _ = model.pool(tile, gain)
            scale = layer.conductance_per_weight_s
            parts.append((np.nan_to_num(values) / scale, (model.forced_pair_s(tile, gain) + constant) / scale))
        out.append(parts)
    return out


class _Masked:
    """The torch side of edge-popup: scores per tile, top-k masks per layer, the forward pass."""

    def __init__(self, torch, pools: Sequence[_LayerPools], generator) -> None:
        self.torch, self.pools = torch, pools
        self.scores = [[torch.nn.Parameter(torch.rand(u.shape, generator=generator, dtype=torch.float64))
                        for u in layer.usable] for layer in pools]
        self.usable = [[torch.as_tensor(u) for u in layer.usable] for layer in pools]
        self.values: list[list[tuple[Any, Any]]] = []

    def parameters(self) -> list:
        return [s for layer in self.scores for s in layer]

    def set_values(self, values: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]]) -> None:
        torch = self.torch
        self.values = [[(torch.as_tensor(v), torch.as_tensor(f)) for v, f in layer] for layer in values]

    def masks(self, keep: float) -> list[list]:
        """Hard top-k masks per layer (usable branches only), gradients passed straight through."""
        torch = self.torch
        out = []
        for scores, usable in zip(self.scores, self.usable):
            flat = torch.cat([s[u] for s, u in zip(scores, usable)])
            count = max(1, round(keep * flat.numel()))
            threshold = torch.topk(flat.detach(), count, sorted=False).values.min()
            out.append([((s.detach() >= threshold) & u).to(s.dtype) + s - s.detach()
                        for s, u in zip(scores, usable)])
        return out

    def selections(self, keep: float) -> list[list[np.ndarray]]:
        return [[m.detach().numpy() > 0.5 for m in layer] for layer in self.masks(keep)]

    def augmented(self, masks: Sequence[Sequence]) -> list:
        """Per layer: the augmented matrix ``(fan_in + 1, outputs)`` of the masked pools."""
        torch = self.torch
        out = []
        for layer, layer_masks, values in zip(self.pools, masks, self.values):
            blocks = {}
            for tile, mask, (v, forced) in zip(layer.tiles, layer_masks, values):
                pair = (mask * v).sum(dim=1) + forced
                blocks[(tile.input_start, tile.output_start)] = pair.reshape(tile.rows, tile.pairs)
            out.append(_assemble(torch.cat, layer.tiles, blocks))
        return out


def _assemble(concatenate: Callable, tiles: Sequence[Tile], blocks: dict) -> Any:
    """Tiles' blocks ``{(input_start, output_start): (rows, pairs)}`` back into one matrix
    (``concatenate``: ``torch.cat``, differentiable, or ``np.concatenate``)."""
    row_starts = sorted({t.input_start for t in tiles})
    col_starts = sorted({t.output_start for t in tiles})
    return concatenate([concatenate([blocks[(r, c)] for c in col_starts], axis=1) for r in row_starts], axis=0)


def _forward(torch, layers: Sequence[LayerShape], matrices: Sequence, x) -> Any:
    """Logits of flat inputs ``(batch, features)``: ReLU between layers, the last linear."""
    functional = torch.nn.functional
    for k, (shape, aug) in enumerate(zip(layers, matrices)):
        weight, bias = aug[:-1].T, aug[-1] * BIAS_INPUT
        if shape.kernel:
            images = x.reshape(len(x), *shape.input_shape)
            weight = weight.reshape(shape.outputs, shape.input_shape[0], shape.kernel, shape.kernel)
            x = functional.conv2d(images, weight, bias, stride=shape.stride, padding=shape.padding).flatten(1)
        else:
            x = x @ weight.T + bias
        if k < len(layers) - 1:
            x = torch.relu(x)
    return x


def _fit(torch, parameters: list, loss_of: Callable[[Any, Any], Any], data: Dataset, options: TrainOptions,
         generator, *, before_epoch: Callable[[], None] | None = None,
         progress: Callable[[int, float], None] | None = None) -> list[float]:
    """SGD with momentum and a cosine schedule over the training set; the mean loss per epoch."""
    x, y = torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)
    optimizer = torch.optim.SGD(parameters, lr=options.learning_rate, momentum=0.9,
                                weight_decay=options.weight_decay)
    steps = max(1, options.epochs * math.ceil(len(x) / options.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses = []
    for _ in range(options.epochs):
        if before_epoch:
            before_epoch()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), options.batch_size):
            batch = order[start:start + options.batch_size]
            loss = loss_of(x[batch], y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(x))
        if progress:
            progress(1, losses[-1])
    return losses


def _check_data(data: Dataset, layers: Sequence[LayerShape]) -> None:
    if layers[-1].kernel or layers[-1].outputs < data.classes:
        raise EngineError(f"the last layer must be dense with at least {data.classes} outputs (one per class); "
                          f"got {layers[-1].output_shape}")


def train_masks(model: ArrayModel, data: Dataset, arch: str, *, options: TrainOptions | None = None,
                progress: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train switch masks on measured pools by edge-popup, with the twin in the forward pass.

    Parameters
    ----------
    model : ArrayModel
        The calibration (``_workflow.array_model``): branch conductances, usable branches, twin.
    data : Dataset
        Training set (learned on) and held-out test set (only scored, at the end).
    arch : str
        :func:`parse_arch`, e.g. ``"64-32-10"``.
    options : TrainOptions, optional
    progress : callable, optional
        Called after each epoch with 1 and the epoch's mean loss.

    Raises
    ------
    EngineError
        No torch, a bad architecture, a layer needing too many tiles, an all-flagged calibration.
    """
    torch = _torch()
    options = options or TrainOptions()
    layers = parse_arch(arch, data.input_shape)
    _check_data(data, layers)
    pools = _layer_pools(model, layers, data, options.keep_fraction, options.max_tiles)
    twin = None if is_ideal(model.twin) else model.twin
    started = time.monotonic()
    generator = torch.Generator().manual_seed(options.seed)
    masked = _Masked(torch, pools, generator)

    def refresh() -> None:  # the twin's gains at the present masks
        masked.set_values(_values(model, pools, masked.selections(options.keep_fraction), twin))

    def loss_of(x, y):
        matrices = masked.augmented(masked.masks(options.keep_fraction))
        return torch.nn.functional.cross_entropy(_forward(torch, layers, matrices, x), y)

    with _one_thread(torch):
        losses = _fit(torch, masked.parameters(), loss_of, data, options, generator, before_epoch=refresh,
                      progress=progress)
    plan, network = _trained_plan(model, data, arch, layers, pools, masked.selections(options.keep_fraction), twin,
                                  options)
    train_s = time.monotonic() - started
    accuracy = lambda x, y: float(np.mean(network.predict(x) == y))  # noqa: E731
    return TrainResult(plan, network, accuracy(data.train_x, data.train_y), accuracy(data.test_x, data.test_y),
                       tuple(losses), train_s)


def _network(name: str, layers: Sequence[LayerShape], matrices: Sequence[np.ndarray], data: Dataset) -> Network:
    """The engine's network of augmented matrices ``(fan_in + 1, outputs)``, with the test set."""
    weights = []
    for shape, aug in zip(layers, matrices):
        weight = aug[:-1].T
        if shape.kernel:
            weight = weight.reshape(shape.outputs, shape.input_shape[0], shape.kernel, shape.kernel)
        weights.append(np.ascontiguousarray(weight))
    return build_network(
        weights, [aug[-1] * BIAS_INPUT for aug in matrices], ["relu"] * (len(layers) - 1) + ["none"],
        input_shape=data.input_shape if layers[0].kernel else None,
        strides=[s.stride for s in layers], paddings=[s.padding for s in layers], name=name,
        test_x=data.test_x, test_y=data.test_y,
    )


def _trained_plan(model: ArrayModel, data: Dataset, arch: str, layers: Sequence[LayerShape],
                  pools: Sequence[_LayerPools], selections: Sequence[Sequence[np.ndarray]], twin: Any,
                  options: TrainOptions) -> tuple[SwitchPlan, Network]:
    """The plan of trained selections: the twin's exact transfer of the masks is the target."""
    rows, cols, _ = model.geometry
    arrays: dict[str, np.ndarray] = {}
    solved, matrices, mappings = [], [], []
    for k, (layer, selection) in enumerate(zip(pools, selections)):
        blocks, solutions = {}, []
        for t, tile, chosen in zip(layer.indices, layer.tiles, selection):
            masks = masks_from_selection(chosen, tile.rows, tile.pairs)
            cell_s = model.cell_conductance_s(masks, tile)
            predicted_s = array_transfer(model, twin, cell_s, tile)
            target_s = pair_transfer(predicted_s)
            full_masks = np.zeros((rows, cols), dtype=np.uint64)
            full_masks[tile.block] = masks
            arrays.update({f"tile{t}.masks": full_masks, f"tile{t}.target_s": target_s,
                           f"tile{t}.cell_s": cell_s, f"tile{t}.predicted_s": predicted_s})
            solutions.append(TileSolution(chosen, masks, cell_s, predicted_s, np.zeros(tile.rows * tile.pairs)))
            blocks[(tile.input_start, tile.output_start)] = target_s / layer.conductance_per_weight_s
        aug = _assemble(np.concatenate, layer.tiles, blocks)
        matrices.append(aug)
        mappings.append(LayerMapping(k, layer.conductance_per_weight_s, BIAS_INPUT,
                                     weight_magnitude(aug[:-1].T, aug[-1]), layer.indices))
        solved.append(solutions)
    network = _network(f"edge-popup {arch}", layers, matrices, data)
    layer_plans = []
    for k, (layer, mapped, solutions) in enumerate(zip(pools, mappings, solved)):
        arrays[f"net.layer{k}.weight"] = network.layers[k].weight
        arrays[f"net.layer{k}.bias"] = network.layers[k].bias
        layer_plans.append(_layer_plan(network.layers[k], mapped, [model], layer.tiles,
                                       [arrays[f"tile{t}.target_s"] for t in layer.indices], solutions))
    header = plan_header(network, [model], [twin], PlanOptions(max_tiles=options.max_tiles), layer_plans,
                         [tile for layer in pools for tile in layer.tiles])
    return SwitchPlan(header, arrays), network


def train_dense(data: Dataset, arch: str, *, options: TrainOptions | None = None,
                progress: Callable[[int, float], None] | None = None) -> tuple[Network, float]:
    """A float64 dense network of the same architecture, trained by the same loop (the baseline).

    ``options`` default to :class:`TrainOptions` at ``DENSE_LEARNING_RATE``.

    Returns
    -------
    network : Network
        With the held-out test set.
    train_s : float
        Wall time of training, seconds.
    """
    torch = _torch()
    options = options or TrainOptions(learning_rate=DENSE_LEARNING_RATE)
    layers = parse_arch(arch, data.input_shape)
    _check_data(data, layers)
    started = time.monotonic()
    generator = torch.Generator().manual_seed(options.seed)
    matrices = []
    for shape in layers:  # Kaiming-uniform weights, zero biases
        bound = math.sqrt(6.0 / shape.fan_in)
        aug = (torch.rand(shape.fan_in + 1, shape.outputs, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        aug[-1] = 0.0
        matrices.append(torch.nn.Parameter(aug))

    def loss_of(x, y):
        return torch.nn.functional.cross_entropy(_forward(torch, layers, matrices, x), y)

    with _one_thread(torch):
        _fit(torch, matrices, loss_of, data, options, generator, progress=progress)
    network = _network(f"dense {arch}", layers, [m.detach().numpy() for m in matrices], data)
    return network, time.monotonic() - started


def program_trained(lab: Lab, plan: SwitchPlan, record: CalibrationRecord, *,
                    program_options: ProgramOptions | None = None, recheck: bool = True,
                    progress: Callable[[int], None] | None = None) -> SwitchPlan:
    """Program a plan made from ``record`` (a trained one) with the hardware in the loop.

    The checks of :func:`._workflow.program_network` come first: the plan must be of this
    calibration (its checksum), the calibration of this lab's array (geometry, board, fingerprint)
    and, with ``recheck``, still valid (drift). Then :func:`._program.program_plan` loads every
    tile, measures it and re-solves the pairs that are off towards the plan's targets.

    Raises
    ------
    EngineError
        A plan of another calibration, a calibration of another array or one too old.
    """
    from crossbar_ctl.engine._program import program_plan
    from crossbar_ctl.engine._workflow import array_model, check_drift, check_fingerprint, check_lab

    model = array_model(record)
    if plan.header.calibration.checksum != model.reference.checksum:
        raise EngineError("the plan was made from another calibration record; program it with the record it was "
                          "trained on (or train again on this one)")
    check_lab(model.reference, lab)
    check_fingerprint(model.reference, lab)
    if recheck:
        check_drift(lab, record)
    return program_plan(lab, plan, model, options=program_options, progress=progress)
