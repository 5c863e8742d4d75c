"""Smoke runs of the optimizer's benchmarks at tiny sizes, and of their CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossbar_ctl.optimizer import _bench as bench
from crossbar_ctl.cli._main import main
from tests.crossbar_ctl.optimizer.naive import brute_force


def test_precision_grows_about_one_bit_per_resistor():
    result = bench.bench_precision(sizes=range(4, 15), instances=200, worst_from=6)
    assert result["n"] == list(range(4, 15))
    assert len(result["median_bits"]) == len(result["worst_bits"]) == 11
    assert all(w <= med for w, med in zip(result["worst_bits"], result["median_bits"]))
    assert 0.85 < result["slope_median"] < 1.2


def test_precision_lognormal_and_bad_population():
    result = bench.bench_precision(population="lognormal", sizes=[6, 8], instances=20)
    assert result["population"] == "lognormal"
    with pytest.raises(bench.CrossbarError, match="population"):
        bench.bench_precision(population="normal", sizes=[4], instances=2)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = bench.bench_precision(sizes=[4, 8, 12], instances=20, worst_from=4)
    path = tmp_path / "precision.png"
    bench.plot_precision(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_solver_rows_and_exactness():
    rows = bench.bench_solver(sizes=(8, 12), quick=True)
    assert [r["m"] for r in rows] == [8, 12]
    assert all(r["cells_per_s"] > 0 for r in rows)
    assert all(r["exact"] == "50/50" for r in rows)


def test_brute_force_kernel_matches_the_oracle():
    rng = np.random.default_rng(3)
    for m in (1, 5, 10):
        values = rng.uniform(-1, 1, m)
        target = float(rng.uniform(-2, 2))
        assert bench.brute_force_error(values, target) == pytest.approx(brute_force(values, target)[0], abs=1e-12)


def test_peers_reach_the_optimum_on_small_pools():
    rows = bench.bench_peers(sizes=(6,), instances=2, time_limit_s=5.0)
    by_solver = {r["solver"]: r for r in rows}
    assert {"optimizer", "brute_force", "milp_highs"} <= set(by_solver)
    assert by_solver["brute_force"]["optimal"] == "2/2"
    assert by_solver["milp_highs"]["optimal"] == "2/2"  # six binaries: HiGHS proves it


def test_lottery_network_targets_have_the_papers_shape():
    targets = bench.lottery_targets("network", np.random.default_rng(0))
    assert targets.shape == (397_000,)
    assert np.abs(targets[:392_000]).max() <= 1 / np.sqrt(784)
    assert np.abs(targets[392_000:]).max() <= 1 / np.sqrt(500)
    assert np.abs(targets[392_000:]).max() > 1 / np.sqrt(784)


def test_lottery_small_run():
    result = bench.bench_lottery(kind="uniform", targets=3000, chunk=1000, target_max=0.25)
    assert result["targets"] == 3000
    assert result["proven_optimal"] == 3000
    assert result["within_tolerance"] + result["out_of_range"] >= 2990
    assert result["worst_error_reachable"] < 0.05


@pytest.mark.parametrize("command", [["solver"], ["lottery"], ["peers"]])
def test_cli_quick_json(command, capsys):
    assert main(["bench", *command, "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out


def test_cli_precision_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "p.png"
    assert main(["bench", "precision", "--quick", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "slope of median bits" in out and plot.exists()


def test_cli_plot_without_matplotlib_is_one_line(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(bench, "bench_precision", lambda **kw: {
        "n": [4], "median_bits": [4.0], "worst_bits": [3.0], "exact_hits": [0], "slope_median": 1.0,
        "slope_worst": 1.0, "instances": 1, "population": "uniform", "worst_from": 4, "max_bits": 52.0})
    assert main(["bench", "precision", "--quick", "--plot", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "Traceback" not in err


def test_peers_include_cpsat_when_ortools_is_installed():
    pytest.importorskip("ortools.sat.python.cp_model", reason="OR-Tools is the optional 'ortools' extra")
    rows = bench.bench_peers(sizes=(8,), instances=2, time_limit_s=5.0, seed=0)
    cpsat = [r for r in rows if r["solver"] == "cpsat"]
    assert cpsat and cpsat[0]["optimal"] == "2/2"
