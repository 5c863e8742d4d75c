"""Networks in: dense and convolutional layers from ``.npz`` (see docs/networks.md) or ONNX.

A :class:`Network` is a chain of layers, each an affine map ``W @ x + b`` followed by an
activation. A convolution is the same map applied to every im2col patch, so the engine sees every
layer as one matrix: :attr:`Layer.matrix` ``(out, in)``, with :meth:`Layer.patches` turning a batch
of flat inputs into the matrix's input rows and :meth:`Layer.assemble` turning the output rows
back into flat outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from crossbar_ctl.core.errors import EngineError, RecordError
from crossbar_ctl.core.files import read_npz

__all__ = [
    "ACTIVATIONS", "Layer", "Network", "build_network", "im2col", "load_dataset", "load_network", "save_network",
]

ACTIVATIONS = ("relu", "none")
_LAYER_KEY = re.compile(r"^layer(\d+)\.(weight|bias|stride|padding)$")
_OTHER_KEYS = {"activations", "input_shape", "test.x", "test.y", "name"}


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


@dataclass(frozen=True)
class Layer:
    """One affine layer and its activation.

    Attributes
    ----------
    weight : ndarray
        ``(out, in)`` for a dense layer, ``(out_channels, in_channels, kh, kw)`` for a convolution.
    bias : ndarray (out,)
    activation : {"relu", "none"}
    stride, padding : int
        Convolutions only.
    input_shape : tuple of int
        ``(in,)`` for dense, ``(channels, height, width)`` for a convolution.
    """

    weight: np.ndarray
    bias: np.ndarray
    activation: str
    input_shape: tuple[int, ...]
    stride: int = 1
    padding: int = 0

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

    def activate(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0.0) if self.activation == "relu" else z

    def pre_activation(self, x: np.ndarray) -> np.ndarray:
        """Float64 reference of the affine part, ``(batch, in_size) -> (batch, out_size)``."""
        x = np.asarray(x, dtype=np.float64)
        rows = self.patches(x) @ self.matrix.T + self.bias
        return self.assemble(rows, x.shape[0])


@dataclass(frozen=True)
class Network:
    """A chain of layers, with an optional held-out test set.

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

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Float64 pre-activation outputs of every layer for inputs ``(batch, in_size)``."""
        outputs = []
        for layer in self.layers:
            z = layer.pre_activation(x)
            outputs.append(z)
            x = layer.activate(z)
        return outputs

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float64 class predictions ``(batch,)``."""
        return np.argmax(self.forward(x)[-1], axis=1)


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
) -> Network:
    """Validate raw arrays and chain them into a :class:`Network`."""
    if not weights:
        raise EngineError(f"{name}: no layers found; store layer0.weight, layer1.weight, ...")
    if len(activations) != len(weights):
        raise EngineError(
            f"{name}: {len(activations)} activations for {len(weights)} layers; give one per layer"
        )
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
        layers.append(layer)
        shape = layer.output_shape
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
    )


def _load_onnx(path: Path) -> Network:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise EngineError("reading ONNX needs the onnx package: pip install 'crossbar-ctl[onnx]'") from exc
    try:
        model = onnx.load(str(path))
    except FileNotFoundError as exc:
        raise EngineError(f"{path}: no such network file") from exc
    except Exception as exc:  # onnx raises DecodeError and friends
        raise EngineError(f"{path}: not a readable ONNX model: {exc}") from exc
    graph = model.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights, biases, activations, strides, paddings = [], [], [], [], []

    def const(node, index: int) -> np.ndarray:
        name = node.input[index]
        if name not in inits:
            raise EngineError(f"{path}: {node.op_type} node {node.name!r} input {name!r} is not a constant")
        return inits[name].astype(np.float64)

    for node in graph.node:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op in ("Gemm", "MatMul", "Conv"):
            if op == "Gemm":
                if attrs.get("transA", 0):
                    raise EngineError(f"{path}: Gemm node {node.name!r} with transA is not supported")
                weight = const(node, 1) * attrs.get("alpha", 1.0)
                weight = weight if attrs.get("transB", 0) else weight.T
                bias = const(node, 2) * attrs.get("beta", 1.0) if len(node.input) > 2 else None
            elif op == "MatMul":
                weight, bias = const(node, 1).T, None
            else:
                pads = list(attrs.get("pads", [0, 0, 0, 0]))
                stride = list(attrs.get("strides", [1, 1]))
                if len(set(pads)) > 1 or len(set(stride)) > 1 or attrs.get("group", 1) != 1 \
                        or set(attrs.get("dilations", [1])) != {1}:
                    raise EngineError(
                        f"{path}: Conv node {node.name!r} needs equal pads and strides, group 1, dilation 1"
                    )
                weight = const(node, 1)
                bias = const(node, 2) if len(node.input) > 2 else None
                strides.append(stride[0])
                paddings.append(pads[0])
            if op != "Conv":
                strides.append(1)
                paddings.append(0)
            if bias is not None:
                bias = np.broadcast_to(bias, (weight.shape[0],)).copy()
            weights.append(weight)
            biases.append(bias)
            activations.append("none")
        elif op == "Add":
            if not weights or activations[-1] != "none":
                raise EngineError(f"{path}: Add node {node.name!r} does not follow a MatMul/Gemm/Conv")
            addend = const(node, 1)
            out = weights[-1].shape[0]
            addend = addend.reshape(out) if addend.size == out else np.broadcast_to(addend, (out,))
            biases[-1] = addend if biases[-1] is None else biases[-1] + addend
        elif op == "Relu":
            if not weights:
                raise EngineError(f"{path}: Relu node {node.name!r} before any layer")
            activations[-1] = "relu"
        elif op in ("Flatten", "Reshape", "Identity", "Dropout"):
            continue
        else:
            raise EngineError(
                f"{path}: ONNX operator {op} (node {node.name!r}) is not supported; "
                "use Gemm, MatMul, Add, Relu, Conv, Flatten"
            )
    shape = None
    if graph.input:
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:]
        if dims and all(d > 0 for d in dims):
            shape = tuple(dims)
    return build_network(weights, biases, activations, input_shape=shape, strides=strides,
                  paddings=paddings, name=path.stem)


def load_network(path: str | Path) -> Network:
    """Load and validate a network from ``.npz`` (docs/networks.md) or ``.onnx``.

    Raises
    ------
    EngineError
        Unreadable file, NaN or infinite weights, shapes that don't chain, unsupported operators.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path)
    return _load_npz(path)


def save_network(path: str | Path, network: Network) -> None:
    """Write a network (and its test set) in the ``.npz`` format of docs/networks.md, atomically."""
    import io

    from crossbar_ctl.core.files import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {
        "activations": np.array([layer.activation for layer in network.layers]),
        "name": np.array(network.name),
    }
    for k, layer in enumerate(network.layers):
        arrays[f"layer{k}.weight"] = layer.weight
        arrays[f"layer{k}.bias"] = layer.bias
        if layer.is_conv:
            arrays[f"layer{k}.stride"] = np.array(layer.stride)
            arrays[f"layer{k}.padding"] = np.array(layer.padding)
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
