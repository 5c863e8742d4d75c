"""``crossbar bench circuit``: every route beside the SuperLU reference, in one run."""

from __future__ import annotations

import json

import pytest

from crossbar_ctl.cli._main import main
from sim._bench_circuit import bench_circuit


def test_bench_circuit_reports_every_route_beside_the_reference():
    results = bench_circuit((4, 9), batch=3, budget_s=0.01)
    assert [(r["rows"], r["cols"]) for r in results] == [(4, 4), (9, 9)]
    for r in results:
        assert r["method"] == "structured"
        for key in ("factor_s", "solve_s", "ideal_s", "auto_batch_s", "auto_cold_s", "plan_s",
                    "plan_mib", "peak_mib", "transfer_peak_mib", "rss_peak_mib",
                    "transfer_prepare_s", "transfer_solve_s", "fresh_single_s"):
            assert r[key] > 0, key
        assert r["kcl_rel"] < 1e-12
        # The plain SuperLU reference (its ordering named) solves the same system.
        assert "splu" in r["reference"] and "COLAMD" in r["reference"]
        assert r["ref_rel_diff"] < 1e-12
        # Ours against the refined direct solve (the oracle): as exact.
        assert r["auto_rel_diff"] < 1e-15 and r["transfer_rel_diff"] < 1e-15
        assert r["fresh_rel_diff"] < 1e-15
        # auto on a fresh circuit of at most 32 x 32 cells: the transfer matrix at once.
        assert r["auto"] == "transfer"
        assert r["ref_batch_s"] == pytest.approx(r["ref_factor_s"] + 3 * r["ref_solve_s"])
        assert r["auto_batch_ratio"] == pytest.approx(r["ref_batch_s"] / r["auto_batch_s"])
        assert r["auto_cold_ratio"] == pytest.approx(r["ref_batch_s"] / r["auto_cold_s"])
        direct_batch_s = r["factor_s"] + 3 * r["solve_s"]
        assert r["direct_batch_ratio"] == pytest.approx(r["ref_batch_s"] / direct_batch_s)
        assert r["auto_vs_direct"] == pytest.approx(direct_batch_s / r["auto_batch_s"])
        assert r["transfer_batch_ratio"] == pytest.approx(
            r["ref_batch_s"] / (r["transfer_prepare_s"] + 3 * r["transfer_solve_s"]))
        assert r["solve_ratio"] == pytest.approx(r["ref_solve_s"] / r["solve_s"])
        # Too few columns for the iterative rule: the fresh vector is the direct solver's.
        assert r["fresh_method"] == "structured"
    # One vector on 48 x 48 (above 32 x 32 cells): direct, by conjugate gradients.
    (single,) = bench_circuit((48,), batch=1, budget_s=0.01)
    assert single["auto"] == "direct" and single["fresh_method"] == "iterative"
    assert single["auto_rel_diff"] < 1e-14
    (compared,) = bench_circuit((6,), batch=2, budget_s=0.01, compare_sparse=True)
    assert compared["sparse_factor_s"] > 0 and compared["sparse_rel_diff"] < 1e-12


def test_ours_only_skips_the_reference_and_the_direct_solver():
    (result,) = bench_circuit((5,), batch=2, budget_s=0.01, ours_only=True)
    assert set(result) == {"rows", "cols", "batch", "auto", "auto_batch_s", "auto_cold_s",
                           "plan_s", "plan_mib", "transfer_peak_mib", "rss_peak_mib"}


def test_cli_bench_circuit(capsys):
    assert main(["bench", "circuit", "--sizes", "5", "--batch", "2", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert {"rows", "cols", "factor_s", "solve_s", "peak_mib", "reference", "ref_factor_s",
            "ref_solve_s", "factor_ratio", "solve_ratio", "transfer_prepare_s", "transfer_solve_s",
            "transfer_rel_diff", "ref_batch_s", "direct_batch_ratio", "transfer_batch_ratio",
            "auto", "auto_batch_ratio", "auto_cold_ratio", "auto_rel_diff", "auto_vs_direct",
            "fresh_single_s", "fresh_method", "fresh_single_ratio"} <= set(result)
    assert main(["bench", "circuit", "--sizes", "5", "--batch", "2", "--compare-sparse"]) == 0
    table = capsys.readouterr().out
    assert "5x5" in table and "sparse_rel_diff" in table
    assert "scipy.sparse.linalg.splu" in table and "COLAMD" in table
    assert "auto_batch_ratio" in table and "auto_vs_direct" in table
    assert main(["bench", "circuit", "--sizes", "5", "--ours-only"]) == 0
    assert "ref_batch" not in capsys.readouterr().out
    assert main(["bench", "circuit", "--sizes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossbar: error:") and len(err.strip().splitlines()) == 1
