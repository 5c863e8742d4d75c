#!/usr/bin/env python3
"""Export the ONNX test fixtures: a LeNet-like CNN and an MLP with a residual block, from PyTorch.

Both are briefly trained (CPU, a few seconds; initialised and shuffled from one
``torch.Generator``, no global seeding) on the training split of scikit-learn's 8x8 digits
(``crossbar_ctl.engine._datasets.digits_8x8``) and scored on its 360 held-out digits, the shipped
``digits_mlp.npz``'s test set. Exported by the TorchScript exporter (``dynamo=False``), which keeps
a BatchNorm1d as a BatchNormalization node (the dynamo exporter folds it; the tests export with
both). Writes, under ``tests/crossbar_ctl/engine/data/``:

- ``lenet_digits.onnx``: conv(1->4, 3x3, pad 1)-bn-relu-maxpool 2-conv(4->8, 3x3)-relu-flatten-
  gemm(32->10)-softmax;
- ``resmlp_digits.onnx``: gemm(64->24)-bn-relu, then ``h + relu(gemm(relu(gemm(h))))``, then
  gemm(24->10)-softmax.

Needs torch, onnx and scikit-learn (``pip install torch==2.13.0 onnx scikit-learn``, the CPU build)::

    python3 scripts/export_onnx_models.py [--out DIR] [--seed 0] [--epochs 60]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from crossbar_ctl.engine._datasets import digits_8x8

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "crossbar_ctl" / "engine" / "data"


def _models(torch):
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())

        def forward(self, x):
            return x + self.body(x)

    lenet = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 10), nn.Softmax(dim=1),
    )
    resmlp = nn.Sequential(
        nn.Linear(64, 24), nn.BatchNorm1d(24), nn.ReLU(), Residual(24), nn.Linear(24, 10), nn.Softmax(dim=1),
    )
    return {"lenet_digits": (lenet, (1, 1, 8, 8)), "resmlp_digits": (resmlp, (1, 64))}


def _initialise(torch, model, generator) -> None:
    """PyTorch's default initialisation (uniform on +-1/sqrt(fan_in)), drawn from ``generator``."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            bound = 1 / math.sqrt(module.weight[0].numel())
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    import torch

    digits = digits_8x8()
    x, y = torch.tensor(digits.train_x, dtype=torch.float32), torch.tensor(digits.train_y)
    test_x, test_y = torch.tensor(digits.test_x, dtype=torch.float32), torch.tensor(digits.test_y)
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    for name, (model, shape) in _models(torch).items():
        _initialise(torch, model, generator)
        inputs = x.reshape(-1, *shape[1:])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        model.train()
        for _ in range(args.epochs):
            for batch in torch.randperm(len(x), generator=generator).split(32):
                optimizer.zero_grad()
                probabilities = model(inputs[batch])  # the model ends in Softmax
                loss = torch.nn.functional.nll_loss(torch.log(probabilities + 1e-12), y[batch])
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = model(test_x.reshape(-1, *shape[1:])).argmax(1)
            accuracy = float((predicted == test_y).float().mean())
        path = args.out / f"{name}.onnx"
        torch.onnx.export(model, torch.zeros(shape), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17,
                          dynamo=False)
        print(f"wrote {path} ({path.stat().st_size} bytes): held-out accuracy {accuracy:.3f} "
              f"on {len(test_y)} digits")


if __name__ == "__main__":
    main()
