"""Mapping: tiles, differential pools, masks, scale and row voltages against numpy references."""

import numpy as np
import pytest

from crossbar_ctl.engine._mapping import (
    Tile,
    augmented_matrix,
    check_reach,
    choose_scale,
    input_grid,
    map_network,
    masks_from_selection,
    pair_pool,
    plan_tiles,
    row_voltages,
    selection_from_masks,
)
from crossbar_ctl.core.errors import EngineError


@pytest.mark.parametrize("inputs, outputs, rows, cols", [(65, 32, 64, 64), (10, 3, 4, 5), (7, 7, 7, 14)])
def test_tiles_cover_the_matrix_once_and_accumulate_to_the_product(inputs, outputs, rows, cols):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(inputs, outputs))
    x = rng.normal(size=(3, inputs))
    tiles = plan_tiles(inputs, outputs, rows=rows, cols=cols)
    covered = np.zeros((inputs, outputs), int)
    y = np.zeros((3, outputs))
    for tile in tiles:
        assert tile.rows <= rows and 2 * tile.pairs <= cols
        covered[tile.inputs, tile.outputs] += 1
        y[:, tile.outputs] += x[:, tile.inputs] @ a[tile.inputs, tile.outputs]
    assert np.all(covered == 1)
    np.testing.assert_allclose(y, x @ a)


def test_too_many_tiles_or_no_pair_is_refused():
    with pytest.raises(EngineError, match="tiles"):
        plan_tiles(1000, 1000, rows=8, cols=8, max_tiles=10)
    with pytest.raises(EngineError, match="differential pair"):
        plan_tiles(4, 4, rows=8, cols=1)


def test_augmented_matrix_carries_the_bias_row():
    rng = np.random.default_rng(1)
    w, b, x = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=(2, 4))
    beta = 0.5
    aug = augmented_matrix(w, b, beta)
    x_aug = np.hstack([x, np.full((2, 1), beta)])
    np.testing.assert_allclose(x_aug @ aug, x @ w.T + b)


def test_pair_pool_signs_and_masks_round_trip():
    rng = np.random.default_rng(2)
    rows, cols, n = 3, 4, 5
    g = rng.uniform(1, 2, size=(rows, cols, n))
    sigma = g * 1e-3
    usable = rng.random((rows, cols, n)) > 0.2
    tile = Tile(0, 0, 2, 0, 2)
    values, sig, use = pair_pool(g, sigma, usable, tile)
    assert values.shape == (4, 2 * n)
    # cell (row 1, pair 1): plus column 2, minus column 3
    np.testing.assert_array_equal(values[3], np.concatenate([g[1, 2], -g[1, 3]]))
    np.testing.assert_array_equal(use[3], np.concatenate([usable[1, 2], usable[1, 3]]))
    selection = rng.random((4, 2 * n)) > 0.5
    masks = masks_from_selection(selection, 2, 2)
    assert masks.dtype == np.uint64 and masks.shape == (2, 4)
    closed = selection_from_masks(masks, n)
    # the pair's signed sum from the masks equals the selected pool values' sum
    signed = (closed * g[:2, :4]).sum(-1)
    np.testing.assert_allclose(signed[:, 0::2] - signed[:, 1::2],
                               (selection * values).sum(1).reshape(2, 2))


def test_choose_scale_lands_in_the_dense_region_and_reach_is_checked():
    rng = np.random.default_rng(3)
    n = 8
    g = rng.lognormal(np.log(1e-4), 0.2, size=(50, 2 * n))
    values = np.concatenate([g[:, :n], -g[:, n:]], axis=1)
    usable = np.ones_like(values, bool)
    scale = choose_scale(values, usable, 2.0, density_std=1.25)
    # random subsets: the largest weight sits within ~1.25 std of every pool's centre
    sums = (rng.random((20000, 2 * n)) < 0.5) @ values[0]
    assert 2.0 * scale < 1.25 * sums.std() + abs(sums.mean()) + 1e-12
    assert 2.0 * scale > 0.5 * sums.std()
    check_reach(values, usable, np.full(50, 2.0 * scale), layer=0)
    with pytest.raises(EngineError, match="beyond"):
        check_reach(values, usable, np.full(50, 1e-2), layer=0)


