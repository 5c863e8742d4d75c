"""Networks in: dense and convolutional layers from ``.npz`` (see docs/networks.md) or ONNX.

A :class:`Network` is a chain of array layers, each an affine map ``W @ x + b`` followed by an
activation and by digital steps (:class:`Op`: pooling, clipping, softmax, a residual add of an
earlier layer's input), computed digitally before the next layer. A convolution is the same map
applied to every im2col patch, so the engine sees every layer as one matrix: :attr:`Layer.matrix`
``(out, in)``, with :meth:`Layer.patches` turning a batch of flat inputs into the matrix's input
rows and :meth:`Layer.assemble` turning the output rows back into flat outputs. Values between
layers are always flat ``(batch, size)``, images in ``(channel, y, x)`` order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from crossbar_ctl.core.errors import EngineError, RecordError
from crossbar_ctl.core.files import read_npz

__all__ = [
    "ACTIVATIONS", "NETWORK_SCHEMA_VERSION", "OPS", "Layer", "Network", "Op", "build_network", "im2col",
    "load_dataset", "load_network", "save_network",
]

NETWORK_SCHEMA_VERSION = 2  # 2: digital steps (layer{k}.post), sigmoid and tanh; 1 had no key
_FUNCTIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),  # the logistic, written not to overflow
    "tanh": np.tanh,
    "none": lambda z: z,
}
ACTIVATIONS = tuple(_FUNCTIONS)
OPS = {  # digital step -> its arguments
    "relu": (), "sigmoid": (), "tanh": (), "softmax": (), "globalavgpool": (), "flatten": (),
    "clip": ("min", "max"),
    "maxpool": ("kh", "kw", "sh", "sw", "pad_top", "pad_left", "pad_bottom", "pad_right"),
    "avgpool": ("kh", "kw", "sh", "sw", "pad_top", "pad_left", "pad_bottom", "pad_right", "count_include_pad"),
    "add": ("layer",),
}
_LAYER_KEY = re.compile(r"^layer(\d+)\.(weight|bias|stride|padding|post)$")
_OTHER_KEYS = {"activations", "input_shape", "test.x", "test.y", "name", "schema_version"}


def im2col(x: np.ndarray, kernel: tuple[int, int], *, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Patches of a batch of images as rows.

    Parameters
    ----------
    x : ndarray (batch, channels, height, width)
    kernel : (kh, kw)
    stride, padding : int
        Same in both directions; zero padding.

    Returns
    -------
    ndarray (batch * out_h * out_w, channels * kh * kw)
        Row ``(b, y, x)`` in C order; columns in ``(channel, ky, kx)`` order, matching
        ``weight.reshape(out_channels, -1)``.
    """
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride, ::stride]
    batch, channels, out_h, out_w, kh, kw = windows.shape
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kh * kw)


