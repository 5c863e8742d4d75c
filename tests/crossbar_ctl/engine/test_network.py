"""Networks in: .npz and ONNX loading, validation, im2col against a naive convolution."""

import numpy as np
import pytest

from crossbar_ctl.engine._network import build_network, im2col, load_network, save_network
from crossbar_ctl.core.errors import EngineError


def _dense(rng, sizes):
    weights = [rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=o) for o in sizes[1:]]
    acts = ["relu"] * (len(weights) - 1) + ["none"]
    return weights, biases, acts


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _naive_conv(x, w, b, stride, padding):
    batch, _, height, width = x.shape
    out_c, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (height + 2 * padding - kh) // stride + 1
    out_w = (width + 2 * padding - kw) // stride + 1
    y = np.zeros((batch, out_c, out_h, out_w))
    for n in range(batch):
        for o in range(out_c):
            for i in range(out_h):
                for j in range(out_w):
                    patch = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, o, i, j] = np.sum(patch * w[o]) + b[o]
    return y


def test_shipped_digits_network_loads_and_is_accurate():
    from importlib.resources import files

    network = load_network(files("crossbar_ctl") / "data" / "digits_mlp.npz")
    assert [layer.matrix.shape for layer in network.layers] == [(32, 64), (10, 32)]
    assert network.test_x.shape == (360, 64) and network.test_y.shape == (360,)
    assert 0.0 <= network.test_x.min() and network.test_x.max() <= 1.0
    assert np.mean(network.predict(network.test_x) == network.test_y) > 0.94


def test_npz_round_trip_and_forward(tmp_path):
    rng = np.random.default_rng(0)
    weights, biases, acts = _dense(rng, [5, 4, 3])
    path = _save(tmp_path / "net.npz", **{"layer0.weight": weights[0], "layer0.bias": biases[0],
                                          "layer1.weight": weights[1], "layer1.bias": biases[1],
                                          "activations": np.array(acts)})
    network = load_network(path)
    x = rng.normal(size=(7, 5))
    hidden = np.maximum(x @ weights[0].T + biases[0], 0)
    np.testing.assert_allclose(network.forward(x)[1], hidden @ weights[1].T + biases[1])
    save_network(tmp_path / "again.npz", network)
    again = load_network(tmp_path / "again.npz")
    np.testing.assert_array_equal(again.layers[1].weight, weights[1])


def test_im2col_conv_matches_naive_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6, 5))
    w = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=4)
    for stride, padding in [(1, 0), (2, 1), (1, 2)]:
        network = build_network([w], [b], ["none"], input_shape=(3, 6, 5), strides=[stride],
                                paddings=[padding], name="conv")
        got = network.forward(x.reshape(2, -1))[0]
        np.testing.assert_allclose(got, _naive_conv(x, w, b, stride, padding).reshape(2, -1))
    assert im2col(x, (3, 2)).shape == (2 * 4 * 4, 18)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.__setitem__("layer1.weight", np.full((3, 4), np.nan)), "NaN"),
        (lambda a: a.__setitem__("layer1.weight", np.ones((3, 5))), "don't chain|chain"),
        (lambda a: a.__setitem__("layer0.bias", np.ones(3)), "layer0.bias"),
        (lambda a: a.__setitem__("extra", np.ones(3)), "unknown key"),
        (lambda a: a.__setitem__("activations", np.array(["relu", "swish"])), "swish"),
        (lambda a: a.__setitem__("layer0.post", np.array(["maxpool 2 2 2 2 0 0 0 0"])), "maxpool needs an image"),
        (lambda a: a.__setitem__("layer1.post", np.array(["softmax", "add 0"])), "adds 5 values to 3"),
        (lambda a: a.__setitem__("layer0.post", np.array(["clip 1 0"])), "min <= max"),
        (lambda a: a.__setitem__("layer0.post", np.array(["mean"])), "'mean' is not supported"),
        (lambda a: a.__setitem__("schema_version", np.array(3)), "newer than this crossbar-ctl reads"),
        (lambda a: a.pop("layer0.weight"), "numbered"),
    ],
)
def test_bad_npz_is_one_line_engine_error(tmp_path, change, message):
    rng = np.random.default_rng(2)
    weights, biases, acts = _dense(rng, [5, 4, 3])
    arrays = {"layer0.weight": weights[0], "layer0.bias": biases[0], "layer1.weight": weights[1],
              "activations": np.array(acts)}
    change(arrays)
    with pytest.raises(EngineError, match=message) as info:
        load_network(_save(tmp_path / "bad.npz", **arrays))
    assert "\n" not in str(info.value)


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, **{"layer0.weight": np.array([object()], dtype=object)})
    with pytest.raises(EngineError, match="never pickles") as info:
        load_network(path)
    assert "allow_pickle" not in str(info.value)


