"""In-loop affine correction and differential sensing in ``check`` (issue 12 items 1, 3, 4), on a
small simulated pcb lab: each mechanism on against off moves the layer's enob; the correction
travels in the plan (versioned, validated; plans without it still load); the budget's stages
still add up to the error."""

from __future__ import annotations

import numpy as np
import pytest

from calibration import calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._affine import measure_affine, tile_range
from crossbar_ctl.engine._check import run_check
from crossbar_ctl.engine._network import build_network
from crossbar_ctl.engine._plan import SwitchPlan, make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.engine._workflow import array_model

pytestmark = pytest.mark.slow  # a calibration and a programming of a 9x12x6 lab: ~20 s on an idle machine


@pytest.fixture(scope="module")
def programmed():
    rng = np.random.default_rng(0)
    network = build_network([rng.normal(size=(6, 8))], [0.3 * rng.normal(size=6)], ["none"], input_shape=None,
                            strides=[1], paddings=[0], name="small")
    x = rng.uniform(0, 1, size=(200, 8))
    with open_lab({"sim": {"rows": 9, "cols": 12, "branches": 6, "seed": 0, "profile": "pcb"}}) as lab:
        model = array_model(calibrate(lab))
        # the refinement single-ended: on the difference channels it already reads away most of the
        # columns' gain errors, and the correction on the columns then adds 0.08 bit (6.50 -> 6.58)
        plan = program_plan(lab, make_plan(network, model), model,
                            options=ProgramOptions(affine_vectors=0, refine_differential=False))
        yield lab, plan, x, model


def _enob(lab, plan, x, details=None) -> float:
    return run_check(lab, plan, x, nplc=4.0, details=details).layers[0].enob


def test_affine_correction_and_difference_channels_raise_the_enob(programmed):
    lab, plan, x, _ = programmed
    assert plan.header.affine is None
    bare = _enob(lab, plan, x)
    before = lab.board.bound_readings
    single = measure_affine(lab, plan, differential=False, measured_bound=False)  # the correction alone
    assert single.header.affine.readings == 64 + lab.board.bound_readings - before  # and the bound's
    assert not single.header.affine.differential
    corrected = _enob(lab, single, x)
    diff = measure_affine(lab, plan, measured_bound=False)
    assert diff.header.affine.differential
    differential = _enob(lab, diff, x)
    # measured (9x12x6 pcb, seed 0; programming's fresh probe reads since 4879b09, so other noise
    # draws): 6.50 bits bare, 6.62 with the correction on the columns (6.33 / 6.61 before), 8.42
    # with it on the difference channels
    assert corrected > bare + 0.06
    assert differential > corrected + 1.4


def test_the_correction_travels_in_the_plan_and_is_validated(programmed, tmp_path):
    lab, plan, x, _ = programmed
    corrected = measure_affine(lab, plan, vectors=16, seed=3)
    corrected.save(tmp_path / "plan.npz")
    loaded = SwitchPlan.load(tmp_path / "plan.npz")
    assert loaded.header.affine == corrected.header.affine
    assert np.array_equal(loaded.tile(0, "affine_gain"), corrected.tile(0, "affine_gain"))
    plan.save(tmp_path / "old.npz")  # a plan without the correction (as before it existed) loads
    assert SwitchPlan.load(tmp_path / "old.npz").header.affine is None
    damaged = dict(corrected.arrays)
    damaged["tile0.affine_gain"] = -damaged["tile0.affine_gain"]
    with pytest.raises(EngineError, match="affine"):
        run_check(lab, SwitchPlan(corrected.header, damaged), x)
    del damaged["tile0.affine_gain"]
    with pytest.raises(EngineError, match="affine"):
        run_check(lab, SwitchPlan(corrected.header, damaged), x)
    with pytest.raises(ValueError):
        corrected.header.affine.model_validate({**corrected.header.affine.model_dump(), "version": 2})


