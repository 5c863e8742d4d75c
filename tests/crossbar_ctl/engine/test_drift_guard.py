"""Keeping precision over time on a small pcb board, against the simulator's truth: the drift
guard's sweep (every stale case beyond the budget refused, never a fresh plan), recalibrate and
program --update after a month, and the refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from calibration import CalibrationRecord, calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._guard import DEFAULT_SLACK_BITS, median_scale, probe_plan
from crossbar_ctl.engine._mapping import pair_transfer
from crossbar_ctl.engine._program import load_tile
from crossbar_ctl.engine._update import (
    UPDATE_GOAL_BITS,
    choose_pairs,
    recalibrate_plan,
    update_plan,
)
from crossbar_ctl.engine._workflow import program_network

SEED = 1
GRAY_BITS = 0.5
"""How far the probe's estimate of the realized median's loss may be off: it reads the pairs through
the readout's own static error, as large as a fresh pair's (2.4-4.3e-8 S rms against a fresh median
of 2.9-9.7e-8 on these boards): up to 0.5 bit here (72 h on the 16x16x8 board: 0.25 lost, read as
0.65)."""
HOUR_S = 3600.0
DRIFT_PER_HOUR = 1e-4
"""Six times pcb's thin-film drift (1.6e-5): the sweep reaches well past the budget within a year."""


def lab_config(hours: float = 0.0, temperature_c: float = 25.0, seed: int = SEED, size: int = 8,
               branches: int = 6, drift_per_hour: float = DRIFT_PER_HOUR) -> dict:
    """The same pcb board (8x8x6 by default) opened ``hours`` after it was calibrated and programmed."""
    return {"name": "drift", "sim": {"rows": size, "cols": size, "branches": branches, "profile": "pcb",
                                    "seed": seed, "start_time_s": hours * HOUR_S, "temperature_c": temperature_c,
                                    "drift_per_hour": drift_per_hour}}


@pytest.fixture(scope="module")
def programmed():
    """The board calibrated and a 7-4 U(-1, 1) layer programmed on it, at time 0; and the truth's
    pair errors of the plan then (weight units)."""
    network, x = uniform_layer(7, 4, samples=20, seed=SEED)
    with open_lab(lab_config()) as lab:
        record = calibrate(lab)
        plan = program_network(lab, network, record)
        fresh = true_errors(lab, plan)
    return record, plan, x, fresh


def test_choose_pairs_takes_the_fewest_worst_first_that_bring_the_median_and_rms_back():
    rng = np.random.default_rng(0)
    median, rms, goal = 1.0, 1.5, 2.0**UPDATE_GOAL_BITS
    for scale in (1.0, 1.5, 3.0, 8.0):
        error = np.abs(rng.normal(0.0, scale, size=200))
        picked = choose_pairs(error, median, rms)
        k = int(picked.sum())
        assert np.all(error[picked].min(initial=np.inf) >= error[~picked].max(initial=0.0))  # worst first

        def within(chosen, error=error):  # each rewritten pair back to the fresh median
            after = np.where(chosen, median, error)
            return median_scale(after) <= median * goal + 1e-12 and np.sqrt(np.mean(np.where(
                chosen, rms, error) ** 2)) <= rms * goal + 1e-12
        assert within(picked) or k == error.size
        if k:  # one fewer would miss the goal
            fewer = picked.copy()
            fewer[np.argsort(-error)[k - 1]] = False
            assert not within(fewer)
    assert not choose_pairs(np.full(50, 0.5), median, rms).any()  # within the goal: nothing to rewrite
    spike = np.full(50, 0.5)
    spike[7] = 10.0
    assert np.flatnonzero(choose_pairs(spike, median, 5.0, limit_s=8.0)).tolist() == [7]
    # read noise is taken out: errors that read 1.2x the fresh median only through their noise stay
    noisy = np.abs(rng.normal(0.0, 1.2 * median / 0.6745, size=400))
    assert not choose_pairs(noisy, median, 10.0, noise_var_s2=(median / 0.6745) ** 2 * (1.2**2 - 1)).any()


def layer_true_errors(lab, plan) -> list[np.ndarray]:
    """Each layer's true (noiseless) pair transfer minus target, weight units, each tile loaded in turn."""
    layers = []
    for lp in plan.header.layers:
        errors = []
        for t in lp.tiles:
            tile = plan.header.tiles[t].tile
            load_tile(lab, plan.step_masks(tile.step))
            circuit = np.asarray(lab.truth.transfer_s())[tile.block]
            errors.append((pair_transfer(circuit) - plan.tile(t, "target_s")).ravel() / lp.conductance_per_weight_s)
        layers.append(np.concatenate(errors))
    return layers


