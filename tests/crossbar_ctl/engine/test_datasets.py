"""Training data: the digits' shapes and honest split, the 28x28 interpolation, data files."""

from __future__ import annotations

import io

import numpy as np
import pytest

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine import load_dataset
from crossbar_ctl.engine._datasets import (
    Dataset,
    digits_8x8,
    digits_28x28,
    load_data,
    load_training_data,
    save_training_data,
    upsample_28x28,
)

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits8() -> Dataset:
    return digits_8x8()


def test_digits_8x8_shapes_split_and_the_shipped_test_set(digits8):
    assert digits8.train_x.shape == (1437, 64) and digits8.test_x.shape == (360, 64)
    assert digits8.train_x.dtype == np.float64 and digits8.train_y.dtype == np.int64
    assert digits8.input_shape == (1, 8, 8) and digits8.classes == 10
    assert 0.0 <= digits8.train_x.min() and digits8.train_x.max() <= 1.0
    # stratified: every class within one sample of a tenth of the test set
    assert np.ptp(np.bincount(digits8.test_y, minlength=10)) <= 2
    # the split is a partition of the 1,797 images (by index: no test row is a training row)
    rows = {row.tobytes() for row in digits8.train_x}
    assert sum(row.tobytes() in rows for row in digits8.test_x) <= 5  # the raw set's own duplicates
    # seed 0 is the shipped network's held-out set, sample for sample
    x, y = load_dataset("crossbar_ctl/data/digits_mlp.npz")
    np.testing.assert_array_equal(x, digits8.test_x)
    np.testing.assert_array_equal(y, digits8.test_y)
    other = digits_8x8(seed=1)
    assert not np.array_equal(other.test_x, digits8.test_x)


def test_digits_28x28_is_the_same_images_upsampled(digits8):
    big = digits_28x28()
    assert big.train_x.shape == (1437, 784) and big.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(big.test_y, digits8.test_y)
    np.testing.assert_array_equal(big.test_x, upsample_28x28(digits8.test_x))
    # bilinear on pixel centres: a constant image stays constant, values stay in the input's range,
    # a ramp stays a monotone ramp with its ends held (mode="nearest")
    np.testing.assert_allclose(upsample_28x28(np.full((1, 64), 0.25)), 0.25)
    assert 0.0 <= big.train_x.min() and big.train_x.max() <= 1.0
    ramp = np.tile(np.arange(8.0), 8)[None]  # columns 0..7
    row = upsample_28x28(ramp).reshape(28, 28)[0]
    assert np.all(np.diff(row) > -1e-12) and row[0] == 0.0 and row[-1] == pytest.approx(7.0)
    # pixel 14's centre is 14.5 / 28 * 8 - 0.5 = 3.64 in 8x8 pixel units
    assert row[14] == pytest.approx(14.5 / 28 * 8 - 0.5)
    # the 8x8 image is recovered by averaging the upsampled one over each 3.5-pixel block, roughly
    assert np.abs(big.test_x.reshape(-1, 28, 28).mean(axis=(1, 2)) - digits8.test_x.mean(axis=1)).max() < 0.02


def test_data_file_round_trip_and_check_reads_its_test_set(tmp_path, digits8):
    path = tmp_path / "data.npz"
    save_training_data(path, digits8)
    back = load_training_data(path)
    assert back.name == "digits8" and back.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(back.train_x, digits8.train_x)
    np.testing.assert_array_equal(back.test_y, digits8.test_y)
    x, y = load_dataset(path)  # what crossbar check --data reads
    np.testing.assert_array_equal(x, digits8.test_x)
    assert load_data(path).features == 64 and load_data("digits8").features == 64


def _write(path, **arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


def _arrays(**change):
    arrays = {"train.x": np.zeros((4, 3)), "train.y": np.arange(4), "test.x": np.ones((2, 3)),
              "test.y": np.array([0, 1])}
    arrays.update(change)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(("change", "message"), [
    ({"test.y": None}, "no test.y"),
    ({"extra": np.zeros(2)}, "unknown key 'extra'"),
    ({"train.y": np.arange(4.0)}, "train.y is float64; expected integer"),
    ({"train.y": np.arange(3)}, "expected int64 (4,) class labels"),
    ({"test.x": np.ones((2, 4))}, "expected float64 (samples, 3)"),
    ({"train.x": np.zeros(4)}, "expected numeric (samples, features)"),
    ({"input_shape": np.array([1, 2, 2])}, "for input_shape (1, 2, 2)"),
    ({"input_shape": np.array([3.0])}, "not a tuple of positive integers"),
    ({"train.x": np.full((4, 3), np.nan)}, "NaN or infinite"),
    ({"train.y": np.array([0, 1, -1, 2])}, "negative labels"),
])
def test_bad_data_files_are_refused_with_what_is_wrong(tmp_path, change, message):
    path = _write(tmp_path / "bad.npz", **_arrays(**change))
    with pytest.raises(EngineError) as info:
        load_training_data(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_pickle_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(EngineError, match="no such data file"):
        load_training_data(tmp_path / "missing.npz")
    buffer = io.BytesIO()
    np.savez(buffer, **_arrays(**{"train.x": np.array([None] * 4, dtype=object)}))
    (tmp_path / "pickled.npz").write_bytes(buffer.getvalue())
    with pytest.raises(EngineError, match="object arrays"):
        load_training_data(tmp_path / "pickled.npz")
    assert load_training_data(_write(tmp_path / "ok.npz", **_arrays())).input_shape == (3,)