def _pool(x: np.ndarray, shape: tuple[int, ...], args: tuple[int, ...], mode: str) -> np.ndarray:
    """Max or average pooling of flat images ``(batch, c*h*w)`` -> flat ``(batch, c*oh*ow)``."""
    kh, kw, sh, sw, top, left, bottom, right = args[:8]
    pads = ((0, 0), (0, 0), (top, bottom), (left, right))
    images = np.pad(x.reshape(len(x), *shape), pads, constant_values=-np.inf if mode == "max" else 0.0)
    windows = sliding_window_view(images, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    if mode == "max":
        return windows.max(axis=(4, 5)).reshape(len(x), -1)
    if args[8]:  # count_include_pad
        count: np.ndarray | float = kh * kw
    else:
        ones = np.pad(np.ones(shape[1:]), pads[2:])
        count = sliding_window_view(ones, (kh, kw))[::sh, ::sw].sum(axis=(2, 3))
    return (windows.sum(axis=(4, 5)) / count).reshape(len(x), -1)


@dataclass(frozen=True)
class Op:
    """One digital step between array layers.

    Attributes
    ----------
    kind : str
        A key of :data:`OPS`: ``relu``, ``sigmoid``, ``tanh``, ``clip`` (min, max),
        ``maxpool`` / ``avgpool`` (kernel, strides, pads top left bottom right; ``avgpool`` also
        ``count_include_pad``), ``globalavgpool``, ``flatten`` (an image becomes a flat vector;
        the data are flat already), ``softmax`` (over a flat vector) or ``add`` (adds the input of
        array layer ``layer``: a residual connection).
    args : tuple of float
        As :data:`OPS` names them; integers for everything but ``clip``.

    ``str(op)`` is its text form, e.g. ``"maxpool 2 2 2 2 0 0 0 0"``, and :meth:`parse` reads it.
    """

    kind: str
    args: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in OPS:
            raise EngineError(f"digital step {self.kind!r} is not supported; use one of {', '.join(OPS)}")
        if len(self.args) != len(OPS[self.kind]):
            raise EngineError(f"digital step {self.kind} takes {len(OPS[self.kind])} arguments "
                              f"({' '.join(OPS[self.kind])}); got {len(self.args)}")
        args = tuple(float(a) for a in self.args)
        if self.kind != "clip":
            if any(not a.is_integer() or a < 0 for a in args):
                raise EngineError(f"digital step {self.kind} takes integers >= 0; got {self.args}")
            args = tuple(int(a) for a in args)
            if self.kind.endswith("pool") and self.kind != "globalavgpool" and min(args[:4]) < 1:
                raise EngineError(f"{self.kind}: kernel and strides must be >= 1; got {args[:4]}")
        elif np.isnan(args).any() or args[0] > args[1]:
            raise EngineError(f"clip needs min <= max; got {self.args}")
        object.__setattr__(self, "args", args)

    def __str__(self) -> str:
        return " ".join([self.kind, *(format(a, ".17g") for a in self.args)])

    @classmethod
    def parse(cls, text: str) -> Op:
        kind, *args = str(text).split() or [""]
        try:
            numbers = tuple(float(a) for a in args)
        except ValueError as exc:
            raise EngineError(f"digital step {text!r}: arguments must be numbers") from exc
        return cls(kind, numbers)

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for an input of ``shape``."""
        if self.kind in ("maxpool", "avgpool", "globalavgpool"):
            if len(shape) != 3:
                raise EngineError(f"{self.kind} needs an image (channels, height, width); its input is {shape}")
            if self.kind == "globalavgpool":
                return (shape[0], 1, 1)
            kh, kw, sh, sw, top, left, bottom, right = self.args[:8]
            out_h, out_w = (shape[1] + top + bottom - kh) // sh + 1, (shape[2] + left + right - kw) // sw + 1
            if min(out_h, out_w) < 1 or max(top, bottom) >= kh or max(left, right) >= kw:
                raise EngineError(f"{self} does not fit its input {shape}")
            return (shape[0], out_h, out_w)
        if self.kind == "flatten":
            return (int(np.prod(shape)),)
        if self.kind == "softmax" and len(shape) != 1:
            raise EngineError(f"softmax runs over a flat vector; its input is {shape} (flatten first)")
        return shape

    def apply(self, x: np.ndarray, shape: tuple[int, ...], inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Flat ``(batch, size)`` -> flat outputs; ``inputs[k]`` is array layer k's input (``add``)."""
        kind = self.kind
        if kind in _FUNCTIONS:
            return _FUNCTIONS[kind](x)
        if kind == "clip":
            return np.clip(x, *self.args)
        if kind == "flatten":
            return x
        if kind == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if kind == "globalavgpool":
            return x.reshape(len(x), shape[0], -1).mean(axis=2)
        if kind in ("maxpool", "avgpool"):
            return _pool(x, shape, self.args, kind[:3])
        if self.args[0] >= len(inputs):
            raise EngineError(f"{self} needs the input of layer {self.args[0]}; run the network in order")
        return x + inputs[self.args[0]]


@dataclass(frozen=True)
class Layer:
    """One affine layer and its activation.

    Attributes
    ----------
    weight : ndarray
        ``(out, in)`` for a dense layer, ``(out_channels, in_channels, kh, kw)`` for a convolution.
    bias : ndarray (out,)
    activation : {"relu", "sigmoid", "tanh", "none"}
    input_shape : tuple of int
        ``(in,)`` for dense, ``(channels, height, width)`` for a convolution.
    stride, padding : int
        Convolutions only.
    post : tuple of Op
        Digital steps after the activation, before the next layer.
    """

    weight: np.ndarray
    bias: np.ndarray
    activation: str
    input_shape: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    post: tuple[Op, ...] = ()

    @property
    def is_conv(self) -> bool:
        return self.weight.ndim == 4

    @property
    def matrix(self) -> np.ndarray:
        """The weight as the matrix the array holds, ``(out, in)``."""
        return self.weight.reshape(self.weight.shape[0], -1)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if not self.is_conv:
            return (self.weight.shape[0],)
        _, height, width = self.input_shape
        kh, kw = self.weight.shape[2:]
        out_h = (height + 2 * self.padding - kh) // self.stride + 1
        out_w = (width + 2 * self.padding - kw) // self.stride + 1
        return (self.weight.shape[0], out_h, out_w)

    @property
    def result_shape(self) -> tuple[int, ...]:
        """Per-sample shape after the digital steps: what the next layer takes."""
        shape = self.output_shape
        for op in self.post:
            shape = op.shape(shape)
        return shape

    @property
    def in_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.output_shape))

    def patches(self, x: np.ndarray) -> np.ndarray:
        """Flat inputs ``(batch, in_size)`` -> matrix inputs ``(rows, matrix in)``."""
        if not self.is_conv:
            return x
        images = x.reshape(x.shape[0], *self.input_shape)
        return im2col(images, self.weight.shape[2:], stride=self.stride, padding=self.padding)

    def assemble(self, y: np.ndarray, batch: int) -> np.ndarray:
        """Matrix outputs ``(rows, out)`` -> flat outputs ``(batch, out_size)``."""
        if not self.is_conv:
            return y
        channels, out_h, out_w = self.output_shape
        return y.reshape(batch, out_h, out_w, channels).transpose(0, 3, 1, 2).reshape(batch, -1)

    def activate(self, z: np.ndarray, inputs: Sequence[np.ndarray] = ()) -> np.ndarray:
        """Activation and digital steps: pre-activation ``(batch, out_size)`` -> the next layer's input.

        ``inputs[k]`` is array layer k's input, read by a residual ``add`` step.
        """
        x = _FUNCTIONS[self.activation](z)
        shape = self.output_shape
        for op in self.post:
            x = op.apply(x, shape, inputs)
            shape = op.shape(shape)
        return x

    def pre_activation(self, x: np.ndarray) -> np.ndarray:
        """Float64 reference of the affine part, ``(batch, in_size) -> (batch, out_size)``."""
        x = np.asarray(x, dtype=np.float64)
        rows = self.patches(x) @ self.matrix.T + self.bias
        return self.assemble(rows, x.shape[0])


