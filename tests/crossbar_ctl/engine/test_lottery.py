"""Edge-popup on measured pools: architectures, the twin in the forward pass, the trained plan."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._mapping import pair_transfer, selection_from_masks
from crossbar_ctl.engine._plan import SwitchPlan

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from crossbar_ctl.engine._datasets import Dataset, digits_8x8  # noqa: E402
from crossbar_ctl.engine._lottery import (  # noqa: E402
    TrainOptions,
    _forward,
    _layer_pools,
    _Masked,
    _network,
    _values,
    parse_arch,
    train_masks,
)
from tests.crossbar_ctl.engine.fakes import array_model  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return digits_8x8()


@pytest.fixture(scope="module")
def wired():
    """A 16x16 array of 8 branches, wires 10x the pcb twin's (5 ohm a segment, 50 ohm sense), 2 % faults."""
    return array_model(16, 16, 8, seed=3, wire_ohm=5.0, sense_ohm=50.0, faults=0.02)


def test_parse_arch_dense_and_conv_shapes():
    dense = parse_arch("64-32-10", (1, 8, 8))
    assert [(s.fan_in, s.outputs) for s in dense] == [(64, 32), (32, 10)]
    conv = parse_arch("64-c4k3-c6k3s2p1-10", (1, 8, 8))
    assert conv[0].output_shape == (4, 6, 6) and conv[0].fan_in == 9
    assert conv[1].output_shape == (6, 3, 3) and conv[1].fan_in == 36 and conv[2].fan_in == 54


@pytest.mark.parametrize(("arch", "shape", "message"), [
    ("63-10", (1, 8, 8), "starts with 63 inputs but the data has 64"),
    ("64-c4k3-10", (64,), "is not an image"),
    ("64-c4k9-10", (1, 8, 8), "kernel does not fit"),
    ("64-x3-10", (1, 8, 8), "'x3' is not a layer"),
    ("64", (1, 8, 8), "expected the input size then layers"),
    ("64-0-10", (1, 8, 8), "'0' is not a layer"),
])
def test_parse_arch_refuses_with_the_reason(arch, shape, message):
    with pytest.raises(EngineError, match=message):
        parse_arch(arch, shape)