def test_program_measures_the_correction_and_the_budget_adds_up(programmed):
    lab, plan, x, model = programmed
    before = lab.board.bound_readings
    again = program_plan(lab, plan, model, options=ProgramOptions(max_iterations=0, affine_vectors=8))
    assert again.header.affine.vectors == 8
    assert again.header.affine.readings == 8 * len(plan.header.tiles) + lab.board.bound_readings - before
    details: dict = {}
    report = run_check(lab, again, x, details=details)
    stages = details["stages"][0]
    # the closed loop's chain: its measurement, the true circuit, the readout (each corrected)
    parts = ((stages["measured"] - details["reference"][0]) + (stages["circuit"] - stages["measured"])
             + (stages["analog"] - stages["circuit"]))
    assert np.allclose(parts, stages["analog"] - details["reference"][0], rtol=0, atol=1e-12)
    budget = report.layers[0].budget
    assert budget.prediction == "closed loop" and budget.read_noise is not None and budget.measurement is not None
    assert budget.total == pytest.approx(np.sqrt(np.mean((stages["analog"] - details["reference"][0]) ** 2)))
    assert report.layers[0].common_mode_ratio > 1


def test_each_tile_read_at_its_own_adc_range_lowers_the_readout_stage(programmed):
    """Where the total-current limit bounds the row voltages (here a lab limit of 1.5 mA), the
    columns fill a fraction of the ADC's range; reading each tile at the smallest range that holds
    its columns for any input takes the range's floor and steps down, and the readout stage with it."""
    lab, plan, x, _ = programmed
    limits = lab.limits
    lab.limits = limits.model_copy(update={"max_total_current_a": 1.5e-3})
    try:
        budgets = {}
        for ranged in (False, True):  # on the closed-branch bound (the measured one fills the range)
            corrected = measure_affine(lab, plan, ranged=ranged, measured_bound=False)
            budgets[ranged] = run_check(lab, corrected, x, nplc=4.0).layers[0]
            assert corrected.header.affine.ranged == ranged
            assert (tile_range(corrected, 0) is not None) == ranged
        full = lab.board.adc_range_a()
        assert tile_range(measure_affine(lab, plan, measured_bound=False), 0) < 0.25 * full
        assert lab.board.adc_range_a() == full  # restored after every tile
    finally:
        lab.limits = limits
    # measured (9x12x6 pcb, seed 0): readout stage 2.2e-3 -> 9.0e-4 (output units), enob 7.7 -> 8.2
    assert budgets[True].budget.read_noise < 0.7 * budgets[False].budget.read_noise
    assert budgets[True].enob > budgets[False].enob + 0.2


def test_the_calibrated_total_current_bound_lowers_the_readout_stage(programmed):
    """Where the total-current limit bounds the row voltages (1.5 mA here), bounding it by the
    cells' calibrated conductance (checked by the drivers) rather than closed branches over the
    smallest resistance lets the rows rise ~2.5x: the readout stage falls; the truth's total
    current stays within the limit."""
    lab, plan, x, _ = programmed
    limits = lab.limits
    lab.limits = lab.guard.limits = limits.model_copy(update={"max_total_current_a": 1.5e-3})
    board, array = lab.sim.devices["board"], lab.sim.array
    read, peak = board._column_currents_a, [0.0]

    def watched(voltage_v):  # the truth's total current into the rows of every reading
        circuit = array.circuit(np.ones(array.rows, bool), np.ones(array.cols, bool))
        current = circuit.solve(board.dac_output_v(voltage_v)[None, :]).row_current_a
        peak[0] = max(peak[0], float(np.sum(np.abs(current))))
        return read(voltage_v)

    board._column_currents_a = watched
    try:
        layers = {}
        for bound in (False, True):
            corrected = measure_affine(lab, plan, measured_bound=bound)
            assert corrected.header.affine.measured_bound == bound
            layers[bound] = run_check(lab, corrected, x, nplc=4.0).layers[0]
    finally:
        lab.limits = lab.guard.limits = limits
        board._column_currents_a = read
    # measured (9x12x6 pcb, seed 0): readout stage 8.7e-4 -> 5.4e-4, 1.30 mA; enob 8.34 -> 8.40 with
    # the sharper column gains of be7110d (8.38 -> 8.52 before), the programmed part dominating
    assert layers[True].budget.read_noise < 0.75 * layers[False].budget.read_noise
    assert layers[True].enob > layers[False].enob + 0.03
    assert 0.7 * 1.5e-3 < peak[0] <= 1.5e-3



