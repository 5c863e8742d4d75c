"""ONNX import: the exported PyTorch fixtures against onnxruntime, BatchNormalization folding,
refusals by name, the network file round trip, and program + check on a simulated lab.

The fixtures in ``data/`` are written by ``scripts/export_onnx_models.py`` (torch 2.13, CPU),
trained on the digits' training split; ``digits`` below is their 360 held-out test digits. Every
operator alone: test_onnx_ops.py; a live export from PyTorch: test_onnx_torch.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._network import load_network, save_network

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).parent / "data"
MODELS = {"lenet_digits": (1, 8, 8), "resmlp_digits": (64,)}
F32 = 1e-5  # float32 inference against float64: about 100 float32 epsilons on outputs of order 1


@pytest.fixture(scope="module")
def digits():
    data = np.load(Path(__file__).parents[3] / "crossbar_ctl" / "data" / "digits_mlp.npz", allow_pickle=False)
    return data["test.x"], data["test.y"]


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _model(nodes, inits, in_shape, out_shape, dtype=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", dtype, ["batch", *in_shape])],
        [helper.make_tensor_value_info("y", dtype, ["batch", *out_shape])],
        [numpy_helper.from_array(value, name) for name, value in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _load(model, tmp_path, name="m.onnx"):
    onnx.save(model, str(tmp_path / name))
    return load_network(tmp_path / name)


@pytest.mark.parametrize("name", MODELS)
def test_exported_models_match_onnxruntime(name, digits):
    x, y = digits
    path = DATA / f"{name}.onnx"
    assert path.stat().st_size < 200_000
    network = load_network(path)
    reference = _run(onnx.load(str(path)), x.reshape(len(x), *MODELS[name]).astype(np.float32))
    output = network.output(x)
    assert np.max(np.abs(output - reference)) < F32
    np.testing.assert_array_equal(network.predict(x), np.argmax(reference, axis=1))
    assert np.mean(network.predict(x) == y) >= 0.95  # held out from training: 0.972 and 0.964 measured


def test_exported_models_structure():
    lenet, resmlp = (load_network(DATA / f"{name}.onnx") for name in MODELS)
    assert [(layer.is_conv, layer.activation, [str(op) for op in layer.post]) for layer in lenet.layers] == [
        (True, "relu", ["maxpool 2 2 2 2 0 0 0 0"]), (True, "relu", ["flatten"]), (False, "none", ["softmax"])]
    assert [[str(op) for op in layer.post] for layer in resmlp.layers] == [[], [], ["add 1"], ["softmax"]]


def _double(model):
    """The same model in float64."""
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.DOUBLE
    return model


@pytest.mark.parametrize("name", MODELS)
def test_exported_models_match_in_float64(name, digits):
    """onnxruntime for the MLP; for the CNN onnx's reference evaluator (onnxruntime has no float64
    Conv; test_onnx_ops.py checks Conv against onnxruntime on data where float32 is exact)."""
    from onnx.reference import ReferenceEvaluator

    x, _ = digits
    path = DATA / f"{name}.onnx"
    model = _double(onnx.load(str(path)))
    x_in = x.reshape(len(x), *MODELS[name])
    reference = _run(model, x_in) if name == "resmlp_digits" else ReferenceEvaluator(model).run(None, {"x": x_in})[0]
    assert np.max(np.abs(load_network(path).output(x) - reference)) < 1e-12


def _conv_bn_model(rng, *, dtype=np.float32):
    inits = {"w": rng.normal(size=(4, 2, 3, 3)), "b": rng.normal(size=4), "gamma": rng.uniform(0.5, 2, 4),
             "beta": rng.normal(size=4), "mean": rng.normal(size=4), "var": rng.uniform(0.1, 3, 4)}
    inits = {k: v.astype(dtype) for k, v in inits.items()}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"])]
    return _model(nodes, inits, [2, 5, 5], [4, 5, 5]), inits


def test_batchnorm_folds_into_conv_exactly(tmp_path):
    rng = np.random.default_rng(2)
    model, p = _conv_bn_model(rng)
    network = _load(model, tmp_path)
    assert len(network.layers) == 1 and network.layers[0].activation == "relu"
    x = rng.normal(size=(6, 2, 5, 5))
    # unfolded float64: the convolution by its definition, then the normalisation
    w, b = p["w"].astype(float), p["b"].astype(float)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.stack([np.einsum("nchw,oc->nohw", padded[:, :, i:i + 5, j:j + 5], w[:, :, i, j])
                     for i in range(3) for j in range(3)]).sum(axis=0) + b[:, None, None]
    channel = (lambda v: v.astype(float)[:, None, None])
    epsilon = float(np.float32(1e-3))  # an ONNX float attribute is float32
    normed = (conv - channel(p["mean"])) / np.sqrt(channel(p["var"]) + epsilon) * channel(p["gamma"]) \
        + channel(p["beta"])
    unfolded = np.maximum(normed, 0).reshape(6, -1)
    folded = network.output(x.reshape(6, -1))
    assert np.max(np.abs(folded - unfolded)) < 1e-12 * np.max(np.abs(unfolded))
    assert np.max(np.abs(folded - _run(model, x.astype(np.float32)).reshape(6, -1))) < F32


def test_batchnorm_folds_into_gemm_in_float64(tmp_path):
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(size=(5, 7)), "gamma": rng.uniform(0.5, 2, 5), "beta": rng.normal(size=5),
             "mean": rng.normal(size=5), "var": rng.uniform(0.1, 3, 5)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("BatchNormalization", ["m", "gamma", "beta", "mean", "var"], ["y"])]
    inits["w"] = inits["w"].T.copy()  # MatMul: x @ w, w (in, out)
    model = _model(nodes, inits, [7], [5], TensorProto.DOUBLE)
    x = rng.normal(size=(30, 7))
    network = _load(model, tmp_path)
    assert len(network.layers) == 1 and not network.layers[0].post
    reference = _run(model, x)
    assert np.max(np.abs(network.output(x) - reference)) < 1e-12 * np.max(np.abs(reference))  # rounding only


@pytest.mark.parametrize("extra, said", [
    ([helper.make_node("Einsum", ["h"], ["y"], name="mix", equation="bi->bi")], "Einsum node 'mix'"),
    ([helper.make_node("LSTM", ["h", "w"], ["y"], name="rnn", hidden_size=4)], "LSTM node 'rnn'"),
    ([helper.make_node("Relu", ["h"], ["r"]), helper.make_node("BatchNormalization", ["r", "s", "s", "s", "s"],
                                                                 ["y"], name="late")],
     "BatchNormalization node 'late' does not directly follow"),
    ([helper.make_node("Gemm", ["x", "w"], ["g"], name="side", transB=1),
      helper.make_node("Add", ["h", "g"], ["y"], name="join")], "Gemm node 'side' reads a tensor off the chain"),
    ([helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Add", ["h", "r"], ["y"], name="join")],
     "Add node 'join' adds a tensor that is not an array layer's input"),
])
def test_unsupported_graphs_are_refused_by_name(extra, said, tmp_path):
    rng = np.random.default_rng(4)
    inits = {"w": rng.normal(size=(4, 4)).astype(np.float32), "s": np.ones(4, np.float32)}
    model = _model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), *extra], inits, [4], [4])
    with pytest.raises(EngineError, match=said) as info:
        _load(model, tmp_path)
    assert "\n" not in str(info.value)


def test_a_step_before_any_layer_is_refused(tmp_path):
    model = _model([helper.make_node("MaxPool", ["x"], ["y"], name="first", kernel_shape=[2, 2])], {},
                   [1, 4, 4], [1, 3, 3])
    with pytest.raises(EngineError, match="MaxPool node 'first' comes before any Gemm"):
        _load(model, tmp_path)


def test_program_refuses_an_unsupported_model_before_touching_the_lab(tmp_path, capsys, monkeypatch):
    import crossbar_ctl._lab
    from crossbar_ctl.cli._main import main

    monkeypatch.setattr(crossbar_ctl._lab, "open_lab", lambda *a, **k: pytest.fail("the lab was opened"))
    rng = np.random.default_rng(5)
    model = _model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
                    helper.make_node("Einsum", ["h"], ["y"], name="mix", equation="bi->bi")],
                   {"w": rng.normal(size=(4, 4)).astype(np.float32)}, [4], [4])
    onnx.save(model, str(tmp_path / "m.onnx"))
    code = main(["program", "--weights", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "none.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Einsum node 'mix'" in err


@pytest.mark.parametrize("name", MODELS)
def test_network_file_carries_the_digital_steps(name, tmp_path, digits):
    x, _ = digits
    network = load_network(DATA / f"{name}.onnx")
    save_network(tmp_path / "net.npz", network)
    with np.load(tmp_path / "net.npz", allow_pickle=False) as data:
        assert int(data["schema_version"]) == 2
    again = load_network(tmp_path / "net.npz")
    assert [layer.post for layer in again.layers] == [layer.post for layer in network.layers]
    np.testing.assert_array_equal(again.output(x[:50]), network.output(x[:50]))


def test_version_1_network_files_still_load(digits):
    from importlib.resources import files

    path = files("crossbar_ctl") / "data" / "digits_mlp.npz"
    with np.load(path, allow_pickle=False) as data:
        assert "schema_version" not in data  # written before version 2
    network = load_network(path)
    assert all(not layer.post for layer in network.layers)


@pytest.fixture(scope="module")
def calibrated_ideal_lab(tmp_path_factory):
    """``crossbar calibrate`` of a 16x16x8 simulated lab on the ideal board: (lab file, record)."""
    from crossbar_ctl.cli._main import main

    tmp = tmp_path_factory.mktemp("onnx_lab")
    lab, cal = tmp / "lab.toml", tmp / "cal.npz"
    lab.write_text('[sim]\nrows = 16\ncols = 16\nbranches = 8\nseed = 1\nprofile = "ideal"\n')
    assert main(["calibrate", "--lab", str(lab), "--out", str(cal), "--json"]) == 0
    return lab, cal


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_program_and_check_on_a_simulated_lab(name, tmp_path, capsys, digits, calibrated_ideal_lab):
    """crossbar program + check of an exported model, through the CLI, on a 16x16x8 simulated lab on
    the ideal board: a self-consistency check (the board is the controller's own model), small
    enough for the suite. The evidence on the pcb board is scripts/check_onnx_models.py's
    (docs/networks.md)."""
    from crossbar_ctl.cli._main import main

    x, y = digits
    lab, cal = calibrated_ideal_lab
    plan, data = tmp_path / "plan.npz", tmp_path / "data.npz"
    np.savez(data, x=x[:60], y=y[:60])
    assert main(["program", "--weights", str(DATA / f"{name}.onnx"), "--calibration", str(cal), "--lab", str(lab),
                 "--out", str(plan), "--json"]) == 0
    capsys.readouterr()
    assert main(["check", "--plan", str(plan), "--data", str(data), "--lab", str(lab), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agreement"] >= 0.99
    assert min(layer["enob"] for layer in report["layers"]) > 6.5


def test_a_plan_carries_the_digital_steps_and_version_1_plans_load(tmp_path):
    from crossbar_ctl.core.files import _HEADER, save_record
    from crossbar_ctl.engine._network import build_network
    from crossbar_ctl.engine._plan import PlanHeader, SwitchPlan, make_plan
    from tests.crossbar_ctl.engine.fakes import array_model, exact_solver

    rng = np.random.default_rng(6)
    network = build_network([rng.normal(size=(4, 5)), rng.normal(size=(4, 4))], [np.zeros(4), np.zeros(4)],
                            ["relu", "tanh"], input_shape=None, strides=[1, 1], paddings=[0, 0], name="res",
                            posts=[[], ["add 1", "softmax"]])
    plan = make_plan(network, array_model(), solver=exact_solver)
    plan.save(tmp_path / "plan.npz")
    again = SwitchPlan.load(tmp_path / "plan.npz").network()
    assert [layer.post for layer in again.layers] == [layer.post for layer in network.layers]
    x = rng.normal(size=(5, 5))
    np.testing.assert_array_equal(again.output(x), network.output(x))

    class Version1(PlanHeader):  # a header as written before the steps existed: no "post" key
        def model_dump_json(self, **kwargs):
            return super().model_dump_json(exclude={"post"}, **kwargs)

    save_record(tmp_path / "v1.npz", Version1(**{**dict(plan.header), "schema_version": 1, "post": ()}),
                plan.arrays)
    with np.load(tmp_path / "v1.npz", allow_pickle=False) as data:
        header = json.loads(bytes(data[_HEADER]))
    assert header["schema_version"] == 1 and "post" not in header
    assert all(not layer.post for layer in SwitchPlan.load(tmp_path / "v1.npz").network().layers)
