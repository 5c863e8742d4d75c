"""Tiling without a cap: placement (small tiles packed into one step), several boards, the schedule
that loads each step once per check, and the cost model against what the drivers sent."""

import json

import numpy as np
import pytest

from calibration import CalibrationRecord, calibrate
from crossbar_ctl._lab import open_labs
from crossbar_ctl.cli._main import main
from crossbar_ctl.core.config import load_lab_config
from crossbar_ctl.core.errors import ConfigError
from crossbar_ctl.engine._cost import predict_loads
from crossbar_ctl.engine._mapping import Tile, network_tiles, plan_tiles
from crossbar_ctl.engine._network import build_network, save_network
from crossbar_ctl.engine._plan import PlanOptions
from crossbar_ctl.engine._program import ProgramOptions
from crossbar_ctl.engine._schedule import place_tiles, step_order
from crossbar_ctl.engine._workflow import check_network, program_network

LAB = {"name": "two", "sim": {"rows": 8, "cols": 8, "branches": 6, "seed": 3}, "boards": [{}]}
LAB_TOML = 'name = "two"\n[sim]\nrows = 8\ncols = 8\nbranches = 6\nseed = 3\n\n[[boards]]\n'  # the same
EXACT = ProgramOptions(max_iterations=0, refine_rounds=0)  # one pass: what the model predicts
FAST = PlanOptions(predistort=False)  # the schedule is under test here, not the solver


