"""Training data: scikit-learn's bundled digits at 8x8 and at 28x28, and ``.npz`` data files.

Both digit sets are the 1,797 images of ``sklearn.datasets.load_digits`` scaled to [0, 1]
(the raw values are 0..16), split once into a training set and an honest held-out test set:
stratified by class, a fixed seed, the same split as the shipped ``digits_mlp.npz``
(``scripts/train_digits.py``: 360 test samples, seed 0), so nothing trained here ever sees a
test image. The 28x28 set (784 inputs, the MNIST shape of Pensia et al. and of the edge-popup
papers) is the 8x8 set upsampled by bilinear interpolation on pixel centres
(``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``): output pixel (i, j) samples
the 8x8 image at the point its centre falls on, so the 28x28 image covers the same square; values
stay in [0, 1]. It adds no information: it is a shape test, not a harder task.

A data file (``--data data.npz``) holds ``train.x`` ``(train_samples, features)``, ``train.y``
``(train_samples,)`` integer labels, ``test.x``, ``test.y`` and optionally ``input_shape``
(``(channels, height, width)`` for images) and ``name``. ``crossbar check --data`` reads its
test set as it reads a network file's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossbar_ctl.core.errors import EngineError, RecordError
from crossbar_ctl.core.files import atomic_write_bytes, read_npz

__all__ = ["DATASETS", "Dataset", "digits_28x28", "digits_8x8", "load_data", "load_training_data",
           "save_training_data", "upsample_28x28"]

TEST_SAMPLES = 360  # the shipped digits_mlp.npz's held-out set
DIGITS_SIDE = 8
MNIST_SIDE = 28
_KEYS = {"train.x", "train.y", "test.x", "test.y", "input_shape", "name"}


@dataclass(frozen=True)
class Dataset:
    """A labelled training set and its held-out test set, float64 inputs in [0, 1] for the digits.

    Attributes
    ----------
    name : str
    train_x : ndarray (train_samples, features) of float64
    train_y : ndarray (train_samples,) of int64
    test_x : ndarray (test_samples, features) of float64
    test_y : ndarray (test_samples,) of int64
    input_shape : tuple of int
        ``(features,)``, or ``(channels, height, width)`` for images (``features`` their product,
        flattened in that order, as the engine's convolutions read them).
    """

    name: str
    train_x: np.ndarray = field(repr=False)
    train_y: np.ndarray = field(repr=False)
    test_x: np.ndarray = field(repr=False)
    test_y: np.ndarray = field(repr=False)
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        features = int(np.prod(self.input_shape))
        for part in ("train", "test"):
            x = getattr(self, f"{part}_x")
            y = getattr(self, f"{part}_y")
            where = f"{self.name}: {part}"
            if x.dtype != np.float64 or x.ndim != 2 or x.shape[1] != features:
                raise EngineError(f"{where}.x is {x.dtype} {x.shape}; expected float64 (samples, {features}) "
                                  f"for input_shape {self.input_shape}")
            if len(x) == 0:
                raise EngineError(f"{where}.x has no samples")
            if not np.all(np.isfinite(x)):
                raise EngineError(f"{where}.x has NaN or infinite values; replace them with finite numbers")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise EngineError(f"{where}.y is {y.dtype} {y.shape}; expected int64 ({len(x)},) class labels")
            if y.min() < 0:
                raise EngineError(f"{where}.y has negative labels; class labels are 0, 1, ...")

    @property
    def features(self) -> int:
        return self.train_x.shape[1]

    @property
    def classes(self) -> int:
        """Number of classes: one more than the largest label in either set."""
        return int(max(self.train_y.max(), self.test_y.max())) + 1


def _sklearn_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits scaled to [0, 1], split stratified: ``(x_train, x_test, y_train, y_test)``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise EngineError("the digits need scikit-learn: pip install 'crossbar-ctl[train]'") from exc
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=TEST_SAMPLES, random_state=seed, stratify=y))


def digits_8x8(*, seed: int = 0) -> Dataset:
    """scikit-learn's digits, 64 inputs: train ``(1437, 64)``, test ``(360, 64)``, input ``(1, 8, 8)``.

    Parameters
    ----------
    seed : int
        Seed of the stratified split (0: the shipped ``digits_mlp.npz``'s split).
    """
    x_train, x_test, y_train, y_test = _sklearn_digits(seed)
    return Dataset("digits8", x_train, y_train, x_test, y_test, (1, DIGITS_SIDE, DIGITS_SIDE))


def upsample_28x28(x_8x8: np.ndarray) -> np.ndarray:
    """Bilinear upsampling on pixel centres, ``(samples, 64)`` -> ``(samples, 784)``."""
    from scipy.ndimage import zoom

    images = np.asarray(x_8x8, dtype=np.float64).reshape(-1, DIGITS_SIDE, DIGITS_SIDE)
    scale = MNIST_SIDE / DIGITS_SIDE
    big = zoom(images, (1.0, scale, scale), order=1, mode="nearest", grid_mode=True)
    return big.reshape(len(images), MNIST_SIDE * MNIST_SIDE)


def digits_28x28(*, seed: int = 0) -> Dataset:
    """The digits upsampled to 28x28: train ``(1437, 784)``, test ``(360, 784)``, input ``(1, 28, 28)``.

    The same images and split as :func:`digits_8x8` (module docstring: the interpolation).
    """
    small = digits_8x8(seed=seed)
    return Dataset("digits28", upsample_28x28(small.train_x), small.train_y, upsample_28x28(small.test_x),
                   small.test_y, (1, MNIST_SIDE, MNIST_SIDE))


DATASETS = {"digits8": digits_8x8, "digits28": digits_28x28}


def save_training_data(path: str | Path, dataset: Dataset) -> None:
    """Write a dataset as a data file (module docstring: the keys), atomically, without pickle."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{
        "train.x": dataset.train_x, "train.y": dataset.train_y, "test.x": dataset.test_x,
        "test.y": dataset.test_y, "input_shape": np.array(dataset.input_shape, dtype=np.int64),
        "name": np.array(dataset.name),
    })
    atomic_write_bytes(path, buffer.getvalue())


