"""A live export from PyTorch (torch 2.13, CPU): both of torch.onnx's exporters, float64 models.

The committed fixtures (test_onnx.py) prove trained models; these prove the export path itself on
small float64 models drawn from one ``torch.Generator`` (batch-norm statistics included), against
PyTorch's own float64 forward pass and, for the MLP, onnxruntime's, to 1e-9. The TorchScript
exporter (``dynamo=False``, about 1 s) keeps a BatchNorm1d after a Linear and writes
``x.view(x.size(0), -1)`` as Shape, Gather, Unsqueeze and Concat; the dynamo exporter (torch
2.13's default, through onnxscript; slow, so one model) folds batch norms and writes a Reshape.
"""

import numpy as np
import pytest

from crossbar_ctl.engine._network import load_network

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
nn = torch.nn
SAMPLES = 16


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), nn.Hardtanh(-0.5, 0.5))

    def forward(self, x):
        return x + self.body(x)


class Cnn(nn.Module):
    """conv-bn-relu, a ceil-mode max pool (7x7 -> 4x4), conv-sigmoid, view, linear, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                      nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(3, 4, 3), nn.Sigmoid())
        self.head = nn.Sequential(nn.Linear(16, 5), nn.Softmax(dim=1))

    def forward(self, x):
        return self.head(self.features(x).view(x.size(0), -1))


def _model(arch: str, generator):
    if arch == "resmlp":
        model, shape = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), Residual(5), nn.Linear(5, 3),
                                     nn.Softmax(dim=1)), (6,)
    else:
        model, shape = Cnn(), (1, 7, 7)
    model = model.double().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0, generator=generator)
            elif tensor.is_floating_point():
                tensor.normal_(0.0, 0.5, generator=generator)
    return model, shape


def _export(model, x, path, exporter: str) -> None:
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")  # the dynamo exporter writes through it
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    else:
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated
@pytest.mark.parametrize("arch, exporter", [
    ("resmlp", "torchscript"), ("cnn", "torchscript"),
    pytest.param("cnn", "dynamo", marks=pytest.mark.slow),  # 16 s at load 16 (61 s with its imports)
])
def test_a_live_pytorch_export_matches_pytorch_and_onnxruntime(arch, exporter, tmp_path):
    generator = torch.Generator().manual_seed(7)
    model, shape = _model(arch, generator)
    x = torch.rand((SAMPLES, *shape), generator=generator, dtype=torch.float64)
    _export(model, x, tmp_path / "m.onnx", exporter)
    network = load_network(tmp_path / "m.onnx")
    ours = network.output(x.reshape(SAMPLES, -1).numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.max(np.abs(ours - expected)) < 1e-9 * np.max(np.abs(expected))
    if arch == "resmlp":  # onnxruntime has every operator here in float64
        session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        reference = session.run(None, {"x": x.numpy()})[0]
        assert np.max(np.abs(ours - reference)) < 1e-9 * np.max(np.abs(reference))
    steps = [str(op) for layer in network.layers for op in layer.post]
    assert ("add 1" in steps) == (arch == "resmlp")
    assert ("maxpool 2 2 2 2 0 0 1 1" in steps) == (arch == "cnn")  # ceil mode: one row and column more