def _network(seed=0, sizes=(30, 20, 2, 2)):
    """30-20-2-2 (the 30x20 layer: 20 tiles on an 8x8 array); the last two layers' tiles pack."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.normal(size=o) for o in sizes[1:]]
    x = rng.uniform(0, 1, size=(40, sizes[0]))
    layers = {"activations": ["relu"] * (len(sizes) - 2) + ["none"], "input_shape": None,
              "strides": [1] * (len(sizes) - 1), "paddings": [0] * (len(sizes) - 1), "name": "tiles"}
    net = build_network(weights, biases, **layers)
    return build_network(weights, biases, **layers, test_x=x, test_y=net.predict(x))


def test_the_papers_layer_is_tiled_without_a_cap_and_covered_once():
    tiles = plan_tiles(785, 500, rows=64, cols=64)  # 784 inputs + bias: the old cap of 64 refused it
    assert len(tiles) == 13 * 16
    covered = np.zeros((785, 500), dtype=int)
    for tile in tiles:
        covered[tile.inputs, tile.outputs] += 1
    assert np.all(covered == 1)


def test_small_tiles_share_a_step_at_disjoint_rows_and_columns():
    tiles = network_tiles(_network(), 8, 8, boards=2)
    assert len(tiles) == 20 + 3 + 1
    by_step: dict[int, list[Tile]] = {}
    for tile in tiles:
        rows, cols = tile.block
        assert rows.stop <= 8 and cols.stop <= 8
        by_step.setdefault(tile.step, []).append(tile)
    shared = [members for members in by_step.values() if len(members) > 1]
    assert len(by_step) == 23 and len(shared) == 1  # layer 1's 5-row remainder beside layer 2
    a, b = shared[0]
    assert (a.layer, b.layer) == (1, 2) and a.board == b.board
    for axis in (0, 1):  # block diagonal: neither rows nor columns overlap
        assert a.block[axis].stop <= b.block[axis].start
    assert {tile.board for tile in tiles} == {0, 1}
    unpacked = network_tiles(_network(), 8, 8, pack=False)
    assert len({t.step for t in unpacked}) == 24 and all(t.row_offset == t.col_offset == 0 for t in unpacked)


def test_steps_go_round_robin_and_never_back_a_layer():
    tiles = place_tiles([Tile(k, 0, 3, 0, 1) for k in range(5)], 4, 4, boards=2)  # 3x2 tiles: one per step
    assert [t.step for t in tiles] == [0, 1, 2, 3, 4] and [t.board for t in tiles] == [0, 1, 0, 1, 0]
    assert step_order(tiles, 2) == [[0, 2, 4], [1, 3]]
    small = place_tiles([Tile(0, 0, 2, 0, 1), Tile(0, 0, 2, 1, 2), Tile(1, 0, 1, 0, 1)], 4, 4)
    assert [(t.step, t.row_offset, t.col_offset) for t in small] == [(0, 0, 0), (0, 2, 2), (1, 0, 0)]


def test_predicted_loads_count_rows_switches_and_waits():
    held = np.zeros((2, 3), dtype=np.uint64)
    first = np.array([[1, 0, 0], [0, 0, 0]], dtype=np.uint64)
    second = np.array([[1, 0, 0], [3, 0, 6]], dtype=np.uint64)
    loads = predict_loads([first, first, second, held], held, settle_s=0.01)
    # first: 1 row, 1 switch; again: nothing; second: row 1, 4 switches; back to open: 2 rows, 5 switches
    assert (loads.row_writes, loads.switch_writes, loads.settle_waits) == (4, 10, 3)
    assert loads.settle_s == pytest.approx(0.03)
    assert predict_loads([first], held, settle_s=0.0).settle_waits == 0


def test_a_lab_lists_several_boards_of_one_geometry():
    config = load_lab_config(LAB)
    boards = [config.board(b) for b in range(2)]
    assert boards[1].sim.seed == boards[0].sim.seed + 1 and boards[1].limits == config.limits
    with pytest.raises(ConfigError, match="geometry"):
        load_lab_config({**LAB, "boards": [{"sim": {"rows": 4, "cols": 8, "branches": 6}}]})


@pytest.fixture(scope="module")
def two_boards(tmp_path_factory):
    """Two simulated 8x8x6 boards (pcb: switches that settle), each calibrated: board 0 in Python,
    board 1 by ``crossbar calibrate --board 1``."""
    tmp = tmp_path_factory.mktemp("boards")
    (tmp / "lab.toml").write_text(LAB_TOML)
    with open_labs(tmp / "lab.toml") as labs:
        calibrate(labs[0]).save(tmp / "cal0.npz")
    assert main(["calibrate", "--lab", str(tmp / "lab.toml"), "--board", "1", "--out", str(tmp / "cal1.npz"),
                 "--json"]) == 0
    return tmp, [CalibrationRecord.load(tmp / f"cal{b}.npz") for b in range(2)]


@pytest.mark.slow
def test_two_boards_program_and_check_with_each_step_loaded_once(two_boards):
    _, records = two_boards
    net = _network()
    x, y = net.test_x, net.test_y
    with open_labs(LAB) as labs:
        plan = program_network(list(labs), net, records, plan_options=FAST, program_options=EXACT)
        assert plan.board_count == 2 and plan.board_calibration(1).checksum == records[1].checksum()
        cost = plan.header.program.cost
        assert cost.switch_writes == cost.switch_writes_predicted > 0  # one pass: the model is exact
        assert cost.row_writes == cost.row_writes_predicted
        report = check_network(list(labs), plan, x, y)
        settle_s = labs[0].board.settle_s
        with pytest.raises(Exception, match="calibration"):  # each board has its own calibration
            program_network(list(labs), net, records[::-1], plan_options=FAST, program_options=EXACT)
    cost = report.cost
    assert (cost.boards, cost.steps, cost.tiles) == (2, 23, 24)
    assert cost.switch_writes == cost.switch_writes_predicted > 0
    assert cost.row_writes == cost.row_writes_predicted
    # every step of a board loaded once: one settling wait per step, on both boards
    order = step_order(plan.tiles(), 2)
    assert [board.settle_waits for board in cost.per_board] == [len(steps) for steps in order] == [12, 11]
    assert cost.settle_s_estimate == pytest.approx(12 * settle_s)
    assert report.agreement >= 0.95


@pytest.mark.slow
def test_program_and_check_report_the_cost_in_json(two_boards, tmp_path, capsys):
    tmp, _ = two_boards
    lab = tmp / "lab.toml"
    weights, plan = tmp_path / "net.npz", tmp_path / "plan.npz"
    save_network(weights, _network(1, sizes=(3, 2, 2)))  # two tiles in one step
    argv = ["program", "--weights", str(weights), "--lab", str(lab), "--out", str(plan), "--max-iterations", "0",
            "--no-predistort", "--json", "--calibration", str(tmp / "cal0.npz")]
    assert main(argv) == 2  # one record for two boards
    assert "one record per board" in capsys.readouterr().err
    assert main([*argv, str(tmp / "cal1.npz")]) == 0
    programmed = json.loads(capsys.readouterr().out)["cost"]
    assert programmed["switch_writes"] >= programmed["switch_writes_predicted"] > 0  # corrections come on top
    assert main(["check", "--plan", str(plan), "--data", str(weights), "--lab", str(lab), "--samples", "10",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checked = report["cost"]
    # the drift guard's probe (every plan's, two boards too) left the one step loaded: check writes nothing
    assert report["drift_probe"]["board_layers"] and not report["drift_probe"]["over_budget"]
    assert checked["switch_writes"] == checked["switch_writes_predicted"] == 0
    assert checked["settle_s_estimate"] == 0 and (checked["steps"], checked["tiles"]) == (1, 2)
