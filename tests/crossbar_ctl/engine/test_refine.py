"""Closed-loop tile refinement (issue 12): measured re-solve rounds after the verify loop, on a fake
lab whose truth (conductances and wires) differs from the model."""

import numpy as np
import pytest

from calibration import TwinParameters
from crossbar_ctl.engine._mapping import pair_transfer, selection_from_masks
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import PlanOptions, make_plan
from crossbar_ctl.engine._program import ProgramOptions, _selection, program_plan, readout_limits
from crossbar_ctl.engine._refine import measure_tile, refine_measured
from tests.crossbar_ctl.engine.fakes import FakeLab, array_model
from tests.crossbar_ctl.engine.test_engine_program import _net

WRONG_WIRES = TwinParameters(row_wire_resistance_ohm=14.0, col_wire_resistance_ohm=14.0, sense_resistance_ohm=30.0)


def _program(branches, max_closed, rounds):
    """The true pair error left after programming (rms, siemens), the record and the most closed."""
    model = array_model(branches=branches, wire_ohm=10.0, sense_ohm=20.0)
    lab = FakeLab(model, true_error=3e-4, true_twin=WRONG_WIRES, noise=1e-5)
    # without the common-mode joint cost (the default): this fake reads with no column gain error,
    # so the error the joint cost gives up for the common mode (up to w (G+ + G-), ~3e-8 S here) is
    # pure loss: with it the 14-branch ratio below is 0.71-0.77
    options = PlanOptions(max_closed=max_closed, common_mode_weight=0.0)
    plan = make_plan(_net(0), model, options=options)
    done = program_plan(lab, plan, model, options=ProgramOptions(refine_rounds=rounds))
    np.testing.assert_array_equal(lab.board.masks, done.tile(0, "masks"))  # what is kept is loaded
    truth = pair_transfer(lab.readout.transfer()[:6, :6]) - done.tile(0, "target_s")
    closed = selection_from_masks(done.tile(0, "masks"), branches).sum(axis=-1)
    return float(np.sqrt(np.mean(truth**2))), done.header.program, int(np.max(closed[:, 0::2] + closed[:, 1::2]))


@pytest.mark.parametrize("branches, max_closed, ratio", [(14, None, 0.13), (12, 8, 0.31)])
def test_refinement_takes_the_true_error_below_the_verify_loop(branches, max_closed, ratio):
    """Above 12 branches per cell (a rotating window, wires) and under max_closed: the true error after
    refinement over the verify loop's alone, measured 0.10 and 0.25 with the six tail rounds of
    ``ProgramOptions``, 272 readout vectors each (0.14 and 0.40 without them, 224 vectors; 0.28 and
    0.56 with the verify loop of the working tree of 2 Dec 00:00). At 6-8 branches the pairs sit
    near their subset sums' spacing and it gains less (0.71 at 8)."""
    before, _, _ = _program(branches, max_closed, 0)
    after, record, closed = _program(branches, max_closed, 6)
    assert after < ratio * before
    assert record.refine_rounds[0] > 0 and record.refine_readings > 0
    assert max_closed is None or closed <= max_closed


def test_measure_tile_removes_the_channels_offsets():
    model = array_model(wire_ohm=5.0, sense_ohm=10.0)
    lab = FakeLab(model, noise=0.0)
    offset = np.linspace(-1e-7, 1e-7, model.geometry[1])
    plain = lab.readout.mvm
    lab.readout.mvm = lambda volts: plain(volts) + offset
    selection = np.zeros((6 * 4, 8), bool)
    selection[:, [0, 5]] = True
    from crossbar_ctl.engine._mapping import Tile
    from crossbar_ctl.engine._program import readout_limits

    tile = Tile(0, 0, 6, 0, 4)
    context = np.zeros(model.geometry[:2], np.uint64)
    _, transfer, _, readings = measure_tile(lab, model, tile, selection, context, repeats=2,
                                            limits=readout_limits(lab), twin=model.twin)
    np.testing.assert_allclose(transfer, lab.readout.transfer()[:6, :8], rtol=1e-10)
    assert readings == (6 + 1) * 2  # two zero vectors, two per row


def _uniform_net(seed):
    rng = np.random.default_rng(seed)
    return build_network([rng.uniform(-1, 1, size=(4, 7))], [rng.uniform(-1, 1, size=4)], ["none"],
                         input_shape=None, strides=[1], paddings=[0], name="uniform 7-4")


def _refined_error(noise, cell_scale, true_error, plan_options=None, **options):
    """Mean over three arrays of the true rms pair error (siemens) after refining a verified 8x8x8
    tile, and the mean readout vectors the refinement read. ``cell_scale``: a relative error common
    to every branch of a cell, drawn per cell (the calibration's cell scale on pcb)."""
    errors, readings = [], []
    for seed in range(3):
        model = array_model(rows=8, cols=8, branches=8, wire_ohm=2.0, sense_ohm=10.0, seed=seed)
        lab = FakeLab(model, true_error=true_error, noise=noise, seed=seed)
        scale = 1 + cell_scale * np.random.default_rng(seed + 7).standard_normal(model.geometry[:2])
        lab.readout.true_g = lab.readout.true_g * scale[..., None]
        plan = program_plan(lab, make_plan(_uniform_net(seed), model, options=plan_options), model,
                            options=ProgramOptions(refine_rounds=0, affine_vectors=0))
        tile = plan.header.tiles[0].tile
        target = plan.tile(0, "target_s").ravel()
        selection = _selection(plan.tile(0, "masks")[tile.block], tile, 8)
        done = refine_measured(lab, model, tile, selection, target, np.zeros((8, 8), np.uint64), twin=model.twin,
                               limits=readout_limits(lab), rounds=6, repeats=4, **options)
        true = pair_transfer(lab.readout.transfer()[tile.block]).ravel() - target
        errors.append(np.sqrt(np.mean(true**2)))
        readings.append(done.readings)
    return float(np.mean(errors)), float(np.mean(readings))