def true_errors(lab, plan) -> np.ndarray:
    """:func:`layer_true_errors` of every layer, in one flat array."""
    return np.concatenate(layer_true_errors(lab, plan))


def bits_lost(now: np.ndarray, fresh: np.ndarray) -> float:
    """The realized median bits lost: log2 of the median |error| now over fresh."""
    return float(np.log2(np.median(np.abs(now)) / np.median(np.abs(fresh))))


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)))


SWEEPS = {
    "8x8x6, 1e-4": ({"seed": SEED}, (1, 3, 6, 12, 24, 168, 744, 2160, 8760)),
    "16x16x8, 1.6e-5 (bench drift's)": ({"seed": 0, "size": 16, "branches": 8, "drift_per_hour": 1.6e-5},
                                        (24, 72, 168, 336, 744, 2160, 8760)),
}


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_guard_refuses_every_stale_case_beyond_budget_and_never_a_fresh_plan(programmed, sweep):
    board, hours = SWEEPS[sweep]
    if board["seed"] == SEED:
        _, plan, _, fresh = programmed
    else:
        network, _ = uniform_layer(board["size"] - 1, board["size"] // 2, samples=20, seed=board["seed"])
        with open_lab(lab_config(**board)) as lab:
            plan = program_network(lab, network, calibrate(lab))
            fresh = true_errors(lab, plan)
    cases = {}
    for name, config in [("fresh", lab_config(**board))] + [(f"{h} h", lab_config(h, **board)) for h in hours] + [
            ("+10 K", lab_config(temperature_c=35.0, **board))]:
        with open_lab(config) as lab:
            now = true_errors(lab, plan)
            cases[name] = (bits_lost(now, fresh), float(np.median(np.abs(now))), probe_plan(lab, plan))
    assert not cases["fresh"][2].over_budget  # never a fresh plan
    # beyond the budget: the truth's median error above the median the plan may reach
    beyond = {name: case for name, case in cases.items() if case[1] > case[2].layers[0].budget_median}
    assert len(beyond) >= 3  # the sweep reaches well past the budget
    for name, (lost, median, probe) in beyond.items():
        assert probe.over_budget, (name, median / probe.layers[0].budget_median, probe.layers[0].bits_lost)
    for name, (lost, median, probe) in cases.items():
        if lost > DEFAULT_SLACK_BITS + GRAY_BITS:
            # it measures the truth's loss, to the readout's static error (measured: 0.50 bit under the
            # truth after a year on the 8x8x6 board, 0.54 over it at +10 K on the 16x16x8)
            assert probe.layers[0].bits_lost == pytest.approx(lost, abs=0.6, rel=0.2), name
        if lost < DEFAULT_SLACK_BITS - GRAY_BITS:  # a plan that lost nothing runs
            assert not probe.over_budget, (name, lost, probe.layers[0].bits_lost)


@pytest.mark.slow
def test_a_month_later_recalibrate_and_update_bring_the_plan_back(programmed):
    record, plan, _, fresh = programmed
    with open_lab(lab_config(744)) as lab:
        truth = np.asarray(lab.truth.branch_conductance_s())
        stale = true_errors(lab, plan)
        new, report = recalibrate_plan(lab, plan, record)
        updated, update = update_plan(lab, plan, new)
        after = true_errors(lab, updated)
        probe_after = probe_plan(lab, updated)
    assert new.header.parent_checksum == record.checksum() != new.checksum()
    assert report.readings_fraction <= 0.15 and report.remeasured_rows
    rows = list(report.remeasured_rows)
    old_error = np.abs(record.conductance_s[rows] / truth[rows] - 1)[record.usable[rows]]
    new_error = np.abs(new.conductance_s[rows] / truth[rows] - 1)[new.usable[rows]]
    assert np.median(new_error) < 0.5 * np.median(old_error)  # the re-measured rows follow the drift
    assert update.pairs_over_before > 0 and update.pairs_over_after < update.pairs_over_before
    assert update.cells_rewritten <= 2 * update.pairs_resolved  # only the pairs over budget moved
    assert 0 < update.switch_writes == updated.header.program.cost.switch_writes  # counted by the driver
    # cells were rewritten, so the outputs' affine correction was measured again (as programming ends)
    assert not np.array_equal(updated.arrays["tile0.affine_gain"], plan.arrays["tile0.affine_gain"])
    # a month of drift on this board: 2.1-2.8 bit of the realized median and 1.8 of the rms lost; the
    # rms comes back to 0.10-0.31 bit (measured on two trees), the median only to 1.0-1.6 bit lost (this
    # 6-branch board's fresh errors spread over two decades; the refinement's moves stop short of them)
    assert bits_lost(stale, fresh) > 1.0 and np.log2(rms(stale) / rms(fresh)) > 1.0
    assert np.log2(rms(after) / rms(fresh)) < 0.4
    assert bits_lost(after, fresh) < bits_lost(stale, fresh) - 0.8
    # the guard reads what the truth lost (0.78 against 0.99, 1.06 against 1.59 measured)
    assert probe_after.layers[0].bits_lost == pytest.approx(bits_lost(after, fresh), abs=0.6)
    assert updated.header.calibration.checksum == new.checksum()


def write_lab(path, hours: float = 0.0, seed: int = SEED):
    sim = lab_config(hours, seed=seed)["sim"]
    path.write_text("name = \"drift\"\n[sim]\n" + "".join(
        f"{key} = {value!r}\n" if not isinstance(value, str) else f"{key} = \"{value}\"\n"
        for key, value in sim.items()))
    return str(path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from crossbar_ctl.cli._main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_guard_recalibrate_update_and_bad_input(programmed, tmp_path, capsys):
    import json

    record, plan, x, _ = programmed
    cal, plan_path, data = tmp_path / "cal.npz", tmp_path / "plan.npz", tmp_path / "data.npz"
    record.save(cal)
    plan.save(plan_path)
    np.savez(data, x=x)
    month = write_lab(tmp_path / "month.toml", 744)
    code, _, err = run_cli(capsys, "check", "--plan", plan_path, "--data", data, "--lab", month)
    assert code == 2 and err.count("\n") == 1 and "crossbar recalibrate" in err
    code, out, _ = run_cli(capsys, "check", "--plan", plan_path, "--data", data, "--lab", month, "--allow-stale",
                           "--json")
    assert code == 0 and json.loads(out)["drift_probe"]["over_budget"]
    # another board of the same design, and a record whose parent is not the plan's: one line, nothing written
    other = write_lab(tmp_path / "other.toml", 744, seed=SEED + 7)
    cal2, plan2 = tmp_path / "cal2.npz", tmp_path / "plan2.npz"
    code, _, err = run_cli(capsys, "recalibrate", "--calibration", cal, "--out", cal2, "--lab", other)
    assert code == 2 and err.count("\n") == 1 and "another array" in err and not cal2.exists()
    code, out, _ = run_cli(capsys, "recalibrate", "--calibration", cal, "--plan", plan_path, "--out", cal2,
                           "--lab", month, "--json")
    assert code == 0 and json.loads(out)["readings_fraction"] <= 0.15
    assert CalibrationRecord.load(cal2).header.parent_checksum == record.checksum()
    cal3 = tmp_path / "cal3.npz"
    assert run_cli(capsys, "recalibrate", "--calibration", cal2, "--out", cal3, "--lab", month)[0] == 0
    code, _, err = run_cli(capsys, "program", "--update", plan_path, "--calibration", cal3, "--out", plan2,
                           "--lab", month)
    assert code == 2 and err.count("\n") == 1 and "does not belong to this plan" in err and not plan2.exists()
    code, out, _ = run_cli(capsys, "program", "--update", plan_path, "--calibration", cal2, "--out", plan2,
                           "--lab", month, "--json")
    assert code == 0 and json.loads(out)["pairs_over_after"] < json.loads(out)["pairs_over_before"]
    stale = json.loads(run_cli(capsys, "check", "--plan", plan_path, "--data", data, "--lab", month, "--allow-stale",
                               "--json")[1])["drift_probe"]["layers"][0]["bits_lost"]
    code, out, _ = run_cli(capsys, "check", "--plan", plan2, "--data", data, "--lab", month, "--allow-stale", "--json")
    assert code == 0 and json.loads(out)["drift_probe"]["layers"][0]["bits_lost"] < stale - 1.0


@pytest.mark.slow
def test_cli_watch_advances_the_simulated_clock_logs_and_acts(programmed, tmp_path, capsys):
    import json

    record, plan, _, _ = programmed
    cal, plan_path = tmp_path / "cal.npz", tmp_path / "plan.npz"
    record.save(cal)
    plan.save(plan_path)
    log, figure = tmp_path / "drift.jsonl", tmp_path / "drift.png"
    out_plan, out_cal = tmp_path / "plan-updated.npz", tmp_path / "cal-updated.npz"
    code, out, _ = run_cli(capsys, "watch", "--plan", plan_path, "--every", "10d", "--count", "5", "--log", log,
                           "--lab", write_lab(tmp_path / "lab.toml"), "--recalibrate", "--calibration", cal,
                           "--out-plan", out_plan, "--out-calibration", out_cal, "--plot", figure, "--json")
    assert code == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 5 and entries == json.loads(out)
    times = [e["sim_time_s"] for e in entries]
    assert np.diff(times) == pytest.approx(np.full(4, 10 * 86400.0), abs=600)  # the simulated clock, no waiting
    assert not entries[0]["over_budget"]
    acted = [e for e in entries if e["action"]]
    assert acted and all(e["over_budget"] for e in acted)  # it acts when (and only when) the guard would refuse
    assert out_plan.exists() and out_cal.exists() and figure.stat().st_size > 0
    code, _, err = run_cli(capsys, "watch", "--plan", plan_path, "--every", "soon", "--log", log)
    assert code == 2 and "--every" in err


@pytest.mark.slow
def test_bench_drift_json_on_a_small_board(capsys):
    import json

    code, out, _ = run_cli(capsys, "bench", "drift", "--rows", 8, "--cols", 8, "--branches", 6, "--samples", 20,
                           "--scenarios", "31 d", "--drift-per-hour", DRIFT_PER_HOUR, "--seed", SEED, "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert {"scenario", "realized_bits_fresh", "realized_bits_stale", "realized_bits_after", "enob_fresh",
            "enob_stale", "enob_after", "readings_fraction", "rewrites_fraction", "realized_bits_reprogrammed",
            "enob_reprogrammed"} <= set(row)
    assert row["guard_stale"] and not row["guard_fresh"]
    # the guard after the update agrees with what the truth lost, to the probe's error (GRAY_BITS)
    lost_after = row["realized_bits_fresh"] - row["realized_bits_after"]
    assert row["guard_after"] if lost_after > DEFAULT_SLACK_BITS + GRAY_BITS else True
    assert not row["guard_after"] if lost_after < DEFAULT_SLACK_BITS - GRAY_BITS else True
    # the stale probe's estimate of the loss (2.09 against 1.74 measured)
    assert row["bits_lost_probe"] == pytest.approx(row["realized_bits_fresh"] - row["realized_bits_stale"], abs=0.6)
    assert row["readings_fraction"] <= 0.15 and 0 < row["rewrites_fraction"] <= 1
    # a month at 1e-4 costs this board's median pair 1.74 bit (10.66 -> 8.92 measured); the update wins
    # back more than half of it (10.71 measured)
    lost = row["realized_bits_fresh"] - row["realized_bits_stale"]
    assert lost > 1.4
    assert row["realized_bits_after"] - row["realized_bits_stale"] > 0.5 * lost
    # the same-run reference: calibrated and programmed afresh a month on, the board is as good as
    # fresh again (11.08 against 10.66 measured), not stale
    assert abs(row["realized_bits_reprogrammed"] - row["realized_bits_fresh"]) < 0.6


@pytest.mark.slow
def test_the_probe_follows_the_truth_on_a_layer_of_tiles_with_different_noise():
    """The demo's layer 0 is a 64-row tile of 2,048 pairs and its one-row bias tile of 32 read with
    9 times the noise. The layer's noise is its pairs' (``ProbeErrors.noise_var``): with the tiles'
    unweighted mean the bias tile's noise set the layer's floor and the probe read at it, a week on
    0.93 of the budget for a truth of 1.17 (past it, and passed). Now the estimate follows the truth
    (0.93 for 0.96 there; ``scripts/guard_sweep.py``'s question on the demo's board)."""
    import tomllib

    from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK
    from crossbar_ctl.engine._network import load_network

    config = tomllib.loads(DEMO_LAB.read_text())
    with open_lab(config) as lab:
        plan = program_network(lab, load_network(DIGITS_NETWORK), calibrate(lab))
    config["sim"]["start_time_s"] = 168 * HOUR_S
    with open_lab(config) as lab:
        probe = probe_plan(lab, plan)
        truth = layer_true_errors(lab, plan)
    for layer, errors in zip(probe.layers, truth):
        true_median = float(np.median(np.abs(errors)))
        assert abs(np.log2(layer.error_median / true_median)) < 0.2, (layer.index, layer.error_median, true_median)
