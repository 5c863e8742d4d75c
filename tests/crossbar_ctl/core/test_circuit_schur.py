"""The transfer matrix reduced onto the terminals (nested dissection, sign-preserving arithmetic)
against the exact rational oracle and the refined direct solve; auto's rule; its memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import crossbar_ctl.core.circuit as circuit_module
from crossbar_ctl.core._circuit_schur import terminal_laplacian_s, transfer_plan_bytes
from crossbar_ctl.core.circuit import MERGE_RATIO, CrossbarCircuit
from tests.crossbar_ctl.core.test_circuit import exact_nodal, random_case, relative_error


def scattered(rng, shape, low_ohm, high_ohm):
    """Per-segment resistances drawn log-uniformly in ``[low_ohm, high_ohm]``."""
    return np.exp(rng.uniform(np.log(low_ohm), np.log(high_ohm), shape))


def case(rng, rows, cols, low_ohm=0.05, high_ohm=100.0):
    """A random circuit (open cells, floating lines, no island) with scattered wires, and its
    resistances as the oracle takes them."""
    g, row_connected, col_connected = random_case(rng, rows, cols)
    wires = {"row_wire_resistance_ohm": scattered(rng, (rows, cols), low_ohm, high_ohm),
             "col_wire_resistance_ohm": scattered(rng, (rows, cols), low_ohm, high_ohm),
             "sense_resistance_ohm": scattered(rng, (cols,), low_ohm, high_ohm),
             "driver_resistance_ohm": scattered(rng, (rows,), low_ohm, high_ohm)}
    circuit = CrossbarCircuit(g, **wires, row_connected=row_connected,
                              col_connected=col_connected)
    return circuit, wires


@pytest.fixture
def reductions(monkeypatch) -> list:
    """The circuits reduced onto their terminals from now on, in order."""
    calls = []
    original = circuit_module.terminal_laplacian_s
    monkeypatch.setattr(circuit_module, "terminal_laplacian_s",
                        lambda c: calls.append(c) or original(c))
    return calls


def reduced_currents(circuit, vr, vc, reductions):
    """Terminal currents from the transfer matrix, which must be reduced (on this call)."""
    reductions.clear()
    y = circuit.transfer_matrix_s()
    assert reductions == [circuit]  # reduced, not built from unit solves
    out = np.concatenate([vr, vc]) @ y
    return out[: circuit.rows], out[circuit.rows:]


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (3, 4), (5, 7), (9, 3)])
def test_reduction_matches_exact_rational_arithmetic(shape, reductions):
    """Scattered wires from 0.05 to 100 ohm, open cells, floating lines: the rational oracle to
    1e-15 of the largest current (measured up to 3.8e-16)."""
    rng = np.random.default_rng(sum(shape))
    for _ in range(2):
        circuit, wires = case(rng, *shape)
        vr, vc = rng.uniform(-1, 1, shape[0]), rng.uniform(-1, 1, shape[1])
        row, col = reduced_currents(circuit, vr, vc, reductions)
        row_ref, col_ref = exact_nodal(
            circuit.conductance_s, wires["row_wire_resistance_ohm"],
            wires["col_wire_resistance_ohm"], wires["sense_resistance_ohm"],
            circuit.row_connected, circuit.col_connected, vr, vc,
            rd=wires["driver_resistance_ohm"])
        scale = max(np.abs(row_ref).max(), np.abs(col_ref).max())
        assert np.abs(row - row_ref).max() <= 1e-15 * scale
        assert np.abs(col - col_ref).max() <= 1e-15 * scale


@pytest.mark.parametrize("factor", [1.5, 1e3])
def test_wires_just_above_the_merge_threshold_stay_exact(factor, reductions):
    """Wires ``factor`` times the merge threshold (1e-11 of the smallest cell resistance), a
    wire conductance 1e11 times a cell's: the reduction (no cancellation) stays exact to 2e-15
    of the largest current (measured up to 9e-16)."""
    rng = np.random.default_rng(7)
    g, row_connected, col_connected = random_case(rng, 4, 5)
    ohm = factor * MERGE_RATIO / g.max()
    wires = {"row_wire_resistance_ohm": ohm, "col_wire_resistance_ohm": 2 * ohm,
             "sense_resistance_ohm": 3 * ohm}
    circuit = CrossbarCircuit(g, **wires, row_connected=row_connected,
                              col_connected=col_connected)
    assert circuit.row_wire_resistance_ohm == ohm  # not merged
    vr, vc = rng.uniform(-1, 1, 4), np.zeros(5)
    row, col = reduced_currents(circuit, vr, vc, reductions)
    row_ref, col_ref = exact_nodal(g, ohm, 2 * ohm, 3 * ohm, row_connected, col_connected, vr, vc)
    assert relative_error(col, col_ref) <= 2e-15
    assert relative_error(row, row_ref) <= 2e-15


def test_merged_wires_build_the_transfer_from_unit_solves(reductions):
    """Below the merge threshold a segment is ideal: no reduction (it needs every wire
    resistive); the unit solves build the same matrix as the direct solve gives."""
    rng = np.random.default_rng(8)
    g, _, _ = random_case(rng, 4, 5, floating=0.0)
    ohm = 0.5 * MERGE_RATIO / g.max()
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=ohm, col_wire_resistance_ohm=0.5)
    assert circuit.row_wire_resistance_ohm == 0.0
    y = circuit.transfer_matrix_s()
    assert reductions == []
    v = rng.uniform(-1, 1, (3, 4))
    np.testing.assert_allclose(v @ y[:4, 4:], circuit.solve(v).col_current_a, rtol=1e-14)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (33, 17)])
def test_reduction_matches_the_refined_direct_solve(shape):
    """Larger arrays than the rational oracle can take (several levels of dissection, uneven
    halves), wires from 1e-4 to 100 ohm: the refined direct solve to 3e-15 of the largest
    current (measured up to 1.05e-15)."""
    rng = np.random.default_rng(shape[0] * shape[1])
    circuit, _ = case(rng, *shape, low_ohm=1e-4)
    vr, vc = rng.uniform(-1, 1, (5, shape[0])), rng.uniform(-1, 1, (5, shape[1]))
    solution = circuit.solve(vr, vc)
    y = circuit.transfer_matrix_s()
    out = np.concatenate([vr, vc], axis=1) @ y
    assert relative_error(out[:, shape[0]:], solution.col_current_a) <= 3e-15
    assert relative_error(out[:, : shape[0]], solution.row_current_a) <= 3e-15
    # The Laplacian: symmetric weights >= 0, rows of floating lines 0.
    w = terminal_laplacian_s(circuit)
    assert np.all(w >= 0) and np.array_equal(w, w.T) and np.all(np.diag(w) == 0)
    assert not w[: shape[0]][~circuit.row_connected].any()


def test_auto_rule_by_size_and_batch(reductions):
    """Reducible circuits: the transfer matrix at once up to 32 x 32 cells; above, direct for a
    first single vector, the transfer matrix from the second vector asked (or a batch of 2)."""
    calls = reductions
    rng = np.random.default_rng(9)
    for rows, cols, at_once in [(32, 32, True), (4, 256, True), (33, 32, False), (40, 40, False)]:
        g, _, _ = random_case(rng, rows, cols, floating=0.0)
        circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5)
        v = rng.uniform(-1, 1, (2, rows))
        first = circuit.currents(v[0])
        assert circuit.transfer_ready == at_once and len(calls) == int(at_once)
        second = circuit.currents(v[1])
        assert circuit.transfer_ready and len(calls) == 1
        np.testing.assert_allclose(np.concatenate([first[1], second[1]]),
                                   circuit.solve(v).col_current_a, rtol=1e-12, atol=0)
        calls.clear()
        batch = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5)
        batch.currents(v)
        assert batch.transfer_ready and len(calls) == 1
        calls.clear()


def test_a_failed_reduction_falls_back_to_unit_solves(monkeypatch):
    def fail(circuit):
        raise np.linalg.LinAlgError("front 0: a node without a path")

    monkeypatch.setattr(circuit_module, "terminal_laplacian_s", fail)
    rng = np.random.default_rng(10)
    circuit, _ = case(rng, 5, 6)
    v = rng.uniform(-1, 1, (3, 5))
    np.testing.assert_allclose(circuit.currents(v, method="transfer")[1],
                               circuit.solve(v).col_current_a, rtol=1e-14)


def test_plan_memory_is_within_budget():
    """Peak bytes of the reduction (update buffer and largest front) as planned: 86 MiB at 256 x
    256 (512 x 512: 411 MiB, test below), far inside 8 GiB."""
    assert transfer_plan_bytes(256, 256) / 2**20 == pytest.approx(86, rel=0.2)
    assert transfer_plan_bytes(16, 16) < transfer_plan_bytes(16, 32) < transfer_plan_bytes(32, 32)


@pytest.mark.slow
def test_512_solves_within_8_gib():
    """A 512 x 512 array reduced in a fresh process: its peak resident set below 8 GiB, its
    growth within 2x of the planned 411 MiB; the currents agree with the iterative solve."""
    script = """
import resource, numpy as np
from crossbar_ctl.core.circuit import CrossbarCircuit
from crossbar_ctl.core._circuit_schur import transfer_plan_bytes
rng = np.random.default_rng(0)
g = rng.uniform(1e-5, 1e-3, (512, 512))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5,
                    sense_resistance_ohm=10.0)
v = rng.uniform(-1, 1, (4, 512))
current = c.currents(v, method="transfer")[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
iterative = c.solve(v[:1]).col_current_a  # conjugate gradients, refined; nothing factored
assert not c.factored
error = np.abs(current[:1] - iterative).max() / np.abs(iterative).max()
print(base, peak, transfer_plan_bytes(512, 512), error)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=600).stdout.split()
    base_kib, peak_kib, planned_bytes = (int(x) for x in out[:3])
    assert planned_bytes / 2**20 == pytest.approx(411, rel=0.2)
    assert peak_kib * 1024 < 8 * 2**30
    assert (peak_kib - base_kib) * 1024 < 2 * planned_bytes
    assert float(out[3]) <= 1e-12  # against the iterative solve