@pytest.mark.parametrize("content", [b"weights: 1 2 3\n", np.random.default_rng(5).bytes(2048)],
                         ids=["text", "random"])
def test_a_file_that_is_not_npz_is_named_plainly(tmp_path, content):
    from crossbar_ctl.engine._network import load_dataset

    path = tmp_path / "w.npz"
    path.write_bytes(content)
    for load in (load_network, load_dataset):
        with pytest.raises(EngineError, match=r"not an \.npz file \((it holds text|unrecognised binary)") as info:
            load(path)
        assert "pickle" not in str(info.value)


def test_onnx_gemm_matmul_add_relu_conv(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    wc = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    bc = rng.normal(size=2).astype(np.float32)
    w1 = rng.normal(size=(8, 32)).astype(np.float32)  # Gemm, transB=1: (out, in)
    b1 = rng.normal(size=8).astype(np.float32)
    w2 = rng.normal(size=(8, 3)).astype(np.float32)  # MatMul: (in, out)
    b2 = rng.normal(size=3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(wc, "wc"), (bc, "bc"), (w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["cr"]),
        helper.make_node("Flatten", ["cr"], ["f"]),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    path = tmp_path / "net.onnx"
    onnx.save(helper.make_model(graph), str(path))
    network = load_network(path)
    assert [layer.activation for layer in network.layers] == ["relu", "relu", "none"]
    x = rng.normal(size=(2, 1, 8, 8))
    conv = np.maximum(_naive_conv(x, wc.astype(float), bc.astype(float), 2, 1), 0).reshape(2, -1)
    hidden = np.maximum(conv @ w1.T.astype(float) + b1, 0)
    np.testing.assert_allclose(network.forward(x.reshape(2, -1))[-1], hidden @ w2 + b2, rtol=1e-6)


def test_onnx_unsupported_operator(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Selu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "s.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(EngineError, match="Selu"):
        load_network(path)


def test_public_op_builds_the_same_network_as_its_text_form():
    import crossbar_ctl

    rng = np.random.default_rng(11)
    weights, biases, acts = _dense(rng, [5, 4, 3])
    common = dict(input_shape=None, strides=[1, 1], paddings=[0, 0], name="steps")
    steps = [[crossbar_ctl.Op("clip", (-0.5, 0.5))], [crossbar_ctl.Op("softmax")]]
    by_op = crossbar_ctl.build_network(weights, biases, acts, **common, posts=steps)
    by_text = build_network(weights, biases, acts, **common, posts=[["clip -0.5 0.5"], ["softmax"]])
    assert [layer.post for layer in by_op.layers] == [layer.post for layer in by_text.layers]
    x = rng.normal(size=(6, 5))
    np.testing.assert_array_equal(by_op.output(x), by_text.output(x))


def test_flatten_step_makes_an_image_flat_and_only_changes_its_shape():
    rng = np.random.default_rng(12)
    common = {"input_shape": (1, 4, 4), "strides": [1], "paddings": [0], "name": "flat"}
    net = build_network([rng.normal(size=(2, 1, 3, 3))], [None], ["relu"], **common,
                        posts=[["flatten", "softmax"]])
    assert net.layers[0].result_shape == (8,)
    x = rng.normal(size=(3, 16))
    z = np.maximum(net.forward(x)[0], 0)
    np.testing.assert_allclose(net.output(x), np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    with pytest.raises(EngineError, match="maxpool needs an image"):
        build_network([rng.normal(size=(2, 1, 3, 3))], [None], ["relu"], **common,
                      posts=[["flatten", "maxpool 1 1 1 1 0 0 0 0"]])
