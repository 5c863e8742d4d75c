"""ONNX import: a model exported from PyTorch (or any ONNX graph of the operators below) as a :class:`Network`.

Gemm, MatMul and Conv go on the array, a BatchNormalization after one is folded into it, and
everything else becomes digital steps (:class:`Op`) between array layers; see docs/networks.md.
Shape arithmetic (``x.view(x.size(0), -1)`` exports Shape, Gather, Unsqueeze and Concat) is
folded while importing. An unsupported operator or graph is refused by operator and node name
before anything is programmed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._network import Layer, Network, Op, build_network

__all__ = ["SUPPORTED_OPS", "load_onnx"]

_ARRAY = ("Gemm", "MatMul", "Conv")
_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
_SHAPES = ("Shape", "Gather", "Unsqueeze", "Concat")  # shape arithmetic
_FOLDED = ("Constant", "Identity", *_SHAPES)  # on constants: folded
SUPPORTED_OPS = (*_ARRAY, "BatchNormalization", "Add", *_ACTIVATIONS, "Clip", "MaxPool", "AveragePool",
                 "GlobalMaxPool", "GlobalAveragePool", "Softmax", "Flatten", "Reshape", "Dropout", *_FOLDED)
_BATCH = -(2**62)  # the batch dimension in a folded shape tensor: no real size


def _constant(attrs: dict, numpy_helper) -> np.ndarray | None:
    """A Constant node's value, whichever attribute holds it (None for sparse or string values)."""
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key in ("value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            return np.array(attrs[key], dtype=np.float32 if "float" in key else np.int64)
    return None


def _pool_pads(op: str, attrs: dict, shape: tuple[int, ...]) -> list[int]:
    """Pads (top, left, bottom, right); ``ceil_mode`` becomes extra bottom and right padding.

    A ceil-mode window may run past the padding but starts inside the input or the top/left
    padding, as ONNX and PyTorch define it; padding never wins a max, and an average counts it
    only with ``count_include_pad`` (refused with extra padding: that region would be counted).
    """
    kernel, strides = attrs["kernel_shape"], list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if not attrs.get("ceil_mode", 0):
        return pads
    for axis in (0, 1):
        size, k, s = shape[1 + axis] + pads[axis] + pads[axis + 2], kernel[axis], strides[axis]
        count = -(-(size - k) // s) + 1
        if (count - 1) * s >= shape[1 + axis] + pads[axis]:  # the last window would start in the padding
            count -= 1
        extra = (count - 1) * s + k - size
        if extra > 0 and op == "AveragePool" and attrs.get("count_include_pad", 0):
            raise EngineError("has ceil_mode 1 with count_include_pad 1 and a window past the padding; "
                              "export with ceil_mode=False or count_include_pad=False")
        pads[axis + 2] += max(extra, 0)
    return pads


def _bias(addend: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A per-output bias from a constant added to a layer's output of per-sample ``shape``.

    None when the constant does not broadcast to one value per output (channel).
    """
    try:
        full = np.broadcast_to(addend, (1, *shape))[0]
    except ValueError:
        return None
    bias = full.reshape(shape[0], -1)[:, 0]
    return bias if np.array_equal(full, np.broadcast_to(bias.reshape(-1, *[1] * (len(shape) - 1)), shape)) else None


def load_onnx(path: Path) -> Network:
    """A chain of Gemm/MatMul/Conv layers, BatchNormalization folded in, digital steps between.

    Values on the chain are tracked by id with their per-sample shapes (Identity, Dropout, Flatten
    and Reshape keep a value's data, which are flat already; Flatten and Reshape of an image add a
    ``flatten`` step); a residual ``Add`` joins the chain's head and the input of an earlier array
    layer. Anything else (a branch through an array layer, a second output) is refused.
    """
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
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [1])
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    feeds = [value for value in graph.input if value.name not in consts]
    if len(feeds) != 1 or len(graph.output) != 1:
        raise EngineError(f"{path}: the graph has {len(feeds)} inputs and {len(graph.output)} outputs; "
                          "one of each is supported")
    dims = [d.dim_value for d in feeds[0].type.tensor_type.shape.dim]
    input_shape = tuple(dims[1:]) if len(dims) > 1 and all(d > 0 for d in dims[1:]) else None
    batch_sizes = {0, _BATCH, dims[0]} if dims and dims[0] > 0 else {0, _BATCH}  # 0: Reshape copies it
    layers: list[dict] = []  # weight, bias, activation, stride, padding, post
    value = {feeds[0].name: 0}  # tensor name -> value id
    shapes = {0: input_shape}  # value id -> per-sample shape (None: unknown)
    layer_inputs: list[int] = []  # value id of each layer's input
    head, raw = 0, False  # the chain's end; whether it is a layer's bare affine output

    def fail(node, why: str) -> EngineError:
        return EngineError(f"{path}: {node.op_type} node {node.name!r} {why}")

    def const(node, index: int) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if name not in consts:
            raise fail(node, f"input {name!r} is not a constant")
        return consts[name]

    def real(node, index: int) -> np.ndarray:
        return const(node, index).astype(np.float64)

    def step(node, op: Op) -> tuple[int, ...]:
        """Append a digital step to the last layer; the chain's new per-sample shape."""
        try:
            shape = op.shape(shapes[head])
        except EngineError as exc:
            raise fail(node, str(exc)) from exc
        layers[-1]["post"].append(op)
        return shape

    for node in graph.node:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        reads = [value.get(name) for name in node.input if name and name not in consts]
        if op in _FOLDED and (not reads or op == "Shape"):
            if op == "Constant":
                folded = _constant(attrs, numpy_helper)
                if folded is None:
                    raise fail(node, "holds no numeric tensor")
            elif op == "Shape":
                known = np.shape(const(node, 0)) if not reads else shapes.get(reads[0])
                if known is None:
                    raise fail(node, "reads a tensor of unknown shape; export with a static input shape "
                                     "(the batch dimension aside)")
                full = [*known] if not reads else [_BATCH, *known]
                folded = np.array(full, dtype=np.int64)[attrs.get("start", 0):attrs.get("end")]
            elif op == "Identity":
                folded = const(node, 0)
            elif op == "Gather":
                folded = np.take(const(node, 0), const(node, 1), axis=attrs.get("axis", 0))
            elif op == "Unsqueeze":
                axes = attrs["axes"] if "axes" in attrs else const(node, 1)
                folded = np.expand_dims(const(node, 0), tuple(int(a) for a in np.ravel(axes)))
            else:
                folded = np.concatenate([const(node, i) for i in range(len(node.input))], axis=attrs["axis"])
            consts[node.output[0]] = folded
            continue
        shape = shapes.get(head)  # the new head's, unless the node changes it
        if op in _SHAPES:
            raise fail(node, "reads the data; only shape arithmetic on constants is folded")
        if op == "Add" and len(reads) == 2:
            if head not in reads or reads[0] == reads[1]:
                raise fail(node, "adds two tensors off the chain; only a residual add to the chain is supported")
            skip = reads[1] if reads[0] == head else reads[0]
            if skip not in layer_inputs or not layers:
                raise fail(node, "adds a tensor that is not an array layer's input; a residual source must be")
            shape = step(node, Op("add", (layer_inputs.index(skip),)))
            raw = False
        elif reads != [head]:
            raise fail(node, "reads a tensor off the chain; only chains with residual adds are supported")
        elif op in _ARRAY:
            stride = padding = 0
            if op == "Gemm":
                if attrs.get("transA", 0):
                    raise fail(node, "with transA is not supported")
                weight = real(node, 1) * attrs.get("alpha", 1.0)
                weight = weight if attrs.get("transB", 0) else weight.T
                bias = real(node, 2) * attrs.get("beta", 1.0) if len(node.input) > 2 and node.input[2] else None
            elif op == "MatMul":
                weight, bias = real(node, 1).T, None
            else:
                pads, strides = list(attrs.get("pads", [0, 0, 0, 0])), list(attrs.get("strides", [1, 1]))
                if len(set(pads)) > 1 or len(set(strides)) > 1 or attrs.get("group", 1) != 1 \
                        or set(attrs.get("dilations", [1])) != {1} \
                        or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
                    raise fail(node, "needs equal pads and strides, group 1, dilation 1, no auto_pad")
                weight = real(node, 1)
                bias = real(node, 2) if len(node.input) > 2 and node.input[2] else None
                stride, padding = strides[0], pads[0]
            if weight.ndim != (4 if op == "Conv" else 2):
                raise fail(node, f"has a weight of shape {weight.shape}; a 2-D "
                                 f"{'convolution' if op == 'Conv' else 'matrix'} is needed")
            out = weight.shape[0]
            bias = np.zeros(out) if bias is None else _bias(bias, (out,))
            if bias is None:
                raise fail(node, f"has a bias that is not one value per output ({out})")
            shape = (out,)
            if weight.ndim == 4:
                if shapes[head] is None or len(shapes[head]) != 3:
                    raise fail(node, f"needs an image (channels, height, width) as its input; it has "
                                     f"{shapes[head]} (export with a static input shape)")
                shape = Layer(weight, bias, "none", shapes[head], stride or 1, padding).output_shape
            layer_inputs.append(head)
            layers.append({"weight": weight, "bias": bias, "activation": "none", "post": [],
                           "stride": stride or 1, "padding": padding})
            raw = True
        elif op == "BatchNormalization":
            if not raw:
                raise fail(node, "does not directly follow a Gemm, MatMul or Conv; it is folded into one")
            if attrs.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
                raise fail(node, "is in training mode; export the model in eval mode")
            gamma, beta, mean, var = (real(node, i).reshape(-1) for i in range(1, 5))
            last = layers[-1]
            if len(gamma) != last["weight"].shape[0]:
                raise fail(node, f"normalises {len(gamma)} channels but its layer has {last['weight'].shape[0]}")
            scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
            last["weight"] = last["weight"] * scale.reshape(-1, *[1] * (last["weight"].ndim - 1))
            last["bias"] = (last["bias"] - mean) * scale + beta
        elif op == "Add":
            if not raw:
                raise fail(node, "adds a constant but does not directly follow a Gemm, MatMul or Conv")
            addend = real(node, 1 if node.input[0] not in consts else 0)
            bias = _bias(addend, shape)
            if bias is None:
                raise fail(node, f"adds a constant of shape {addend.shape}; a per-output (per-channel) bias "
                                 f"for {shape} is needed")
            layers[-1]["bias"] = layers[-1]["bias"] + bias
        elif op in ("Identity", "Dropout"):
            if len(node.input) > 2 and node.input[2] and const(node, 2).any():
                raise fail(node, "is in training mode; export the model in eval mode")
            value[node.output[0]] = head  # the same data
            continue
        elif op in ("Flatten", "Reshape"):
            size = None if shape is None else int(np.prod(shape))
            if op == "Flatten" and attrs.get("axis", 1) != 1:
                raise fail(node, "needs axis 1 (one flat vector per sample)")
            if op == "Reshape":
                target = [int(t) for t in const(node, 1).reshape(-1)]
                flat = len(target) == 2 and (
                    (target[0] in batch_sizes and target[1] in (-1, size)) or (target[0] == -1 and target[1] == size))
                if not flat:
                    shown = ["batch" if t == _BATCH else t for t in target]
                    raise fail(node, f"reshapes {shape} to {shown}; only flattening to (batch, size) is supported")
            if shape is None or len(shape) == 1:
                value[node.output[0]] = head  # the same data
                continue
            if layers:
                shape = step(node, Op("flatten"))  # the data are flat already: the step names it
                raw = False
            else:
                shape = (size,)  # the network's input is flat data anyway
        elif not layers:
            raise fail(node, "comes before any Gemm, MatMul or Conv; the network's input goes to the array")
        elif op in _ACTIVATIONS:
            if raw:
                layers[-1]["activation"] = _ACTIVATIONS[op]
            else:
                shape = step(node, Op(_ACTIVATIONS[op]))
            raw = False
        elif op == "Clip":
            bounds = [attrs.get("min", -np.inf), attrs.get("max", np.inf)]
            for i in (1, 2):
                if len(node.input) > i and node.input[i]:
                    bounds[i - 1] = float(real(node, i))
            shape = step(node, Op("clip", tuple(bounds)))
            raw = False
        elif op in ("MaxPool", "AveragePool"):
            kernel = list(attrs.get("kernel_shape", []))
            if len(kernel) != 2 or set(attrs.get("dilations", [1])) != {1} \
                    or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or len(node.output) > 1:
                raise fail(node, "needs a 2-D kernel, dilation 1, no auto_pad and one output")
            if shape is None or len(shape) != 3:
                raise fail(node, f"needs an image (channels, height, width); its input is {shape}")
            try:
                pads = _pool_pads(op, attrs, shape)
            except EngineError as exc:
                raise fail(node, str(exc)) from exc
            args = [*kernel, *attrs.get("strides", [1, 1]), *pads]  # ONNX pads: top, left, bottom, right
            if op == "AveragePool":
                args.append(attrs.get("count_include_pad", 0))
            shape = step(node, Op("maxpool" if op == "MaxPool" else "avgpool", tuple(args)))
            raw = False
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            if shape is None or len(shape) != 3:
                raise fail(node, f"needs an image (channels, height, width); its input is {shape}")
            whole = Op("maxpool", (*shape[1:], 1, 1, 0, 0, 0, 0))  # one window over the image
            shape = step(node, Op("globalavgpool") if op == "GlobalAveragePool" else whole)
            raw = False
        elif op == "Softmax":
            if attrs.get("axis", -1 if opset >= 13 else 1) not in (1, -1):
                raise fail(node, "needs axis 1 (over each sample's flat vector)")
            shape = step(node, Op("softmax"))
            raw = False
        else:
            raise fail(node, f"is ONNX operator {op}, which is not supported; supported: {', '.join(SUPPORTED_OPS)}")
        head = len(value)
        shapes[head] = shape
        value[node.output[0]] = head
    if value.get(graph.output[0].name) != head:
        raise EngineError(f"{path}: the graph's output {graph.output[0].name!r} is not the end of the chain")
    try:
        return build_network([a["weight"] for a in layers], [a["bias"] for a in layers],
                             [a["activation"] for a in layers], input_shape=input_shape,
                             strides=[a["stride"] for a in layers], paddings=[a["padding"] for a in layers],
                             name=path.stem, posts=[a["post"] for a in layers])
    except EngineError as exc:
        raise EngineError(f"{path}: {exc}") from exc
