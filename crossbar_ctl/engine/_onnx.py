"""ONNX import: a model exported from PyTorch (or any ONNX graph of the operators below) as a :class:`Network`.

Gemm, MatMul and Conv go on the array, a BatchNormalization after one is folded into it, and
everything else becomes digital steps (:class:`Op`) between array layers; see docs/networks.md.
An unsupported operator or graph is refused by operator and node name before anything is
programmed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._network import Network, Op, build_network

__all__ = ["load_onnx"]

_ONNX_OPS = ("Gemm, MatMul, Conv, BatchNormalization, Add, Relu, Sigmoid, Tanh, Clip, MaxPool, AveragePool, "
             "GlobalAveragePool, Softmax, Flatten, Reshape, Identity, Dropout, Constant")


def load_onnx(path: Path) -> Network:
    """A chain of Gemm/MatMul/Conv layers, BatchNormalization folded in, digital steps between.

    Values are tracked by id (Identity, Dropout, Flatten and Reshape keep a value's id, the data
    being flat already); a residual ``Add`` joins the chain's head and the input of an earlier array
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
    dims = [d.dim_value for d in feeds[0].type.tensor_type.shape.dim][1:]
    shape = tuple(dims) if dims and all(d > 0 for d in dims) else None
    layers: list[dict] = []  # weight, bias, activation, stride, padding, post
    value = {feeds[0].name: 0}  # tensor name -> value id
    layer_inputs: list[int] = []  # value id of each layer's input
    head, raw = 0, False  # the chain's end; whether it is a layer's bare affine output

    for node in graph.node:
        op = node.op_type

        def fail(why: str, node=node) -> EngineError:
            return EngineError(f"{path}: {node.op_type} node {node.name!r} {why}")

        def const(index: int) -> np.ndarray:
            name = node.input[index] if index < len(node.input) else ""
            if name not in consts:
                raise fail(f"input {name!r} is not a constant")
            return consts[name].astype(np.float64)

        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Constant":
            if "value" not in attrs:
                raise fail("holds no tensor value")
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        reads = [value.get(name) for name in node.input if name and name not in consts]
        if op == "Add" and len(reads) == 2:
            if head not in reads or reads[0] == reads[1]:
                raise fail("adds two tensors off the chain; only a residual add to the chain is supported")
            skip = reads[1] if reads[0] == head else reads[0]
            if skip not in layer_inputs or not layers:
                raise fail("adds a tensor that is not an array layer's input; a residual source must be")
            layers[-1]["post"].append(Op("add", (layer_inputs.index(skip),)))
            raw = False
        elif reads != [head]:
            raise fail("reads a tensor off the chain; only chains with residual adds are supported")
        elif op in ("Gemm", "MatMul", "Conv"):
            stride = padding = 0
            if op == "Gemm":
                if attrs.get("transA", 0):
                    raise fail("with transA is not supported")
                weight = const(1) * attrs.get("alpha", 1.0)
                weight = weight if attrs.get("transB", 0) else weight.T
                bias = const(2) * attrs.get("beta", 1.0) if len(node.input) > 2 and node.input[2] else None
            elif op == "MatMul":
                weight, bias = const(1).T, None
            else:
                pads, strides = list(attrs.get("pads", [0, 0, 0, 0])), list(attrs.get("strides", [1, 1]))
                if len(set(pads)) > 1 or len(set(strides)) > 1 or attrs.get("group", 1) != 1 \
                        or set(attrs.get("dilations", [1])) != {1} \
                        or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
                    raise fail("needs equal pads and strides, group 1, dilation 1, no auto_pad")
                weight = const(1)
                bias = const(2) if len(node.input) > 2 and node.input[2] else None
                stride, padding = strides[0], pads[0]
            if weight.ndim not in (2, 4):
                raise fail(f"has a weight of shape {weight.shape}; a 2-D matrix or a 2-D convolution is needed")
            out = weight.shape[0]
            bias = np.zeros(out) if bias is None else np.broadcast_to(bias.reshape(-1), (out,)).copy()
            layer_inputs.append(head)
            layers.append({"weight": weight, "bias": bias, "activation": "none", "post": [],
                           "stride": stride or 1, "padding": padding})
            raw = True
        elif op == "BatchNormalization":
            if not raw:
                raise fail("does not directly follow a Gemm, MatMul or Conv; it is folded into one")
            if attrs.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
                raise fail("is in training mode; export the model in eval mode")
            gamma, beta, mean, var = (const(i) for i in range(1, 5))
            scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
            last = layers[-1]
            last["weight"] = last["weight"] * scale.reshape(-1, *[1] * (last["weight"].ndim - 1))
            last["bias"] = (last["bias"] - mean) * scale + beta
        elif op == "Add":
            if not raw:
                raise fail("adds a constant but does not directly follow a Gemm, MatMul or Conv")
            addend, last = const(1 if node.input[0] not in consts else 0), layers[-1]
            out = last["weight"].shape[0]
            if addend.size != out and addend.size != 1:
                raise fail(f"adds a constant of shape {addend.shape}; a per-output bias ({out} values) is needed")
            last["bias"] = last["bias"] + addend.reshape(-1)
        elif op in ("Identity", "Dropout", "Flatten", "Reshape"):
            if op == "Flatten" and attrs.get("axis", 1) != 1:
                raise fail("needs axis 1 (one flat vector per sample)")
            if op == "Reshape" and len(const(1).reshape(-1)) != 2:
                raise fail(f"reshapes to {const(1).astype(int).tolist()}; only flattening to (batch, size) "
                           "is supported")
            value[node.output[0]] = head  # the data are flat: no step
            continue
        elif not layers:
            raise fail("comes before any Gemm, MatMul or Conv; the network's input goes to the array")
        elif op in ("Relu", "Sigmoid", "Tanh"):
            if raw:
                layers[-1]["activation"] = op.lower()
            else:
                layers[-1]["post"].append(Op(op.lower()))
            raw = False
        elif op == "Clip":
            bounds = [attrs.get("min", -np.inf), attrs.get("max", np.inf)]
            for i in (1, 2):
                if len(node.input) > i and node.input[i]:
                    bounds[i - 1] = float(const(i))
            layers[-1]["post"].append(Op("clip", tuple(bounds)))
            raw = False
        elif op in ("MaxPool", "AveragePool"):
            kernel = list(attrs.get("kernel_shape", []))
            if len(kernel) != 2 or attrs.get("ceil_mode", 0) or set(attrs.get("dilations", [1])) != {1} \
                    or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or len(node.output) > 1:
                raise fail("needs a 2-D kernel, ceil_mode 0, dilation 1, no auto_pad and one output")
            # ONNX pads: top, left, bottom, right, as Op's
            args = [*kernel, *attrs.get("strides", [1, 1]), *attrs.get("pads", [0, 0, 0, 0])]
            if op == "AveragePool":
                args.append(attrs.get("count_include_pad", 0))
            layers[-1]["post"].append(Op("maxpool" if op == "MaxPool" else "avgpool", tuple(args)))
            raw = False
        elif op == "GlobalAveragePool":
            layers[-1]["post"].append(Op("globalavgpool"))
            raw = False
        elif op == "Softmax":
            if attrs.get("axis", -1 if opset >= 13 else 1) not in (1, -1):
                raise fail("needs axis 1 (over each sample's flat vector)")
            layers[-1]["post"].append(Op("softmax"))
            raw = False
        else:
            raise fail(f"is ONNX operator {op}, which is not supported; supported: {_ONNX_OPS}")
        head = len(value)
        value[node.output[0]] = head
    if value.get(graph.output[0].name) != head:
        raise EngineError(f"{path}: the graph's output {graph.output[0].name!r} is not the end of the chain")
    try:
        return build_network([a["weight"] for a in layers], [a["bias"] for a in layers],
                             [a["activation"] for a in layers], input_shape=shape,
                             strides=[a["stride"] for a in layers], paddings=[a["padding"] for a in layers],
                             name=path.stem, posts=[a["post"] for a in layers])
    except EngineError as exc:
        raise EngineError(f"{path}: {exc}") from exc