def test_longer_reads_where_pairs_are_ambiguous_cost_readings_and_buy_nothing_on_the_default_plan():
    """Read noise the limit (0.03 % per reading, branches known to 1e-5): reading the rows with an
    ambiguous pair four times longer, up to 64 readings, costs 6.5 times the readout vectors (733
    against 112) and leaves 1.05 of the true error of 4 readings (3.49e-8 against 3.31e-8 S) on
    plans of the optimizer's fewest-closed tie-break (5a70fde; 0.78 before it, 0.87 with the
    common-mode joint cost): why ``refine_max_repeats`` stays at 4, off."""
    plain, plain_reads = _refined_error(3e-4, 0.0, 1e-5)
    longer, longer_reads = _refined_error(3e-4, 0.0, 1e-5, max_repeats=64)
    assert 0.9 * plain < longer < 1.2 * plain
    assert longer_reads > 4 * plain_reads


def test_measured_cell_gains_scale_the_moves():
    """Each cell's branches all 0.2 % off together (the kind of error the pcb calibration's twin
    leaves, 6.6e-4 rms there), read noise 2e-5: the moves predicted with the twin's slopes times the
    measured over predicted transfer of each cell leave 0.87 of the true error of the twin's slopes
    alone (3.52e-8 against 4.04e-8 S; 0.75 at 2e88727, whose guard probe read twice as many noise
    samples before the refinement: the ratio moves that much with the noise drawn). Planned without
    the common-mode joint cost: with it the pairs carry less conductance, so a cell-wide error
    costs less and the ratio is 0.89."""
    options = PlanOptions(common_mode_weight=0.0)
    scaled, _ = _refined_error(2e-5, 2e-3, 5e-5, options)
    plain, _ = _refined_error(2e-5, 2e-3, 5e-5, options, measured_gain=False)
    assert scaled < 0.93 * plain


def test_difference_channels_read_the_pairs_closer_to_the_truth():
    """A 16x16x8 pcb board, four random half-closed selections of one tile, each read with 8
    single-ended unit vectors per row and with 4 through the columns and the difference channels
    (the same readout vectors): measured 3.5-4.3e-8 S rms from the true pair transfer against
    5.2-5.8e-8 (0.73), stated noise 1.3e-8 against 2.9e-8 (the channels' gain and common-mode leak
    fitted on the columns' readings as they accumulate: the columns' gain errors are its floor)."""
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._mapping import Tile
    from crossbar_ctl.engine._refine import DifferenceChannels
    from crossbar_ctl.engine._workflow import array_model as model_of

    with open_lab({"name": "diff", "sim": {"rows": 16, "cols": 16, "branches": 8, "profile": "pcb", "seed": 0}}) as lab:
        model = model_of(calibrate(lab))
        tile, channels = Tile(0, 0, 16, 0, 8), DifferenceChannels(8)
        rng = np.random.default_rng(0)
        errors = {True: [], False: []}
        noises = {True: [], False: []}
        for _ in range(4):
            selection = rng.random((16 * 8, 16)) < 0.5
            for diff in (False, True):
                _, transfer, noise, count = measure_tile(
                    lab, model, tile, selection, np.zeros((16, 16), np.uint64), repeats=4 if diff else 8,
                    limits=readout_limits(lab), twin=model.twin, channels=channels if diff else None)
                assert count == 136  # 17 vectors x 8, or x 4 through both paths
                truth = pair_transfer(np.asarray(lab.truth.transfer_s())[tile.block])
                errors[diff].append(np.sqrt(np.mean((pair_transfer(transfer) - truth) ** 2)))
                noises[diff].append(noise)
    assert np.mean(errors[True]) < 0.85 * np.mean(errors[False])
    assert np.mean(noises[True]) < 0.6 * np.mean(noises[False])


def test_difference_channels_fit_gain_and_leak_and_keep_the_columns_until_they_can():
    """Channel 0 reads 1.001 (I+ - I-) + 1e-4 (I+ + I-) / 2 and is fitted back (to 1e-6); channel 1's
    minus column never conducts (a rank-one fit: its gain and leak cannot be told apart), so its pairs
    keep the columns' difference (the demo's sparse last tile, where a solve raised 'Singular matrix')."""
    from crossbar_ctl.engine._refine import DifferenceChannels

    rng = np.random.default_rng(0)
    columns = rng.uniform(1e-4, 5e-4, size=(12, 4))
    columns[:, 3] = 0.0
    plus, minus = columns[:, 0::2], columns[:, 1::2]
    diff = 1.001 * (plus - minus) + 1e-4 * (plus + minus) / 2
    channels = DifferenceChannels(2)
    difference, noise = channels.read(columns, np.stack([diff + 1e-9, diff - 1e-9]))
    np.testing.assert_allclose(difference[:, 0], plus[:, 0] - minus[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(difference[:, 1], plus[:, 1] - minus[:, 1])
    assert noise is None