def test_the_difference_channels_range_holds_the_pairs_differences_not_their_columns():
    """Read through the difference channels, the ADC converts each pair's difference, so the range
    that holds it for any input is set by ``|G+ - G-|``, not by the columns: pairs that carry a
    common mode beside their signal get a smaller range (its floor and steps with it)."""
    from types import SimpleNamespace

    from crossbar_ctl.engine._affine import tile_range_a
    from crossbar_ctl.engine._mapping import Tile

    rows, pairs = 4, 2
    common = np.full((rows, pairs), 1e-4)  # siemens a side
    signal = np.array([[5e-5, -2e-5], [1e-5, 3e-5], [-4e-5, 0.0], [2e-5, 1e-5]])
    cell = np.empty((rows, 2 * pairs))
    cell[:, 0::2], cell[:, 1::2] = common + np.maximum(signal, 0), common + np.maximum(-signal, 0)
    board = SimpleNamespace(adc_range_a=lambda: 1e-3, set_adc_range_a=lambda value: None)
    lab = SimpleNamespace(readout=SimpleNamespace(board=board), board=SimpleNamespace())  # no driver bound: row sums
    tile = Tile(layer=0, input_start=0, input_stop=rows, output_start=0, output_stop=pairs)
    plan = SimpleNamespace(header=SimpleNamespace(tiles=[SimpleNamespace(tile=tile)]), tile=lambda t, name: cell)
    limits = {"max_current_a": 1e-3, "max_total_current_a": 1e-3}
    columns = tile_range_a(lab, plan, 0, limits)
    differences = tile_range_a(lab, plan, 0, limits, differential=True)
    rowsum = cell.sum(axis=1)
    assert columns == pytest.approx(1.25 * 0.9 * 1e-3 * float(np.max(cell / rowsum[:, None])))
    assert differences == pytest.approx(1.25 * 0.9 * 1e-3 * float(np.max(np.abs(signal) / rowsum[:, None])))
    assert differences < 0.4 * columns


def test_inputs_on_a_grid_read_on_the_dac_codes_lower_the_readout_stage(programmed, monkeypatch):
    """4-bit inputs scaled to whole DAC steps (``DACBITS?``) carry no quantization error: where the
    total-current limit holds the rows low (1.5 mA here), the readout stage falls against the
    same inputs scaled freely."""
    import crossbar_ctl.engine._check as check

    lab, plan, _, _ = programmed
    assert lab.board.dac_lsb_v() == 2.0**-15  # pcb: 16 bits over +-1 V
    pixels = np.random.default_rng(7).integers(0, 17, size=(200, 8)) / 16
    limits = lab.limits
    lab.limits = limits.model_copy(update={"max_total_current_a": 1.5e-3})
    try:
        corrected = measure_affine(lab, plan, measured_bound=False)
        aligned = run_check(lab, corrected, pixels, nplc=4.0).layers[0]
        monkeypatch.setattr(check, "dac_step_v", lambda lab: None)
        free = run_check(lab, corrected, pixels, nplc=4.0).layers[0]
    finally:
        lab.limits = limits
    # measured (9x12x6 pcb, seed 0; the bias row, off the grid, keeps its steps): readout stage
    # 9.57e-4 -> 6.41e-4, enob 8.36 -> 8.47
    assert aligned.budget.read_noise < 0.8 * free.budget.read_noise
    assert aligned.enob > free.enob + 0.05
