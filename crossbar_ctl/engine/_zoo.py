"""Trained networks for benchmarks that need a real one: trained once, then read from a user cache.

:func:`digits28_mlp` is the paper-shaped MLP (784-500-10 by default, Pensia et al.'s MNIST shape)
trained with scikit-learn's ``MLPClassifier`` (fixed seed) on the digits upsampled to 28x28
(:func:`crossbar_ctl.engine._datasets.digits_28x28`). The trained network is cached as a network
``.npz`` (docs/networks.md, written atomically, read without pickle) in
``$XDG_CACHE_HOME/crossbar-ctl`` (``~/.cache/crossbar-ctl``), keyed by its shape, seed and the
scikit-learn version, so a later run reads it in milliseconds.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._datasets import digits_28x28
from crossbar_ctl.engine._network import Network, build_network, load_network, save_network

__all__ = ["cache_dir", "digits28_mlp"]


def cache_dir() -> Path:
    """Where trained networks are kept: ``$XDG_CACHE_HOME/crossbar-ctl`` or ``~/.cache/crossbar-ctl``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "crossbar-ctl"


def digits28_mlp(hidden: int = 500, *, seed: int = 0, max_iter: int = 300, cache: Path | None = None) -> Network:
    """A ``784-hidden-10`` ReLU MLP trained on the digits at 28x28, with their held-out test set.

    Parameters
    ----------
    hidden : int
        Hidden units (500: the 784-500-10 network of Pensia et al.).
    seed : int
        Seed of the split and of ``MLPClassifier``'s initialisation and batches.
    max_iter : int
        Training epochs at most (``MLPClassifier``'s ``max_iter``).
    cache : path, optional
        Directory of the cached network (default: :func:`cache_dir`).

    Raises
    ------
    EngineError
        Not cached and scikit-learn missing (the ``train`` extra).
    """
    try:
        import sklearn
        version = sklearn.__version__
    except ImportError:
        version = None
    directory = Path(cache) if cache is not None else cache_dir()
    if version is None:  # any cached training will do
        found = sorted(directory.glob(f"digits28-mlp-784-{hidden}-10-seed{seed}-iter{max_iter}-*.npz"))
        if found:
            return load_network(found[-1])
        raise EngineError("training the 28x28 digits network needs scikit-learn: "
                          "pip install 'crossbar-ctl[train]'")
    path = directory / f"digits28-mlp-784-{hidden}-10-seed{seed}-iter{max_iter}-sklearn{version}.npz"
    if path.exists():
        return load_network(path)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    data = digits_28x28(seed=seed)
    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", alpha=1e-3, max_iter=max_iter,
                        random_state=seed)
    with warnings.catch_warnings():  # a capped run is asked for: not converging is no news
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(data.train_x, data.train_y)
    network = build_network([w.T for w in mlp.coefs_], list(mlp.intercepts_), ["relu", "none"],
                            input_shape=None, strides=[1, 1], paddings=[0, 0], name=f"digits28 784-{hidden}-10",
                            test_x=data.test_x, test_y=data.test_y.astype(np.int64))
    save_network(path, network)
    return network