def test_the_torch_forward_is_the_engines_network_for_dense_and_conv(digits):
    """The masks are trained on what the engine runs: the same im2col order, bias row, ReLUs."""
    rng = np.random.default_rng(0)
    layers = parse_arch("64-c3k3s2p1-c4k2-12-10", digits.input_shape)
    matrices = [rng.normal(size=(s.fan_in + 1, s.outputs)) for s in layers]
    x = digits.test_x[:20]
    ours = _forward(torch, layers, [torch.as_tensor(m) for m in matrices], torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(ours, _network("n", layers, matrices, digits).output(x), rtol=1e-12, atol=1e-12)


def test_the_forward_pass_computes_the_twins_transfer_of_the_masks(wired, digits):
    """With the gains refreshed at a selection, each pair's weight is the twin's exact output."""
    from crossbar_ctl.engine._mapping import masks_from_selection
    from crossbar_ctl.engine._solve import array_transfer

    layers = parse_arch("64-12-10", digits.input_shape)
    pools = _layer_pools(wired, layers, digits, 0.5, None)
    masked = _Masked(torch, pools, torch.Generator().manual_seed(1))
    selections = masked.selections(0.5)
    masked.set_values(_values(wired, pools, selections, wired.twin))
    matrices = masked.augmented(masked.masks(0.5))
    bare, shrink = [], []
    for layer, selection, aug in zip(pools, selections, matrices):
        for tile, chosen in zip(layer.tiles, selection):
            cell_s = wired.cell_conductance_s(masks_from_selection(chosen, tile.rows, tile.pairs), tile)
            twin_w = pair_transfer(array_transfer(wired, wired.twin, cell_s, tile)) / layer.conductance_per_weight_s
            ours = aug.detach().numpy()[tile.inputs, tile.outputs]
            np.testing.assert_allclose(ours, twin_w, rtol=1e-9, atol=1e-12 * np.abs(twin_w).max())
            bare.append(pair_transfer(cell_s) / layer.conductance_per_weight_s)
            shrink.append(twin_w)
    # the wires matter here: the bare cells are off by up to 60 % of max|w|
    error = np.abs(np.concatenate([b.ravel() for b in bare]) - np.concatenate([s.ravel() for s in shrink]))
    assert error.max() > 0.3 * np.abs(np.concatenate([s.ravel() for s in shrink])).max()


@pytest.fixture(scope="module")
def trained(wired, digits):
    return train_masks(wired, digits, "64-12-10", options=TrainOptions(epochs=6, seed=0))


def test_edge_popup_learns_far_above_the_random_mask_floor(wired, digits, trained):
    floor = train_masks(wired, digits, "64-12-10", options=TrainOptions(epochs=0, seed=0))
    assert floor.test_accuracy < 0.3  # measured 0.09: a random mask of random pools is no classifier
    assert trained.test_accuracy > 0.9  # measured 0.95 (6 epochs on the 16x16x8 fake with wires)
    assert trained.test_accuracy > floor.test_accuracy + 0.5
    assert len(trained.losses) == 6 and trained.losses[-1] < 0.5 * trained.losses[0]


def test_the_trained_plan_holds_the_masks_and_their_twin_weights(wired, digits, trained, tmp_path):
    plan = trained.plan
    plan.save(tmp_path / "plan.npz")
    plan = SwitchPlan.load(tmp_path / "plan.npz")
    network = plan.network()
    np.testing.assert_array_equal(network.predict(digits.test_x), trained.network.predict(digits.test_x))
    assert trained.test_accuracy == np.mean(network.predict(digits.test_x) == digits.test_y)
    closed, usable = 0, 0
    for t, record in enumerate(plan.header.tiles):
        tile = record.tile
        lp = plan.header.layers[tile.layer]
        target = plan.tile(t, "target_s")
        np.testing.assert_allclose(target, pair_transfer(plan.tile(t, "predicted_s")), rtol=0, atol=0)
        aug = np.vstack([network.layers[tile.layer].matrix.T, network.layers[tile.layer].bias / lp.bias_input])
        np.testing.assert_allclose(aug[tile.inputs, tile.outputs] * lp.conductance_per_weight_s, target,
                                   rtol=1e-12, atol=1e-12 * np.abs(target).max())
        chosen = selection_from_masks(plan.tile(t, "masks"), 8)[tile.block]
        assert not np.any(chosen & ~wired.usable[tile.block])  # faulty branches never closed
        closed += chosen.sum()
        usable += wired.usable[tile.block].sum()
    assert closed == pytest.approx(0.5 * usable, rel=0.01)  # keep_fraction of each layer's branches


def test_training_is_reproducible_by_seed(wired, digits, trained):
    again = train_masks(wired, digits, "64-12-10", options=TrainOptions(epochs=1, seed=0))
    twice = train_masks(wired, digits, "64-12-10", options=TrainOptions(epochs=1, seed=0))
    other = train_masks(wired, digits, "64-12-10", options=TrainOptions(epochs=1, seed=1))
    np.testing.assert_array_equal(again.plan.tile(0, "masks"), twice.plan.tile(0, "masks"))
    assert again.losses == twice.losses
    assert not np.array_equal(again.plan.tile(0, "masks"), other.plan.tile(0, "masks"))


def test_a_conv_architecture_trains_on_its_im2col_tiles(wired, digits):
    result = train_masks(wired, digits, "64-c4k3s2-10", options=TrainOptions(epochs=3, seed=0))
    layer = result.network.layers[0]
    assert layer.is_conv and layer.weight.shape == (4, 1, 3, 3) and layer.output_shape == (4, 3, 3)
    assert result.plan.header.layers[0].kind == "conv"
    assert result.test_accuracy > 0.75  # measured 0.89 (3 epochs); the random floor is ~0.1