@dataclass(frozen=True)
class Network:
    """A chain of array layers (digital steps between them), with an optional held-out test set.

    Attributes
    ----------
    layers : tuple of Layer
    name : str
    test_x : ndarray (samples, in_size) or None
    test_y : ndarray (samples,) of int or None
        Class labels (index of the largest output).
    """

    layers: tuple[Layer, ...]
    name: str = "network"
    test_x: np.ndarray | None = field(default=None, repr=False)
    test_y: np.ndarray | None = field(default=None, repr=False)

    @property
    def in_size(self) -> int:
        return self.layers[0].in_size

    def _run(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        inputs: list[np.ndarray] = []
        outputs = []
        x = np.asarray(x, dtype=np.float64)
        for layer in self.layers:
            inputs.append(x)
            outputs.append(layer.pre_activation(x))
            x = layer.activate(outputs[-1], inputs)
        return outputs, x

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Float64 pre-activation outputs of every layer for inputs ``(batch, in_size)``."""
        return self._run(x)[0]

    def output(self, x: np.ndarray) -> np.ndarray:
        """Float64 output of the whole network (last layer's activation and digital steps)."""
        return self._run(x)[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float64 class predictions ``(batch,)``: the largest :meth:`output`."""
        return np.argmax(self.output(x), axis=1)


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    try:
        array = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"{name} is not numeric ({exc}); store float arrays") from exc
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise EngineError(f"{name} has {bad} NaN or infinite values; replace them with finite numbers")
    return array


def build_network(
    weights: list[np.ndarray],
    biases: list[np.ndarray | None],
    activations: list[str],
    *,
    input_shape: tuple[int, ...] | None,
    strides: list[int],
    paddings: list[int],
    name: str,
    test_x: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    posts: Sequence[Sequence[Op | str]] | None = None,
) -> Network:
    """Validate raw arrays and chain them into a :class:`Network`.

    ``posts[k]`` are layer k's digital steps (:class:`Op` or their text form); none by default.
    """
    if not weights:
        raise EngineError(f"{name}: no layers found; store layer0.weight, layer1.weight, ...")
    if len(activations) != len(weights):
        raise EngineError(
            f"{name}: {len(activations)} activations for {len(weights)} layers; give one per layer"
        )
    posts = [()] * len(weights) if posts is None else posts
    if len(posts) != len(weights):
        raise EngineError(f"{name}: digital steps for {len(posts)} layers but {len(weights)} layers")
    layers: list[Layer] = []
    shape = input_shape
    for k, (weight, bias, activation) in enumerate(zip(weights, biases, activations)):
        weight = _finite(f"layer{k}.weight", weight)
        if weight.ndim not in (2, 4) or 0 in weight.shape:
            raise EngineError(
                f"layer{k}.weight has shape {weight.shape}; expected (out, in) or "
                "(out_channels, in_channels, kh, kw)"
            )
        out = weight.shape[0]
        bias = np.zeros(out) if bias is None else _finite(f"layer{k}.bias", bias)
        if bias.shape != (out,):
            raise EngineError(f"layer{k}.bias has shape {bias.shape}; expected ({out},) to match layer{k}.weight")
        if activation not in ACTIVATIONS:
            raise EngineError(f"layer{k} activation {activation!r} is not supported; use one of {ACTIVATIONS}")
        if weight.ndim == 4:
            if shape is None or len(shape) != 3:
                raise EngineError(
                    f"layer{k} is a convolution but its input shape is unknown; store input_shape "
                    "(channels, height, width)"
                )
            if shape[0] != weight.shape[1]:
                raise EngineError(
                    f"layer{k}.weight expects {weight.shape[1]} input channels but its input has "
                    f"{shape[0]}; fix the shapes so the layers chain"
                )
            layer = Layer(weight, bias, activation, tuple(shape), strides[k], paddings[k])
            if min(layer.output_shape[1:]) < 1:
                raise EngineError(f"layer{k}: kernel {weight.shape[2:]} is larger than its input {shape[1:]}")
        else:
            size = weight.shape[1]
            if shape is not None and int(np.prod(shape)) != size:
                previous = f"layer{k - 1} gives" if k else "the input has"
                raise EngineError(
                    f"layer{k}.weight has {size} inputs but {previous} {int(np.prod(shape))} values; "
                    "fix the shapes so the layers chain"
                )
            layer = Layer(weight, bias, activation, (size,))
        post = tuple(op if isinstance(op, Op) else Op.parse(op) for op in posts[k])
        step = layer.output_shape
        for op in post:
            if op.kind == "add":
                source = op.args[0]
                if source > k:
                    raise EngineError(f"layer{k}: {op} adds the input of a later layer; add layer0 ... layer{k}")
                if (layers + [layer])[source].in_size != int(np.prod(step)):
                    raise EngineError(f"layer{k}: {op} adds {(layers + [layer])[source].in_size} values "
                                      f"to {int(np.prod(step))}; the shapes must match")
            try:
                step = op.shape(step)
            except EngineError as exc:
                raise EngineError(f"layer{k}: {exc}") from exc
        layer = Layer(weight, bias, activation, layer.input_shape, layer.stride, layer.padding, post)
        layers.append(layer)
        shape = layer.result_shape
    network = Network(tuple(layers), name)
    if (test_x is None) != (test_y is None):
        raise EngineError(f"{name}: store both test.x and test.y, or neither")
    if test_x is not None:
        test_x = _finite("test.x", test_x)
        test_y = np.asarray(test_y)
        if test_x.ndim != 2 or test_x.shape[1] != network.in_size:
            raise EngineError(f"test.x has shape {test_x.shape}; expected (samples, {network.in_size})")
        if test_y.shape != (test_x.shape[0],) or not np.issubdtype(test_y.dtype, np.integer):
            raise EngineError(f"test.y must be ({test_x.shape[0]},) integer class labels")
        network = Network(tuple(layers), name, test_x, test_y.astype(np.int64))
    return network


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (never unpickled), or a one-line error naming ``what`` it is."""
    try:
        return read_npz(path, what=what)
    except RecordError as exc:
        raise EngineError(str(exc)) from exc


def _load_npz(path: Path) -> Network:
    data = _read_npz(path, "network")
    version = int(data["schema_version"]) if "schema_version" in data else 1
    if version > NETWORK_SCHEMA_VERSION:
        raise EngineError(f"{path}: network schema_version {version} is newer than this crossbar-ctl reads "
                          f"({NETWORK_SCHEMA_VERSION}); upgrade crossbar-ctl")
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        match = _LAYER_KEY.match(key)
        if match:
            found.setdefault(int(match[1]), {})[match[2]] = value
        elif key not in _OTHER_KEYS:
            raise EngineError(f"{path}: unknown key {key!r}; see docs/networks.md for the keys")
    count = len(found)
    if sorted(found) != list(range(count)) or any("weight" not in found[k] for k in found):
        raise EngineError(f"{path}: layers must be numbered layer0, layer1, ... each with a .weight")
    if "activations" in data:
        activations = [str(a) for a in np.atleast_1d(data["activations"])]
    else:
        activations = ["relu"] * (count - 1) + ["none"] * bool(count)
    shape = tuple(int(s) for s in data["input_shape"]) if "input_shape" in data else None
    return build_network(
        [found[k]["weight"] for k in range(count)],
        [found[k].get("bias") for k in range(count)],
        activations,
        input_shape=shape,
        strides=[int(found[k].get("stride", 1)) for k in range(count)],
        paddings=[int(found[k].get("padding", 0)) for k in range(count)],
        name=str(data["name"]) if "name" in data else path.stem,
        test_x=data.get("test.x"),
        test_y=data.get("test.y"),
        posts=[[str(op) for op in np.atleast_1d(found[k].get("post", []))] for k in range(count)],
    )


def load_network(path: str | Path) -> Network:
    """Load and validate a network from ``.npz`` (docs/networks.md) or ``.onnx``.

    Raises
    ------
    EngineError
        Unreadable file, NaN or infinite weights, shapes that don't chain, unsupported operators.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from crossbar_ctl.engine._onnx import load_onnx  # _onnx builds on this module

        return load_onnx(path)
    return _load_npz(path)


def save_network(path: str | Path, network: Network) -> None:
    """Write a network (and its test set) in the ``.npz`` format of docs/networks.md, atomically."""
    import io

    from crossbar_ctl.core.files import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {
        "schema_version": np.array(NETWORK_SCHEMA_VERSION),
        "activations": np.array([layer.activation for layer in network.layers]),
        "name": np.array(network.name),
    }
    for k, layer in enumerate(network.layers):
        arrays[f"layer{k}.weight"] = layer.weight
        arrays[f"layer{k}.bias"] = layer.bias
        if layer.is_conv:
            arrays[f"layer{k}.stride"] = np.array(layer.stride)
            arrays[f"layer{k}.padding"] = np.array(layer.padding)
        if layer.post:
            arrays[f"layer{k}.post"] = np.array([str(op) for op in layer.post])
    if network.layers[0].is_conv:
        arrays["input_shape"] = np.array(network.layers[0].input_shape)
    if network.test_x is not None:
        arrays["test.x"] = network.test_x
        arrays["test.y"] = network.test_y
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_dataset(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs and labels from an ``.npz``: ``test.x``/``test.y`` (a network file) or ``x``/``y``.

    Returns
    -------
    x : ndarray (samples, features)
    y : ndarray (samples,) of int, or None without labels
    """
    path = Path(path)
    data = _read_npz(path, "data")
    for x_key, y_key in (("test.x", "test.y"), ("x", "y")):
        if x_key in data:
            x = _finite(x_key, data[x_key])
            if x.ndim != 2:
                raise EngineError(f"{path}: {x_key} has shape {x.shape}; expected (samples, features)")
            y = data.get(y_key)
            if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
                raise EngineError(f"{path}: {y_key} must be ({len(x)},) integer class labels")
            return x, None if y is None else y.astype(np.int64)
    raise EngineError(f"{path}: no inputs; store them as x (and labels as y) or test.x / test.y")
