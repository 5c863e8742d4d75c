"""Every supported ONNX operator against onnxruntime to 1e-9, and the refusals of what is not.

onnxruntime runs the dense operators in float64. It has no float64 kernel for Conv, AveragePool
or GlobalAveragePool, so those graphs run in float32 on integer data scaled by 2520 (divisible by
every window count up to 10): every product, sum and mean is then exact in float32, and 1e-9 is a
real bound. The same graphs also run in float64 on real-valued data through onnx's reference
evaluator, so nothing rests on integer inputs alone.
"""

import numpy as np
import pytest

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._network import load_network

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

TOLERANCE = 1e-9  # relative to the largest output
node = helper.make_node


def _model(nodes, inits, in_shape, dtype, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", dtype, ["batch", *in_shape])],
        [helper.make_tensor_value_info("y", dtype, None)],
        [numpy_helper.from_array(v.astype(np.float64 if dtype == TensorProto.DOUBLE else np.float32)
                                 if v.dtype.kind == "f" else v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _ours(model, tmp_path, x):
    onnx.save(model, str(tmp_path / "m.onnx"))
    return load_network(tmp_path / "m.onnx").output(x.reshape(len(x), -1))


def _ort(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].reshape(len(x), -1)


def _close(ours, reference):
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) <= TOLERANCE * np.max(np.abs(reference))


DENSE = {  # on a (batch, 5) input: Gemm first
    "gemm-alpha-beta": [node("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0, transB=1)],
    "gemm-no-transB": [node("Gemm", ["x", "wt", "b"], ["y"])],
    "gemm-bias-row": [node("Gemm", ["x", "w", "b_row"], ["y"], transB=1)],
    "matmul-add": [node("MatMul", ["x", "wt"], ["m"]), node("Add", ["b", "m"], ["y"])],
    "batchnorm": [node("Gemm", ["x", "w"], ["g"], transB=1),
                  node("BatchNormalization", ["g", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)],
    "relu": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Relu", ["z"], ["y"])],
    "sigmoid": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Sigmoid", ["z"], ["y"])],
    "tanh": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Tanh", ["z"], ["y"])],
    "clip": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Clip", ["z", "lo", "hi"], ["y"])],
    "clip-max": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Clip", ["z", "", "hi"], ["y"])],
    "softmax": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Softmax", ["z"], ["y"])],
    "steps-chain": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Relu", ["z"], ["r"]),
                    node("Sigmoid", ["r"], ["s"]), node("Softmax", ["s"], ["y"])],
    "residual-add": [node("Gemm", ["x", "w", "b"], ["h"], transB=1), node("Relu", ["h"], ["r"]),
                     node("Gemm", ["r", "v"], ["g"], transB=1), node("Tanh", ["g"], ["t"]),
                     node("Add", ["t", "r"], ["y"])],
    "residual-add-input": [node("Gemm", ["x", "u"], ["h"], transB=1), node("Add", ["x", "h"], ["y"])],
    "identity-dropout-flatten": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Identity", ["z"], ["i"]),
                                 node("Dropout", ["i"], ["d"]), node("Flatten", ["d"], ["y"])],
    "reshape": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Reshape", ["z", "flat"], ["y"])],
    "shape-arithmetic": [node("Gemm", ["x", "w", "b"], ["z"], transB=1), node("Shape", ["z"], ["s"]),
                         node("Gather", ["s", "zero"], ["n"], axis=0), node("Unsqueeze", ["n", "axes"], ["n1"]),
                         node("Concat", ["n1", "minus_one"], ["target"], axis=0),
                         node("Reshape", ["z", "target"], ["y"])],
    "shared-weight-identity": [node("Identity", ["w"], ["w2"]), node("Gemm", ["x", "w2", "b"], ["y"], transB=1)],
}


def _dense_inits(rng):
    w = rng.normal(size=(6, 5))
    return {"w": w, "wt": w.T.copy(), "b": rng.normal(size=6), "b_row": rng.normal(size=(1, 6)),
            "u": rng.normal(size=(5, 5)), "v": rng.normal(size=(6, 6)),
            "gamma": rng.uniform(0.5, 2, 6), "beta": rng.normal(size=6), "mean": rng.normal(size=6),
            "var": rng.uniform(0.1, 3, 6), "lo": np.array(-0.5), "hi": np.array(0.75),
            "flat": np.array([0, -1]), "zero": np.array(0), "axes": np.array([0]), "minus_one": np.array([-1])}


@pytest.mark.parametrize("name", DENSE)
def test_dense_operators_match_onnxruntime_in_float64(name, tmp_path):
    rng = np.random.default_rng(0)
    model = _model(DENSE[name], _dense_inits(rng), [5], TensorProto.DOUBLE)
    x = rng.normal(size=(40, 5))
    _close(_ours(model, tmp_path, x), _ort(model, x))


conv = node("Conv", ["x", "w", "bias"], ["c"], pads=[1, 1, 1, 1])  # (batch, 2, 7, 6) -> (batch, 3, 7, 6)
CONV = {
    "conv": [node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1])],
    "conv-strided": [node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
    "conv-no-bias": [node("Conv", ["x", "w"], ["y"])],
    "conv-add-bias": [conv, node("Add", ["c", "chan"], ["y"])],
    "conv-batchnorm": [conv, node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=0.0)],
    "maxpool": [conv, node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
    "maxpool-padded": [conv, node("MaxPool", ["c"], ["y"], kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1])],
    "maxpool-ceil": [conv, node("MaxPool", ["c"], ["y"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1],
                                ceil_mode=1)],
    "avgpool": [conv, node("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
    "avgpool-padded": [conv, node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 1],
                                  pads=[1, 1, 1, 1])],
    "avgpool-count-pad": [conv, node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 0],
                                     count_include_pad=1)],
    "avgpool-ceil": [conv, node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
    "global-avgpool": [conv, node("GlobalAveragePool", ["c"], ["y"])],
    "global-maxpool": [conv, node("GlobalMaxPool", ["c"], ["y"])],
    "relu-flatten-gemm": [conv, node("Relu", ["c"], ["r"]), node("Flatten", ["r"], ["f"]),
                          node("Gemm", ["f", "dense"], ["y"], transB=1)],
    "residual-conv": [conv, node("Relu", ["c"], ["r"]), node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
                      node("Add", ["r", "c2"], ["y"])],
}


