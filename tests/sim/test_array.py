"""The simulated physical array: draws, masks, faults, temperature, drift, noise, circuit cache."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl.core.config import Fault, ResistorPopulation, SimArrayConfig
from crossbar_ctl.core.errors import ConfigError
from sim import PhysicalArray


def small(**changes) -> SimArrayConfig:
    return SimArrayConfig(rows=6, cols=5, branches=4, **{"profile": "ideal", **changes})  # the array's own model


def test_same_seed_same_array_other_seed_other_array():
    a, b = PhysicalArray(small(seed=3)), PhysicalArray(small(seed=3))
    np.testing.assert_array_equal(a.branch_conductance_s(), b.branch_conductance_s())
    c = PhysicalArray(small(seed=4))
    assert not np.array_equal(a.branch_conductance_s(), c.branch_conductance_s())


def test_a_noise_seed_draws_other_noise_on_the_same_board():
    """``noise_seed``: the same resistors and drift, another read-noise realization; None keeps the
    board's own (the stream ``seed`` draws, so default runs stay as they were)."""
    current = np.full(1000, 1e-3)
    own, again = PhysicalArray(small(seed=3)), PhysicalArray(small(seed=3, noise_seed=None))
    other, same = PhysicalArray(small(seed=3, noise_seed=1)), PhysicalArray(small(seed=3, noise_seed=1))
    np.testing.assert_array_equal(own.branch_conductance_s(), other.branch_conductance_s())
    for array in (own, again, other, same):
        array.advance_time(86400.0)  # drift draws from its own stream: the same on every one
    np.testing.assert_array_equal(own.branch_conductance_s(), other.branch_conductance_s())
    reads = [array.read_noise(current, 1e-2, 1.0) for array in (own, again, other, same)]
    np.testing.assert_array_equal(reads[0], reads[1])
    np.testing.assert_array_equal(reads[2], reads[3])
    assert not np.array_equal(reads[0], reads[2])
    assert np.std(reads[2] - current) == pytest.approx(np.std(reads[0] - current), rel=0.15)
    with pytest.raises(ValueError):
        small(noise_seed=-1)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "ladder"])
def test_populations(kind):
    population = ResistorPopulation(kind=kind, nominal_resistance_ohm=1e4, spread=0.1)
    config = SimArrayConfig(rows=40, cols=40, branches=4, population=population,
                            drift_per_hour=0.0, tcr_per_k=0.0)
    resistance = PhysicalArray(config).resistance_ohm()
    assert resistance.shape == (40, 40, 4)
    if kind == "uniform":
        assert resistance.min() >= 0.9e4 and resistance.max() <= 1.1e4
    scale = 2.0 ** np.arange(4) if kind == "ladder" else np.ones(4)
    median = np.median(resistance / scale, axis=(0, 1))
    np.testing.assert_allclose(median, 1e4, rtol=0.02)
    np.testing.assert_allclose(np.std(np.log(resistance / scale), axis=(0, 1)),
                               0.1 if kind != "uniform" else 0.2 / np.sqrt(12), rtol=0.1)


def test_branch_and_cell_conductance():
    array = PhysicalArray(small(switch_off_conductance_s=1e-9))
    truth = 1.0 / (array.resistance_ohm() + array.switch_on_resistance_ohm)
    np.testing.assert_allclose(array.branch_conductance_s(), truth, rtol=1e-15)
    np.testing.assert_allclose(array.cell_conductance_s(), 4e-9, rtol=1e-12)
    array.set_mask(2, 3, 0b0101)
    expected = truth[2, 3, 0] + truth[2, 3, 2] + 2e-9
    assert array.cell_conductance_s()[2, 3] == pytest.approx(expected, rel=1e-14)
    array.set_masks(np.full((6, 5), 0b1111))
    np.testing.assert_allclose(array.cell_conductance_s(), truth.sum(axis=2), rtol=1e-14)
    array.set_row_masks(0, [0, 1, 2, 4, 8])
    assert list(array.masks[0]) == [0, 1, 2, 4, 8]
    assert array.masks.dtype == np.uint64


def test_switch_on_resistance_has_the_configured_mean():
    config = SimArrayConfig(rows=50, cols=50, branches=8, switch_on_resistance_ohm=20.0,
                            switch_on_spread=0.1)
    on = PhysicalArray(config).switch_on_resistance_ohm
    assert on.mean() == pytest.approx(20.0, rel=0.01)
    assert np.std(np.log(on)) == pytest.approx(0.1, rel=0.05)


def test_faults_from_config_and_at_run_time():
    faults = (
        Fault(kind="open_resistor", row=0, col=0, branch=0),
        Fault(kind="short_resistor", row=0, col=0, branch=1),
        Fault(kind="switch_stuck_open", row=0, col=0, branch=2),
    )
    array = PhysicalArray(small(faults=faults, switch_off_conductance_s=1e-10))
    branch = array.branch_conductance_s()
    assert branch[0, 0, 0] == 1e-10
    assert branch[0, 0, 1] == pytest.approx(1.0 / array.switch_on_resistance_ohm[0, 0, 1])
    assert branch[0, 0, 2] == 1e-10
    # Stuck open conducts leakage even when commanded closed.
    array.set_mask(0, 0, 0b0100)
    assert array.cell_conductance_s()[0, 0] == pytest.approx(4e-10)
    # Stuck closed conducts with every switch commanded open.
    before = array.cell_conductance_s()[1, 1]
    array.inject_fault(Fault(kind="switch_stuck_closed", row=1, col=1, branch=3))
    assert array.cell_conductance_s()[1, 1] == pytest.approx(
        before - 1e-10 + array.branch_conductance_s()[1, 1, 3])
    assert len(array.faults) == 4


