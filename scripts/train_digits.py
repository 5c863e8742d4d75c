#!/usr/bin/env python3
"""Train the shipped example network: a 64-32-10 ReLU MLP on scikit-learn's bundled digits.

Writes ``crossbar_ctl/data/digits_mlp.npz`` in the network format of docs/networks.md: the
weights, and a held-out test set (inputs scaled to [0, 1]) so the demo runs offline without
scikit-learn. Needs ``pip install 'crossbar-ctl[train]'``; runs in a few seconds, offline.

    python3 scripts/train_digits.py [--out PATH] [--hidden 32] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from crossbar_ctl.engine._network import build_network, save_network

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "crossbar_ctl" / "data" / "digits_mlp.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--hidden", type=int, default=32, help="hidden units")
    parser.add_argument("--test-samples", type=int, default=360, help="held-out samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=args.test_samples, random_state=args.seed, stratify=digits.target
    )
    mlp = MLPClassifier(hidden_layer_sizes=(args.hidden,), activation="relu", alpha=1e-3,
                        max_iter=2000, random_state=args.seed)
    mlp.fit(x_train, y_train)
    network = build_network(
        [w.T for w in mlp.coefs_], list(mlp.intercepts_), ["relu", "none"],
        input_shape=None, strides=[1, 1], paddings=[0, 0], name="digits_mlp",
        test_x=x_test, test_y=y_test.astype(np.int64),
    )
    accuracy = float(np.mean(network.predict(x_test) == y_test))
    save_network(args.out, network)
    print(f"wrote {args.out}: 64-{args.hidden}-10 MLP, test accuracy {accuracy:.4f} "
          f"on {len(y_test)} held-out samples")


if __name__ == "__main__":
    main()