def _conv_inits(draw):
    """Initializers from ``draw(shape)``; batch-norm statistics that keep float32 exact (epsilon 0)."""
    return {"w": draw((3, 2, 3, 3)), "bias": draw((3,)), "chan": draw((1, 3, 1, 1)), "w2": draw((3, 3, 3, 3)),
            "dense": draw((4, 3 * 7 * 6)), "gamma": draw((3,)), "beta": draw((3,)), "mean": draw((3,)),
            "var": np.full(3, 4.0)}


@pytest.mark.parametrize("name", CONV)
def test_image_operators_match_onnxruntime(name, tmp_path):
    rng = np.random.default_rng(1)
    exact = _conv_inits(lambda shape: rng.integers(-3, 4, size=shape).astype(np.float64))
    exact["w"], exact["bias"] = exact["w"] * 2520, exact["bias"] * 2520  # the first layer's outputs too
    x = rng.integers(-3, 4, size=(8, 2, 7, 6)).astype(np.float64)
    model = _model(CONV[name], exact, [2, 7, 6], TensorProto.FLOAT)
    _close(_ours(model, tmp_path, x), _ort(model, x.astype(np.float32)).astype(np.float64))

    real = _conv_inits(lambda shape: rng.normal(size=shape))
    real["var"] = rng.uniform(0.1, 3, 3)
    model = _model(CONV[name], real, [2, 7, 6], TensorProto.DOUBLE)
    x = rng.normal(size=(8, 2, 7, 6))
    reference = ReferenceEvaluator(model).run(None, {"x": x})[0].reshape(len(x), -1)
    _close(_ours(model, tmp_path, x), reference)


