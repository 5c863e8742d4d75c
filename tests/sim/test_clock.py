"""The simulated clock: days of drift without waiting, and a lab opened later is the same board drifted."""

from __future__ import annotations

import types

import numpy as np
import pytest

from crossbar_ctl._lab import advance_sim_time, open_lab
from crossbar_ctl.core.errors import ConfigError

DAYS_31_S = 31 * 86400.0


def _config(**sim) -> dict:
    return {"name": "clock", "sim": {"rows": 8, "cols": 8, "branches": 4, "profile": "ideal", "seed": 5, **sim}}


def test_advance_sim_time_drifts_the_resistors_by_the_random_walk_of_the_time_passed():
    # the ideal board: one drift rate, no temperature wander
    with open_lab(_config(temperature_c=25.0)) as lab:
        before = np.asarray(lab.truth.branch_conductance_s()).copy()
        start = lab.sim.time_s
        now = advance_sim_time(lab, DAYS_31_S)
        after = np.asarray(lab.truth.branch_conductance_s())
    assert now == pytest.approx(start + DAYS_31_S)
    # relative sd of a random walk of 1e-4 per sqrt(hour) over 744 h: 2.7e-3 (the switch's 1e-3 of the
    # branch does not drift); 256 branches give the sd to ~5 %
    moved = np.std(np.log(after / before))
    assert moved == pytest.approx(1e-4 * np.sqrt(744.0), rel=0.2)


def test_a_lab_opened_later_is_the_same_board_drifted_at_the_set_temperature():
    with open_lab(_config()) as fresh:
        made = np.asarray(fresh.truth.branch_conductance_s()).copy()
    with open_lab(_config(start_time_s=DAYS_31_S, temperature_c=30.0)) as later:
        drifted = np.asarray(later.truth.branch_conductance_s())
        assert later.sim.time_s >= DAYS_31_S
        assert later.temperature_c() == pytest.approx(30.0, abs=0.01)
    with open_lab(_config(start_time_s=DAYS_31_S, temperature_c=30.0)) as again:
        assert np.array_equal(np.asarray(again.truth.branch_conductance_s()), drifted)  # deterministic
    # the same resistors: moved by drift (~3e-3) and 5 K of TCR (5e-4), not redrawn (20 % spread)
    change = np.log(drifted / made)
    assert 1e-3 < np.std(change) < 1e-2


def test_advance_sim_time_refuses_hardware_and_bad_durations():
    with pytest.raises(ConfigError, match="only a simulated lab"):
        advance_sim_time(types.SimpleNamespace(sim=None), 10.0)
    with open_lab(_config()) as lab:
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ConfigError, match="duration_s"):
                advance_sim_time(lab, bad)


def test_pcb_drifts_at_the_thin_film_bound_unless_the_lab_sets_its_own_rate():
    from crossbar_ctl._lab import set_sim_temperature_c

    def month_log_change(**sim) -> np.ndarray:
        with open_lab(_config(profile="pcb", temperature_c=25.0, **sim)) as lab:
            before = np.asarray(lab.truth.branch_conductance_s()).copy()
            advance_sim_time(lab, DAYS_31_S)
            set_sim_temperature_c(lab, 25.0)  # the month's temperature wander taken back out
            return np.log(np.asarray(lab.truth.branch_conductance_s()) / before)

    thin_film, set_rate = month_log_change(), month_log_change(drift_per_hour=1e-4)
    # Vishay TNPW e3: <= 0.05 % in 1000 h, 1.6e-5 per sqrt(hour); each resistor's rate lognormal
    # (log-sd 0.5: rms factor exp(0.125) = 1.13); 256 branches give the sd to ~5 %
    assert np.std(thin_film) == pytest.approx(1.6e-5 * np.sqrt(744.0) * np.exp(0.125), rel=0.25)
    # the lab's own rate scales the same draws (the switch's 1e-3 of a branch does not drift)
    np.testing.assert_allclose(set_rate, thin_film * 1e-4 / 1.6e-5, rtol=2e-3, atol=1e-7)