def test_row_voltages_respect_every_limit_and_scale_back():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 3, size=(6, 5))
    x[2] = 0.0
    g = rng.uniform(1e-4, 5e-4, size=(5, 4))
    v, per_unit = row_voltages(x, g, max_voltage_v=0.5, max_current_a=2e-4, max_total_current_a=5e-4)
    assert np.all(np.abs(v) <= 0.5 + 1e-12)
    assert np.all(np.abs(v) @ g <= 0.9 * 2e-4 * (1 + 1e-12))
    assert np.all(np.sum(np.abs(v) @ g, axis=1) <= 0.9 * 5e-4 * (1 + 1e-12))
    np.testing.assert_allclose(v, x * per_unit[:, None])
    assert per_unit[2] == 0.0 and np.all(per_unit[[0, 1, 3, 4, 5]] > 0)


def test_inputs_on_a_grid_land_on_the_dac_codes():
    """``dac_lsb_v``: inputs on a 2**-k grid get scales of whole DAC steps per grid unit, so every
    row voltage is a code; the limits still hold and each scale gives up less than one step per
    grid unit; inputs off any grid are scaled as without it."""
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 17, size=(40, 8)) / 16  # 4-bit pixels
    g = rng.uniform(1e-4, 5e-4, size=(8, 4))
    limits = dict(max_voltage_v=1.0, max_current_a=1e-3, max_total_current_a=5e-4)
    lsb = 2.0**-15
    assert input_grid(pixels) == 1 / 16 and input_grid(np.arange(5.0)[:, None]) == 1.0
    assert input_grid(rng.uniform(0, 1, size=(3, 4))) is None
    with_bias = np.hstack([pixels, np.full((40, 1), 0.371)])  # a bias row off the grid does not count
    assert input_grid(with_bias) == 1 / 16
    assert input_grid(np.hstack([pixels, np.arange(40.0)[:, None] / 256])) == 1 / 256  # the finest
    assert input_grid(np.hstack([rng.uniform(0, 1, size=(40, 3)), np.zeros((40, 1))])) is None
    free, free_scale = row_voltages(pixels, g, **limits)
    aligned, scale = row_voltages(pixels, g, dac_lsb_v=lsb, **limits)
    codes = aligned / lsb
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-6)
    assert not np.allclose(free / lsb, np.round(free / lsb), atol=1e-3)
    assert np.all(scale <= free_scale) and np.all(free_scale - scale < 16 * lsb)
    assert np.all(np.sum(np.abs(aligned) @ g, axis=1) <= 0.9 * 5e-4 * (1 + 1e-12))
    floats = rng.uniform(0, 1, size=(5, 8))
    np.testing.assert_array_equal(row_voltages(floats, g, dac_lsb_v=lsb, **limits)[0],
                                  row_voltages(floats, g, **limits)[0])


def test_map_network_targets_reassemble_the_scaled_augmented_matrices():
    from crossbar_ctl.engine._network import build_network
    from tests.crossbar_ctl.engine.fakes import array_model

    rng = np.random.default_rng(5)
    network = build_network([rng.normal(size=(5, 7)), rng.normal(size=(3, 5))],
                            [0.3 * rng.normal(size=5), np.zeros(3)], ["relu", "none"],
                            input_shape=None, strides=[1, 1], paddings=[0, 0], name="m")
    mapping = map_network(network, array_model(), density_std=1.25)
    # 7 inputs + bias on 6 rows, 5 outputs on 4 pairs: 2 x 2 tiles; then 5 + bias x 3: one tile
    assert [m.tiles for m in mapping.layers] == [(0, 1, 2, 3), (4,)]
    for layer, mapped in zip(network.layers, mapping.layers):
        assert mapped.magnitude == np.max(np.abs(layer.weight))
        assert mapped.bias_input == (np.max(np.abs(layer.bias)) / mapped.magnitude or 1.0)
        aug = np.full((layer.matrix.shape[1] + 1, layer.matrix.shape[0]), np.nan)
        for t in mapped.tiles:
            aug[mapping.tiles[t].inputs, mapping.tiles[t].outputs] = mapping.targets_s[t]
        x = rng.normal(size=(4, layer.matrix.shape[1]))
        x_aug = np.hstack([x, np.full((4, 1), mapped.bias_input)])
        np.testing.assert_allclose(x_aug @ aug / mapped.conductance_per_weight_s,
                                   x @ layer.matrix.T + layer.bias, rtol=1e-12, atol=1e-12)