def test_softmax_of_a_flattened_image_matches_the_reference_evaluator(tmp_path):
    """Conv, Flatten, Softmax: the flatten becomes a step, so the softmax runs over the flat vector."""
    rng = np.random.default_rng(2)
    nodes = [node("Conv", ["x", "w"], ["c"]), node("Flatten", ["c"], ["f"]), node("Softmax", ["f"], ["y"])]
    model = _model(nodes, {"w": rng.normal(size=(2, 2, 3, 3))}, [2, 5, 5], TensorProto.DOUBLE)
    x = rng.normal(size=(6, 2, 5, 5))
    _close(_ours(model, tmp_path, x), ReferenceEvaluator(model).run(None, {"x": x})[0])
    assert [str(op) for op in load_network(tmp_path / "m.onnx").layers[0].post] == ["flatten", "softmax"]


def _conv_then(*after):
    return [node("Conv", ["x", "w"], ["c"]), *after]


@pytest.mark.parametrize("nodes, said", [
    ([node("Gemm", ["x", "m"], ["z"], transB=1), node("Reshape", ["z", "half"], ["y"], name="r")],
     r"Reshape node 'r' reshapes \(6,\) to \[-1, 3\]"),
    (_conv_then(node("Add", ["c", "row"], ["y"], name="bias")),
     r"Add node 'bias' adds a constant of shape \(3,\); a per-output"),
    (_conv_then(node("Flatten", ["c"], ["f"]), node("BatchNormalization", ["f", "s", "s", "s", "s"], ["y"],
                                                    name="late")),
     "BatchNormalization node 'late' does not directly follow"),
    (_conv_then(node("BatchNormalization", ["c", "s2", "s2", "s2", "s2"], ["y"], name="bn")),
     "BatchNormalization node 'bn' normalises 2 channels but its layer has 3"),
    (_conv_then(node("AveragePool", ["c"], ["y"], name="p", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                     count_include_pad=1)),
     "AveragePool node 'p' has ceil_mode 1 with count_include_pad 1"),
    (_conv_then(node("MaxPool", ["c"], ["y"], name="p", kernel_shape=[2, 2], dilations=[2, 2])),
     "MaxPool node 'p' needs a 2-D kernel, dilation 1"),
    ([node("Conv", ["x", "w"], ["y"], name="c", strides=[1, 2])], "Conv node 'c' needs equal pads and strides"),
    (_conv_then(node("Gather", ["c", "zero"], ["y"], name="g")), "Gather node 'g' reads the data"),
    ([node("Gemm", ["x", "w"], ["y"], name="g", transB=1)], "Gemm node 'g' has a weight of shape"),
], ids=["reshape", "bias-along-width", "late-batchnorm", "batchnorm-channels", "ceil-count-pad", "dilation",
        "conv-strides", "gather-data", "gemm-4d-weight"])
def test_unsupported_attributes_are_refused_by_node(nodes, said, tmp_path):
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(size=(3, 2, 3, 3)), "m": rng.normal(size=(6, 6)), "half": np.array([-1, 3]),
             "row": rng.normal(size=3), "s": np.ones(3), "s2": np.ones(2), "zero": np.array(0)}
    model = _model(nodes, inits, [6] if "m" in nodes[0].input else [2, 5, 3], TensorProto.DOUBLE)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(EngineError, match=said) as info:
        load_network(tmp_path / "m.onnx")
    assert "\n" not in str(info.value)


def test_shape_of_a_dynamic_input_is_refused(tmp_path):
    nodes = [node("Shape", ["x"], ["s"], name="s"), node("Gemm", ["x", "w"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", "n"])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
                              [numpy_helper.from_array(np.ones((2, 4)), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(EngineError, match="Shape node 's' reads a tensor of unknown shape"):
        load_network(tmp_path / "m.onnx")
