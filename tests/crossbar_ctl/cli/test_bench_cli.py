"""``crossbar bench ...`` through the CLI: the JSON holds the figures, in physical ranges, consistent.

Speeds depend on the machine and its load, so they are checked for consistency (rate x time =
count), never against a number; precisions and residuals are deterministic and checked within
about one bit of what the code does.
"""

import json
import math

import pytest

from crossbar_ctl.cli._main import main


def _bench(capsys, *argv):
    assert main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_solver_rates_and_one_bit_per_resistor(capsys):
    rows = _bench(capsys, "solver", "--quick")
    random = [row for row in rows if row.get("pool", "uniform") == "uniform"]
    sizes = [row["m"] for row in random]
    assert sizes == sorted(set(sizes)) and sizes[0] <= 8 and sizes[-1] >= 32
    for row in rows:
        assert row["seconds"] > 0 and row["cells"] >= 1
        assert row["cells_per_s"] == pytest.approx(row["cells"] / row["seconds"], rel=1e-9)
        if "vs_reference" in row:  # a ratio against a reference run in the same process
            assert row["vs_reference"] == pytest.approx(row["cells_per_s"] / row["reference_cells_per_s"],
                                                        rel=1e-9)
    for row in random:
        proven, tried = map(int, row["exact"].split("/"))
        assert proven == tried == min(row["cells"], 50)  # every checked answer is the optimum
        # the median error halves per resistor: 2**-(m + 1) of the range, within one bit
        assert abs(math.log2(row["median_error_rel"]) + row["m"] + 1) <= 1.0, row


def test_bench_circuit_conserves_current_and_agrees_with_sparse_lu(capsys):
    rows = _bench(capsys, "circuit", "--sizes", "5", "16", "--batch", "4", "--compare-sparse")
    assert [(row["rows"], row["cols"], row["batch"]) for row in rows] == [(5, 5, 4), (16, 16, 4)]
    for row in rows:
        assert all(row[key] > 0 for key in ("factor_s", "solve_s", "single_s", "ideal_s",
                                            "sparse_factor_s", "sparse_solve_s"))
        assert row["kcl_rel"] < 1e-15  # observed ~3e-17: currents balance to a few ulps
        assert row["sparse_rel_diff"] < 1e-14  # observed ~5e-17: the same currents as SuperLU
        if "ref_factor_s" in row:  # a plain SuperLU solve of the same system, timed in the same run
            assert row["ref_rel_diff"] < 1e-12  # observed ~5e-14
            assert row["factor_ratio"] == pytest.approx(row["ref_factor_s"] / row["factor_s"], rel=1e-9)
            assert row["solve_ratio"] == pytest.approx(row["ref_solve_s"] / row["solve_s"], rel=1e-9)
    assert rows[1]["peak_mib"] > rows[0]["peak_mib"] > 0  # memory grows with the array


def test_bench_io_figures_are_consistent(capsys):
    rows = _bench(capsys, "io", "--single", "20", "--sweeps", "1")
    assert {(row["transport"], row["mode"]) for row in rows} >= {("in-process", "single"), ("in-process", "list")}
    for row in rows:
        assert row["readings"] >= 20 and row["seconds"] > 0
        assert row["readings_per_s"] == pytest.approx(row["readings"] / row["seconds"], rel=1e-9)
        assert row["us_per_reading"] == pytest.approx(1e6 / row["readings_per_s"], rel=1e-9)
        if row["sim_us_per_reading"] is not None:  # in process: the time splits into sim + controller
            assert row["sim_us_per_reading"] > 0 and row["controller_us_per_reading"] > 0
            assert row["sim_us_per_reading"] + row["controller_us_per_reading"] == pytest.approx(
                row["us_per_reading"], rel=1e-6)
    single = {row["transport"]: row for row in rows if row["mode"] == "single"}
    sweep = {row["transport"]: row for row in rows if row["mode"] == "list"}
    for transport in single:  # a buffered list sweep is what makes calibration fast
        assert sweep[transport]["readings_per_s"] > 5 * single[transport]["readings_per_s"]


def _fraction(text):
    done, total = map(int, text.split("/"))
    return done, total


def test_bench_lottery_counts_are_consistent_with_the_median_error(capsys):
    rows = _bench(capsys, "lottery", "--quick")
    assert {row["targets_from"] for row in rows} == {"network", "uniform"}
    for row in rows:
        targets = row["targets"]
        assert row["proven_optimal"] == targets  # every target solved to the proven optimum
        within = [row[f"within_1e-0{k}"] for k in (2, 3, 4, 5)]
        assert within == sorted(within, reverse=True) and within[0] <= targets  # tighter, fewer
        # the median optimal error sits between the tolerances that hold about half the targets
        for k, count in zip((2, 3, 4, 5), within):
            if row["median_error"] < 10.0**-k:
                assert count >= targets // 2
            else:
                assert count <= targets - targets // 2
        assert row["worst_error_reachable"] <= row["worst_error"]
        assert row["within_1e-02"] + row["out_of_range"] <= targets
    network = next(row for row in rows if row["targets_from"] == "network")
    assert network["out_of_range"] == 0 and network["within_1e-02"] == network["targets"]


def test_bench_peers_agree_on_the_optimum_and_report_ratios_to_ours(capsys):
    result = _bench(capsys, "peers", "--quick")
    rows = result["rows"]
    assert 0 < result["precision_rel"] <= 1e-3 and result["instances"] >= 1
    solvers = {row["solver"] for row in rows}
    assert {"optimizer", "brute_force"} <= solvers
    for row in rows:
        ours = next(r for r in rows if r["m"] == row["m"] and r["solver"] == "optimizer")
        assert row["optimum_vs_ours"] == pytest.approx(row["optimum_s"] / ours["optimum_s"], rel=1e-9)
        assert row["precision_vs_ours"] == pytest.approx(row["precision_s"] / ours["precision_s"], rel=1e-9)
        assert row["precision_s"] > 0 and row["optimum_s"] > 0
        if row["solver"] in ("optimizer", "brute_force"):  # exact methods: always the optimum
            assert _fraction(row["proven"]) == (result["instances"], result["instances"])
            assert _fraction(row["within_precision"]) == (result["instances"], result["instances"])