def test_short_with_ideal_switch_is_refused():
    config = small(switch_on_resistance_ohm=0.0,
                   faults=(Fault(kind="short_resistor", row=0, col=0, branch=0),))
    with pytest.raises(ConfigError, match="short_resistor"):
        PhysicalArray(config)


def test_temperature_scales_resistance_and_invalidates_the_circuit():
    array = PhysicalArray(small(tcr_per_k=1e-3, temperature_c=25.0, reference_temperature_c=25.0))
    r25 = array.resistance_ohm()
    circuit = array.circuit()
    assert array.circuit() is circuit
    array.temperature_c = 35.0
    np.testing.assert_allclose(array.resistance_ohm(), r25 * 1.01, rtol=1e-14)
    assert array.circuit() is not circuit
    with pytest.raises(ConfigError, match="temperature_c"):
        array.temperature_c = float("nan")


def test_drift_is_a_random_walk_of_the_configured_size():
    config = SimArrayConfig(rows=40, cols=40, branches=8, drift_per_hour=1e-3, seed=5,
                            profile="ideal")  # one drift rate for every resistor
    array = PhysicalArray(config)
    r0 = array.resistance_ohm()
    array.advance_time(0.0)
    np.testing.assert_array_equal(array.resistance_ohm(), r0)
    array.advance_time(4 * 3600.0)
    assert array.time_s == 4 * 3600.0
    step = np.log(array.resistance_ohm() / r0)
    assert np.std(step) == pytest.approx(2e-3, rel=0.05)
    # Drift has its own seeded stream: a twin array drifts identically.
    twin = PhysicalArray(config)
    twin.advance_time(4 * 3600.0)
    np.testing.assert_array_equal(twin.resistance_ohm(), array.resistance_ohm())
    with pytest.raises(ConfigError, match="duration_s"):
        array.advance_time(-1.0)


def test_circuit_is_cached_per_connection_and_follows_masks():
    array = PhysicalArray(small())
    rows = np.array([True, False, True, True, True, True])
    a = array.circuit(rows, None)
    assert array.circuit(rows.copy(), np.ones(5, bool)) is a
    assert array.circuit() is not a
    array.set_mask(0, 0, 1)
    b = array.circuit(rows, None)
    assert b is not a
    np.testing.assert_array_equal(b.conductance_s, array.cell_conductance_s())
    array.set_mask(0, 0, 1)  # no change, cache kept
    assert array.circuit(rows, None) is b
    assert not b.row_connected[1]


def test_read_noise_has_the_configured_spread():
    array = PhysicalArray(small(relative_noise=1e-3, noise_floor_fraction=1e-4))
    current = np.full(200_000, 1e-3)
    noisy = array.read_noise(current, 1e-2, 4.0)
    expected = np.hypot(1e-3 * 1e-3, 1e-4 * 1e-2) / 2.0
    assert np.std(noisy - current) == pytest.approx(expected, rel=0.02)
    assert abs(np.mean(noisy - current)) < 5 * expected / np.sqrt(current.size)
    assert array.read_noise(np.zeros((2, 3)), 1e-3, 1.0).shape == (2, 3)
    with pytest.raises(ConfigError):
        array.read_noise(1e-3, 0.0, 1.0)
    with pytest.raises(ConfigError):
        array.read_noise(1e-3, 1e-3, -1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.set_mask(6, 0, 1),
        lambda a: a.set_mask(0, 0, 16),
        lambda a: a.set_mask(0, 0, -1),
        lambda a: a.set_row_masks(0, [1, 2, 3]),
        lambda a: a.set_masks(np.zeros((5, 6), int)),
        lambda a: a.set_masks(np.full((6, 5), 0.5)),
        lambda a: a.circuit(np.ones(3, bool)),
        lambda a: a.inject_fault(Fault(kind="open_resistor", row=0, col=0, branch=4)),
    ],
)
def test_bad_input_raises_and_changes_nothing(call):
    array = PhysicalArray(small())
    before = array.masks.copy()
    with pytest.raises(ConfigError):
        call(array)
    np.testing.assert_array_equal(array.masks, before)
    assert array.faults == ()


def test_array_circuit_matches_an_ideal_mvm_without_parasitics():
    config = small(row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0,
                   sense_resistance_ohm=0.0)
    array = PhysicalArray(config)
    rng = np.random.default_rng(0)
    array.set_masks(rng.integers(0, 16, size=(6, 5)))
    v = rng.normal(size=6)
    current = array.circuit().solve(v).col_current_a[0]
    np.testing.assert_allclose(current, v @ array.cell_conductance_s(), rtol=1e-14)


def test_config_from_a_mapping_and_bad_config_names_the_key():
    array = PhysicalArray({"rows": 3, "cols": 2, "branches": 2})
    assert array.masks.shape == (3, 2)
    with pytest.raises(ConfigError) as info:
        PhysicalArray({"rows": 0})
    assert info.value.key == "rows"
    with pytest.raises(ConfigError, match="kind"):
        array.inject_fault({"kind": "melted", "row": 0, "col": 0, "branch": 0})
