"""A plan on two boards, through the CLI: the drift guard probes every board (refuses the plan when
one board drifted, passes it fresh), ``recalibrate`` and ``program --update`` take one record per
board in order (a wrong order is one line, exit 2, nothing written) and rewrite only on the board
that drifted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration import CalibrationRecord, calibrate
from crossbar_ctl._lab import open_labs
from crossbar_ctl.engine._bench import uniform_layer
from crossbar_ctl.engine._plan import SwitchPlan
from crossbar_ctl.engine._workflow import program_network
from tests.crossbar_ctl.engine.test_drift_guard import run_cli as run

SEED = 1
MONTH_H = 744.0


def board_sim(board: int, hours: float) -> dict:
    """Board ``board`` of the lab (8x8x6 pcb, drifting at 1e-4 per sqrt(hour)), ``hours`` after it
    was calibrated and programmed."""
    return {"rows": 8, "cols": 8, "branches": 6, "profile": "pcb", "seed": SEED + board,
            "start_time_s": hours * 3600.0, "drift_per_hour": 1e-4}


def lab_toml(path, hours: tuple[float, float]) -> str:
    """A lab file of two simulated boards, each ``hours[b]`` after programming."""
    def table(sim: dict) -> str:
        return "".join(f"{key} = {json.dumps(value)}\n" for key, value in sim.items())

    path.write_text(f"name = \"two\"\n[sim]\n{table(board_sim(0, hours[0]))}\n[[boards]]\n"
                    f"[boards.sim]\n{table(board_sim(1, hours[1]))}")
    return str(path)


@pytest.fixture(scope="module")
def two_boards(tmp_path_factory):
    """A 14-4 U(-1, 1) layer (two 8-row tiles, one on each board) calibrated and programmed at time 0."""
    directory = tmp_path_factory.mktemp("boards")
    network, x = uniform_layer(14, 4, samples=20, seed=SEED)
    with open_labs(lab_toml(directory / "fresh.toml", (0.0, 0.0))) as labs:
        records = [calibrate(lab) for lab in labs]
        plan = program_network(list(labs), network, records)
    paths = {"cal0": directory / "cal0.npz", "cal1": directory / "cal1.npz", "plan": directory / "plan.npz",
             "data": directory / "data.npz"}
    records[0].save(paths["cal0"])
    records[1].save(paths["cal1"])
    plan.save(paths["plan"])
    np.savez(paths["data"], x=x)
    return paths, records, plan


@pytest.mark.slow
def test_two_boards_guard_recalibrate_and_update_on_the_board_that_drifted(two_boards, tmp_path, capsys):
    paths, records, plan = two_boards
    assert {tile.board for tile in plan.tiles()} == {0, 1}
    fresh = lab_toml(tmp_path / "fresh.toml", (0.0, 0.0))
    drifted = lab_toml(tmp_path / "drifted.toml", (0.0, MONTH_H))  # board 1 a month on, board 0 as programmed
    check = ("check", "--plan", paths["plan"], "--data", paths["data"], "--json")
    code, out, _ = run(capsys, *check, "--lab", fresh)
    probe = json.loads(out)["drift_probe"]
    assert code == 0 and probe is not None and not probe["over_budget"]
    code, _, err = run(capsys, *check, "--lab", drifted)
    assert code == 2 and err.count("\n") == 1 and "crossbar recalibrate" in err
    stale = json.loads(run(capsys, *check, "--lab", drifted, "--allow-stale")[1])["drift_probe"]

    # one record per board, in order: swapped, or one short, is one line and nothing written
    new0, new1, plan2 = tmp_path / "new0.npz", tmp_path / "new1.npz", tmp_path / "plan2.npz"
    recal = ("recalibrate", "--plan", paths["plan"], "--lab", drifted, "--calibration")
    code, _, err = run(capsys, *recal, paths["cal1"], paths["cal0"], "--out", new0, new1)
    assert code == 2 and err.count("\n") == 1 and "board 1's" in err and not new0.exists() and not new1.exists()
    code, _, err = run(capsys, *recal, paths["cal0"], "--out", new0)
    assert code == 2 and err.count("\n") == 1 and "one record per board" in err and not new0.exists()
    code, out, _ = run(capsys, *recal, paths["cal0"], paths["cal1"], "--out", new0, new1, "--json")
    assert code == 0
    reports = json.loads(out)
    assert [r["board"] for r in reports] == [0, 1] and all(r["readings_fraction"] <= 0.15 for r in reports)
    news = [CalibrationRecord.load(new0), CalibrationRecord.load(new1)]
    assert [new.header.parent_checksum for new in news] == [record.checksum() for record in records]
    # the plan's pairs over budget are on board 1: its rows are asked for, board 0's are not
    assert reports[1]["asked_rows"] and not reports[0]["asked_rows"]

    update = ("program", "--update", paths["plan"], "--lab", drifted, "--out", plan2)
    code, _, err = run(capsys, *update, "--calibration", new1, new0)
    assert code == 2 and err.count("\n") == 1 and "board 1's" in err and not plan2.exists()
    code, out, _ = run(capsys, *update, "--calibration", new0, new1, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["calibrations"] == [new.checksum() for new in news]
    assert 0 < result["cells_rewritten"] and result["pairs_over_after"] < result["pairs_over_before"]
    updated = SwitchPlan.load(plan2)
    changed = {tile.board: not np.array_equal(updated.tile(t, "masks"), plan.tile(t, "masks"))
               for t, tile in enumerate(plan.tiles())}
    assert changed == {0: False, 1: True}  # rewritten only on the board that drifted
    code, out, _ = run(capsys, "check", "--plan", plan2, "--data", paths["data"], "--json", "--lab", drifted)
    after = json.loads(out)["drift_probe"]
    assert code == 0 and not after["over_budget"]
    assert after["layers"][0]["bits_lost"] < stale["layers"][0]["bits_lost"] - 0.5


@pytest.mark.slow
def test_watch_on_two_boards_probes_both_and_acts_with_one_record_each(two_boards, tmp_path, capsys):
    paths, records, _ = two_boards
    log, out_plan = tmp_path / "drift.jsonl", tmp_path / "plan-updated.npz"
    outs = [tmp_path / "cal-updated0.npz", tmp_path / "cal-updated1.npz"]
    watch = ("watch", "--plan", paths["plan"], "--every", "31d", "--count", "2", "--log", log, "--recalibrate",
             "--lab", lab_toml(tmp_path / "lab.toml", (0.0, 0.0)), "--out-plan", out_plan,
             "--calibration", paths["cal0"], paths["cal1"], "--json", "--out-calibration")
    code, _, err = run(capsys, *watch, outs[0])
    assert code == 2 and err.count("\n") == 1 and "--out-calibration" in err and not log.exists()
    code, out, _ = run(capsys, *watch, *outs)
    assert code == 0
    first, second = json.loads(out)
    assert not first["over_budget"] and not first["action"]
    assert second["over_budget"] and second["action"]  # both boards a month on: it acts on both
    assert [(part["layer"], part["board"]) for part in second["board_bits_lost"]] == [(0, 0), (0, 1)]
    assert second["sim_time_s"] - first["sim_time_s"] == pytest.approx(31 * 86400.0, abs=600)
    news = [CalibrationRecord.load(path) for path in outs]
    assert [new.header.parent_checksum for new in news] == [record.checksum() for record in records]
    updated = SwitchPlan.load(out_plan)
    assert [updated.board_calibration(b).checksum for b in (0, 1)] == [new.checksum() for new in news]