def load_training_data(path: str | Path) -> Dataset:
    """Read and validate a data file written by :func:`save_training_data` (or by hand).

    Integer or float32 inputs are converted to float64, any integer labels to int64.

    Raises
    ------
    EngineError
        Not a readable ``.npz``, a missing or unknown key, shapes or dtypes that do not fit.
    """
    path = Path(path)
    try:
        data = read_npz(path, what="data")
    except RecordError as exc:
        raise EngineError(str(exc)) from exc
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise EngineError(f"{path}: unknown key {unknown[0]!r}; a data file holds {', '.join(sorted(_KEYS))}")
    missing = [key for key in ("train.x", "train.y", "test.x", "test.y") if key not in data]
    if missing:
        raise EngineError(f"{path}: no {missing[0]}; a data file holds train.x, train.y, test.x and test.y")
    arrays = {}
    for part in ("train", "test"):
        x, y = data[f"{part}.x"], data[f"{part}.y"]
        if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise EngineError(f"{path}: {part}.x is {x.dtype} {x.shape}; expected numeric (samples, features)")
        if not np.issubdtype(y.dtype, np.integer):
            raise EngineError(f"{path}: {part}.y is {y.dtype}; expected integer class labels")
        arrays[part] = (x.astype(np.float64), y.astype(np.int64))
    features = arrays["train"][0].shape[1]
    if "input_shape" in data:
        shape = data["input_shape"]
        if shape.ndim != 1 or not np.issubdtype(shape.dtype, np.integer) or np.any(shape <= 0):
            raise EngineError(f"{path}: input_shape {shape.tolist()} is not a tuple of positive integers")
        input_shape = tuple(int(s) for s in shape)
    else:
        input_shape = (features,)
    name = str(data["name"]) if "name" in data else path.stem
    try:
        return Dataset(name, *arrays["train"], *arrays["test"], input_shape)
    except EngineError as exc:
        raise EngineError(f"{path}: {exc}") from exc


def load_data(spec: str | Path, *, seed: int = 0) -> Dataset:
    """A dataset by name (``digits8``, ``digits28``) or from a data file's path."""
    if str(spec) in DATASETS:
        return DATASETS[str(spec)](seed=seed)
    return load_training_data(spec)
