"""Smoke runs of the optimizer's benchmarks at tiny sizes, and of their CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossbar_ctl.optimizer import _bench as bench
from crossbar_ctl.cli._main import main
from tests.crossbar_ctl.optimizer.naive import brute_force


def test_precision_grows_about_one_bit_per_resistor():
    result = bench.bench_precision(sizes=range(4, 15), instances=200, worst_from=6, signed_up_to=12)
    assert result["n"] == list(range(4, 15))
    assert len(result["median_bits"]) == len(result["worst_bits"]) == 11
    assert all(w <= med for w, med in zip(result["worst_bits"], result["median_bits"]))
    assert 0.9 < result["slope_median"] < 1.1
    # against the range [0, sum] rather than targets at 1/4 ... 3/4 of it: about one bit more
    gain = np.subtract(result["median_bits_range"], result["median_bits"])
    assert 0.8 < gain.mean() < 1.25
    # the engine's signed pair has 2n values: about two bits per n, against its full scale
    assert 1.8 < result["slope_signed_median"] < 2.2
    assert 1.6 < result["slope_signed_worst"] < 2.4
    assert result["signed_median_bits"][-2:] == [None, None]
    assert "log2(target / |error|)" in result["convention"] and "log2(S / |error|)" in result["convention"]


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


def test_a_plot_that_fails_leaves_the_old_file_whole(tmp_path, failing_savefig):
    result = bench.bench_precision(sizes=[4, 8], instances=10, worst_from=4)
    path = tmp_path / "precision.png"
    bench.plot_precision(result, str(path))
    before = path.read_bytes()
    failing_savefig()
    with pytest.raises(OSError, match="No space"):
        bench.plot_precision(result, str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["precision.png"]


def test_solver_rows_name_their_reference_and_agree_with_it():
    rows = bench.bench_solver(sizes=(8, 12), quick=True)
    assert [(r["m"], r["pool"]) for r in rows] == [(8, "uniform"), (12, "uniform"), (32, "integer"),
                                                   (32, "equal")]
    assert [r["exact"] for r in rows] == ["50/50", "50/50", "", ""]
    assert all(r["same_error"] == f"{r['cells']}/{r['cells']}" for r in rows)
    assert all(r["vs_reference"] > 0 and r["reference_cells_per_s"] > 0 for r in rows)
    assert rows[2]["median_error_rel"] == rows[3]["median_error_rel"] == 0.0  # integer targets hit


def test_textbook_reference_matches_the_oracle():
    rng = np.random.default_rng(2)
    for m in range(1, 13):
        values = rng.uniform(-1, 1, (5, m))
        targets = rng.uniform(-2, 2, 5)
        got = bench.textbook_errors(values, targets)
        expected = [brute_force(v, t)[0] for v, t in zip(values, targets)]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_brute_force_kernel_matches_the_oracle_and_stops_within_a_gap():
    rng = np.random.default_rng(3)
    for m in (1, 5, 10):
        values = rng.uniform(-1, 1, m)
        target = float(rng.uniform(-2, 2))
        best = brute_force(values, target)[0]
        assert bench.brute_force_error(values, target) == pytest.approx(best, abs=1e-12)
        stopped = bench.brute_force_error(values, target, best + 0.05)
        assert best - 1e-12 <= stopped <= best + 0.05
    values = rng.uniform(0.5, 1.5, 16)
    target = 0.5 * values.sum()
    assert bench.brute_force_error(values, target, 0.01) > bench.brute_force_error(values, target)


def test_highs_proves_small_optima_and_stops_at_an_absolute_gap():
    pytest.importorskip("highspy", reason="HiGHS's Python API is the 'peers' extra")
    rng = np.random.default_rng(5)
    values = rng.uniform(0.5, 1.5, 10)
    target = 0.4 * values.sum()
    error, proven = bench._highs(values, target, 10.0, 0.0)
    assert proven and error == pytest.approx(brute_force(values, target)[0], abs=1e-12)
    stopped_early = 0
    for _ in range(3):  # m = 20: the optimum is ~1e-6 of the range, the gap 1e-4 of it
        values = rng.uniform(0.5, 1.5, 20)
        target = float(rng.uniform(0.25, 0.75) * values.sum())
        gap = 1e-4 * values.sum()
        best = float(bench.brute_force_error(values, target))
        error, _ = bench._highs(values, target, 10.0, gap)
        assert error <= best + gap
        stopped_early += error > 10 * best
    assert stopped_early >= 2


def test_peers_report_both_times_on_small_pools():
    pytest.importorskip("highspy", reason="HiGHS's Python API is the 'peers' extra")
    result = bench.bench_peers(sizes=(6,), instances=2, time_limit_s=5.0)
    assert result["precision_rel"] == bench.PEERS_PRECISION_REL == 1e-4
    by_solver = {r["solver"]: r for r in result["rows"]}
    assert {"optimizer", "brute_force", "highs"} <= set(by_solver)
    for row in by_solver.values():
        assert row["proven"] == row["within_precision"] == "2/2"  # six binaries: all prove it
        assert row["optimum_s"] > 0 and row["precision_s"] > 0


def test_peers_say_how_to_install_a_missing_peer(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_highspy(name, *args, **kwargs):
        if name == "highspy":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_highspy)
    result = bench.bench_peers(sizes=(4,), instances=1, time_limit_s=1.0)
    assert "highs: pip install 'crossbar-ctl[peers]'" in result["missing"]
    assert "highs" not in {r["solver"] for r in result["rows"]}
    with pytest.raises(bench.CrossbarError, match="precision_rel"):
        bench.bench_peers(sizes=(4,), instances=1, precision_rel=0.0)


def test_lottery_network_targets_have_the_papers_shape():
    targets = bench.lottery_targets("network", np.random.default_rng(0))
    assert targets.shape == (397_000,)
    assert np.abs(targets[:392_000]).max() <= 1 / np.sqrt(784)
    assert np.abs(targets[392_000:]).max() <= 1 / np.sqrt(500)
    assert np.abs(targets[392_000:]).max() > 1 / np.sqrt(784)


def test_lottery_counts_every_tolerance_and_the_median_error():
    result = bench.bench_lottery(kind="uniform", targets=3000, chunk=1000, target_max=0.25)
    assert result["targets"] == 3000
    assert result["proven_optimal"] == 3000
    within = [result[f"within_{t:.0e}"] for t in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert within == sorted(within, reverse=True)
    assert within[0] + result["out_of_range"] >= 2990
    # 2^21 subsets over a range of ~10: the median optimum lies far below the paper's 0.01
    assert 0 < result["median_error"] < 1e-5 < 1e-2
    assert within[3] > 1500  # so more than half are within 1e-5
    assert result["worst_error_reachable"] < 0.05


def test_cli_quick_tables_say_what_they_measure(capsys):
    assert main(["bench", "solver", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "reference: textbook meet in the middle" in out and "vs_reference" in out
    assert "integer" in out and "equal" in out and "machine: " in out
    assert main(["bench", "lottery", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "within_1e-05" in out and "median_error" in out


@pytest.mark.parametrize("command", [["solver"], ["lottery"], ["peers"]])
def test_cli_quick_json(command, capsys):
    assert main(["bench", *command, "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"] if command == ["peers"] else out
    key = {"solver": "vs_reference", "lottery": "median_error", "peers": "precision_s"}[command[0]]
    assert key in rows[0]


def test_cli_peers_json_is_clean_on_the_file_descriptor():
    """HiGHS prints a banner from C++ on fd 1 at its first model: it must not reach --json."""
    pytest.importorskip("highspy", reason="HiGHS's Python API is the 'peers' extra")
    import subprocess
    import sys

    code = ("from crossbar_ctl.cli._main import main; "
            "raise SystemExit(main(['bench', 'peers', '--quick', '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert {r["solver"] for r in json.loads(done.stdout)["rows"]} >= {"optimizer", "highs"}


def test_cli_precision_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "p.png"
    assert main(["bench", "precision", "--quick", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "slope of median bits" in out and plot.exists()
    assert "convention: unsigned" in out and "signed pair: slope" in out


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
    rows = bench.bench_peers(sizes=(8,), instances=2, time_limit_s=5.0, seed=0)["rows"]
    cpsat = [r for r in rows if r["solver"] == "cpsat"]
    assert cpsat and cpsat[0]["proven"] == cpsat[0]["within_precision"] == "2/2"
