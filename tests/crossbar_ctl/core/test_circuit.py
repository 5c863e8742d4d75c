"""The circuit solver against its oracles: dense modified nodal analysis, I = G^T V, physics."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar_ctl.core.circuit import MERGE_RATIO, CrossbarCircuit, merge_threshold_ohm
from crossbar_ctl.core.errors import ConfigError


def segments(shape, rr, rc, rs, rd):
    """Every series element's resistance, per segment: the circuit's scalars broadcast.

    Returns row segments and column segments ``(rows, cols)`` (row segment ``[i, 0]`` from the
    driver, column segment ``[rows - 1, j]`` to the sense input), sense ``(cols,)`` and driver
    ``(rows,)`` resistances.
    """
    rows, cols = shape
    return (np.broadcast_to(rr, shape), np.broadcast_to(rc, shape), np.broadcast_to(rs, (cols,)),
            np.broadcast_to(rd, (rows,)))


def dense_mna(g, rr, rc, rs, row_connected, col_connected, vr, vc, row_inj=None, col_inj=None,
              rd=0.0):
    """Slow, obvious oracle: modified nodal analysis, a 0-ohm element is a 0 V source (as SPICE).

    Nodes: row nodes, column nodes, row terminals, column terminals; every connected terminal is
    driven by a voltage source to ground whose current is the terminal current. ``row_inj`` and
    ``col_inj`` ``(rows, cols)`` are currents injected into the row and column nodes. The wires
    are scalars or per segment (:func:`segments`); ``rd`` is the driver resistance.
    """
    rows, cols = g.shape
    rr, rc, rs, rd = segments(g.shape, rr, rc, rs, rd)
    n = rows * cols
    row_node = lambda i, j: i * cols + j  # noqa: E731
    col_node = lambda i, j: n + i * cols + j  # noqa: E731
    size = 2 * n + rows + cols
    stamps, extra, sources = [], [], []  # (a, b, siemens) / 0 V sources (a, b) / (node, volts)

    def wire(a, b, *ohms):  # elements in series
        ohm = sum(np.longdouble(value) for value in ohms)
        if ohm == 0:
            extra.append((a, b, 0.0))
        else:
            stamps.append((a, b, 1 / ohm))

    for i in range(rows):
        for j in range(cols):
            stamps.append((row_node(i, j), col_node(i, j), g[i, j]))
            if j + 1 < cols:
                wire(row_node(i, j), row_node(i, j + 1), rr[i, j + 1])
            if i + 1 < rows:
                wire(col_node(i, j), col_node(i + 1, j), rc[i, j])
    for i in range(rows):
        if row_connected[i]:
            wire(2 * n + i, row_node(i, 0), rd[i], rr[i, 0])
            sources.append((2 * n + i, None, vr[i]))
    for j in range(cols):
        if col_connected[j]:
            wire(col_node(rows - 1, j), 2 * n + rows + j, rc[rows - 1, j], rs[j])
            sources.append((2 * n + rows + j, None, vc[j]))
    m = size + len(extra) + len(sources)
    # Assembled in extended precision: in float64 a diagonal such as 2 / 0.5 ohm + 1e-4 S would
    # round off ~1e-16 * 4 S, ~1e-12 of a cell's conductance.
    a_mat = np.zeros((m, m), dtype=np.longdouble)
    rhs = np.zeros(m, dtype=np.longdouble)
    for a, b, cond in stamps:
        a_mat[a, a] += cond
        a_mat[b, b] += cond
        a_mat[a, b] -= cond
        a_mat[b, a] -= cond
    for k, (a, b, volts) in enumerate(extra + sources):
        row = size + k
        a_mat[row, a] += 1.0
        a_mat[a, row] += 1.0
        if b is not None:
            a_mat[row, b] -= 1.0
            a_mat[b, row] -= 1.0
        rhs[row] = volts
    for i in range(rows):
        for j in range(cols):
            rhs[row_node(i, j)] += 0.0 if row_inj is None else row_inj[i, j]
            rhs[col_node(i, j)] += 0.0 if col_inj is None else col_inj[i, j]
    # Isolated nodes (unused terminals) get a trivial equation.
    for k in range(size):
        if not a_mat[k].any():
            a_mat[k, k] = 1.0
    # Solve for the source currents in units of 1e-4 A (the size of the cell currents) so they are
    # as well resolved as the node voltages, then refine with residuals in extended precision:
    # wire conductances dwarf the cells', so a plain float64 solve is good to only ~cond * 1e-16.
    # The iterate stays in extended precision too (checked against exact rational arithmetic in
    # test_matches_exact_rational_arithmetic).
    unit = np.ones(len(rhs), dtype=np.longdouble)
    unit[size + len(extra):] = 1e-4
    a_ext = a_mat * unit
    a_mat = a_ext.astype(np.float64)
    x = np.linalg.solve(a_mat, rhs.astype(np.float64)).astype(np.longdouble)
    for _ in range(4):
        residual = rhs - a_ext @ x
        x = x + np.linalg.solve(a_mat, residual.astype(np.float64))
    x = (x * unit).astype(np.float64)
    source_current = x[size + len(extra):]  # current into the source's + node from the network
    row_current = np.zeros(rows)
    col_current = np.zeros(cols)
    k = 0
    for i in range(rows):
        if row_connected[i]:
            row_current[i] = -source_current[k]
            k += 1
    for j in range(cols):
        if col_connected[j]:
            col_current[j] = source_current[k]
            k += 1
    return row_current, col_current


def exact_nodal(g, rr, rc, rs, row_connected, col_connected, vr, vc, row_inj=None, col_inj=None,
                rd=0.0):
    """Exact oracle: nodal analysis in rational arithmetic (every float input taken exactly).

    Wires (scalars or per segment, :func:`segments`) must be resistive (every rr, rc > 0) and every
    node must reach a connected terminal (no floating island). Returns the terminal currents
    rounded once to float64.
    """
    rows, cols = g.shape
    rr, rc, rs, rd = segments(g.shape, rr, rc, rs, rd)
    n = rows * cols
    size = 2 * n  # row node (i, j): i * cols + j; column node (i, j): n + i * cols + j
    a_mat = [[Fraction(0)] * (size + 1) for _ in range(size)]  # augmented with the right side

    def stamp(a, b, cond):  # b None: to a held terminal (its current moves to the right side)
        a_mat[a][a] += cond
        if b is not None:
            a_mat[b][b] += cond
            a_mat[a][b] -= cond
            a_mat[b][a] -= cond

    g_source = [1 / (Fraction(rd[i]) + Fraction(rr[i, 0])) for i in range(rows)]
    g_end = [1 / (Fraction(rc[rows - 1, j]) + Fraction(rs[j])) for j in range(cols)]
    for i in range(rows):
        for j in range(cols):
            k = i * cols + j
            stamp(k, n + k, Fraction(g[i, j]))
            if j + 1 < cols:
                stamp(k, k + 1, 1 / Fraction(rr[i, j + 1]))
            if i + 1 < rows:
                stamp(n + k, n + k + cols, 1 / Fraction(rc[i, j]))
            a_mat[k][size] += Fraction(0 if row_inj is None else row_inj[i, j])
            a_mat[n + k][size] += Fraction(0 if col_inj is None else col_inj[i, j])
    for i in np.flatnonzero(row_connected):
        stamp(i * cols, None, g_source[i])
        a_mat[i * cols][size] += g_source[i] * Fraction(vr[i])
    for j in np.flatnonzero(col_connected):
        stamp(n + (rows - 1) * cols + j, None, g_end[j])
        a_mat[n + (rows - 1) * cols + j][size] += g_end[j] * Fraction(vc[j])
    for k in range(size):  # Gaussian elimination (the matrix is symmetric positive definite)
        pivot = a_mat[k]
        for i in range(k + 1, size):
            if a_mat[i][k]:
                factor = a_mat[i][k] / pivot[k]
                a_mat[i] = [x - factor * y for x, y in zip(a_mat[i], pivot)]
    v = [Fraction(0)] * size
    for k in range(size - 1, -1, -1):
        v[k] = (a_mat[k][size] - sum(a_mat[k][j] * v[j] for j in range(k + 1, size))) / a_mat[k][k]
    row_current = [g_source[i] * (Fraction(vr[i]) - v[i * cols]) if row_connected[i] else 0
                   for i in range(rows)]
    col_current = [g_end[j] * (v[n + (rows - 1) * cols + j] - Fraction(vc[j])) if col_connected[j]
                   else 0 for j in range(cols)]
    return np.array(row_current, dtype=float), np.array(col_current, dtype=float)


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


def random_case(rng, rows, cols, *, floating=0.3):
    g = rng.uniform(1e-5, 1e-3, (rows, cols)) * (rng.random((rows, cols)) < 0.8)
    g[:, 0] += 1e-4  # no floating island
    g[0, :] += 1e-4
    row_connected = rng.random(rows) >= floating
    col_connected = rng.random(cols) >= floating
    row_connected[0] = col_connected[0] = True
    return g, row_connected, col_connected


WIRES = [
    (0.5, 0.7, 10.0),
    (0.0, 0.7, 10.0),
    (0.5, 0.0, 10.0),
    (0.5, 0.0, 0.0),
    (0.0, 0.0, 10.0),
    (1.0, 2.0, 0.0),
]


@pytest.mark.parametrize("method", ["auto", "sparse"])
@pytest.mark.parametrize("wires", WIRES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 9), (12, 10)])
def test_matches_dense_mna(shape, wires, method):
    rng = np.random.default_rng([*shape, *(int(1000 * w) for w in wires)])
    g, row_connected, col_connected = random_case(rng, *shape)
    rr, rc, rs = wires
    circuit = CrossbarCircuit(
        g, row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
        row_connected=row_connected, col_connected=col_connected, method=method,
    )
    vr = rng.normal(size=(3, shape[0]))
    vc = rng.normal(scale=0.1, size=(3, shape[1]))
    solution = circuit.solve(vr, vc)
    for b in range(3):
        row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b])
        scale = max(np.abs(row_ref).max(), np.abs(col_ref).max())
        assert np.max(np.abs(solution.row_current_a[b] - row_ref)) <= 1e-12 * scale
        assert np.max(np.abs(solution.col_current_a[b] - col_ref)) <= 1e-12 * scale


@pytest.mark.parametrize("method", ["structured", "sparse"])
@pytest.mark.parametrize("wires", [(0.5, 0.7, 10.0), (1.0, 2.0, 0.0), (0.01, 0.01, 10.0)])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (6, 1), (3, 4)])
def test_matches_exact_rational_arithmetic(shape, wires, method):
    """Terminal currents to ~1e-14 of exact arithmetic (float64 rounding, not the solver, limits).

    Low-resistance wires are the hard case: a plain float64 factorisation loses ~eps * (wire
    conductance) * volts of current per node, up to ~1e-11 of the cell currents here; the solver
    refines its solution with branch-current residuals. The dense oracle is checked here too.
    """
    rng = np.random.default_rng([*shape, *(int(1000 * w) for w in wires), 500])
    g, row_connected, col_connected = random_case(rng, *shape, floating=0.4)
    rr, rc, rs = wires
    circuit = CrossbarCircuit(
        g, row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
        row_connected=row_connected, col_connected=col_connected, method=method,
    )
    vr = rng.normal(size=(2, shape[0]))
    vc = rng.normal(scale=0.1, size=(2, shape[1]))
    row_inj = rng.normal(scale=1e-4, size=(2, *shape)) * [[[0.0]], [[1.0]]]  # none, then some
    solution = circuit.solve(vr, vc, row_node_current_a=row_inj)
    for b in range(2):
        row_ref, col_ref = exact_nodal(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                       row_inj[b])
        scale = max(np.abs(row_ref).max(), np.abs(col_ref).max())
        assert np.max(np.abs(solution.row_current_a[b] - row_ref)) <= 1e-13 * scale
        assert np.max(np.abs(solution.col_current_a[b] - col_ref)) <= 1e-13 * scale
        dense_row, dense_col = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b],
                                         vc[b], row_inj[b])
        assert np.max(np.abs(dense_row - row_ref)) <= 1e-13 * scale
        assert np.max(np.abs(dense_col - col_ref)) <= 1e-13 * scale


def test_exact_oracle_on_the_reported_case():
    """The (6, 1) case that once failed at 1.3e-12: the float64-assembled oracle was off, not the
    solver (exact: 7e-15 before refinement, ~1e-16 after)."""
    shape, wires = (6, 1), (0.5, 0.7, 10.0)
    rng = np.random.default_rng([*shape, *(int(1000 * w) for w in wires)])
    g, row_connected, col_connected = random_case(rng, *shape)
    assert list(row_connected) == [True, True, False, True, False, False]
    vr = rng.normal(size=(3, shape[0]))
    vc = rng.normal(scale=0.1, size=(3, shape[1]))
    for method in ("structured", "sparse"):
        circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.7,
                                  sense_resistance_ohm=10.0, row_connected=row_connected,
                                  col_connected=col_connected, method=method)
        solution = circuit.solve(vr, vc)
        for b in range(3):
            row_ref, col_ref = exact_nodal(g, *wires, row_connected, col_connected, vr[b], vc[b])
            currents = np.concatenate([solution.row_current_a[b], solution.col_current_a[b]])
            exact = np.concatenate([row_ref, col_ref])
            assert relative_error(currents, exact) <= 1e-14


def series_wires(element, ohm):
    """(row wire, column wire, sense) with one element (or all) at ``ohm``, the others normal."""
    return {"row": (ohm, 0.7, 10.0), "col": (0.5, ohm, 10.0), "sense": (0.5, 0.7, ohm),
            "all": (ohm, ohm, ohm)}[element]


@pytest.mark.parametrize("method", ["auto", "sparse"])
@pytest.mark.parametrize("element", ["row", "col", "sense", "all"])
@pytest.mark.parametrize("ohm", [0.0, 5e-324, 1e-300, 1e-16, 1e-9, 0.5, 1e6])
def test_series_resistance_from_zero_to_large(ohm, element, method):
    """Any series element from exactly 0 through subnormal and tiny to large solves, as exactly as
    the oracle can tell, except a merged one (below MERGE_RATIO / max G): off by ~ratio * line."""
    rng = np.random.default_rng(11)
    g, row_connected, col_connected = random_case(rng, 3, 4)  # floating lines too
    rr, rc, rs = series_wires(element, ohm)
    circuit = CrossbarCircuit(
        g, row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
        row_connected=row_connected, col_connected=col_connected, method=method,
    )
    vr = rng.normal(size=(2, 3))
    vc = rng.normal(scale=0.1, size=(2, 4))
    solution = circuit.solve(vr, vc)
    ratio = ohm * g.max()
    # 1e-9 ohm is 1.1e-12 of the smallest cell resistance: merged, off by up to ratio * 7 cells
    # (measured 1.5e-12 to 6.3e-12); 1e-16 and below err by < 1e-18.
    merged = 0 < ratio < MERGE_RATIO
    bound = max(1e-13, ratio * sum(g.shape)) if merged else 1e-13
    for b in range(2):
        oracle = exact_nodal if rr > 0 and rc > 0 else dense_mna  # exact needs resistive wires
        row_ref, col_ref = oracle(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b])
        scale = max(np.abs(row_ref).max(), np.abs(col_ref).max())
        assert np.max(np.abs(solution.row_current_a[b] - row_ref)) <= bound * scale
        assert np.max(np.abs(solution.col_current_a[b] - col_ref)) <= bound * scale


def test_merged_elements_are_reported_as_zero():
    g = np.full((3, 4), 1e-3)
    assert merge_threshold_ohm(g) == MERGE_RATIO / 1e-3
    below, above = 0.99 * MERGE_RATIO / 1e-3, 1.01 * MERGE_RATIO / 1e-3
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=above, col_wire_resistance_ohm=below,
                              sense_resistance_ohm=below)
    assert circuit.merge_threshold_ohm == MERGE_RATIO / 1e-3
    assert circuit.row_wire_resistance_ohm == above
    assert circuit.col_wire_resistance_ohm == circuit.sense_resistance_ohm == 0.0

def test_without_cells_injected_current_still_sees_tiny_wires():
    """No conducting cell sets no scale: only resistances below 1e-300 ohm merge, because a
    current injected into a node still flows through the wires (calibration's port solves)."""
    assert merge_threshold_ohm(np.zeros((2, 3))) == 1e-300
    empty = CrossbarCircuit(np.zeros((2, 3)), row_wire_resistance_ohm=1e-16,
                            col_wire_resistance_ohm=5e-324)
    assert empty.row_wire_resistance_ohm == 1e-16 and empty.col_wire_resistance_ohm == 0.0
    injected = np.zeros((2, 3))
    injected[1, 2] = 1e-3  # into row node (1, 2): out through three row segments
    solution = empty.solve([0.0, 0.0], row_node_current_a=injected)
    np.testing.assert_allclose(solution.row_node_voltage_v[0, 1], [1e-19, 2e-19, 3e-19], rtol=1e-15)
    np.testing.assert_allclose(solution.row_current_a[0], [0.0, -1e-3], rtol=1e-15)


def test_wire_fitted_at_5e_16_ohm_solves():
    """The case that stopped a calibration: a twin fit's column wire of 5e-16 ohm made SuperLU
    stop with 'Factor is exactly singular'. Merged, it agrees with the 0-ohm circuit."""
    g = np.array([[9.3127e-5], [1.156e-4], [1.7146e-4], [1.1058e-4]])
    v = np.eye(4)
    kwargs = dict(row_wire_resistance_ohm=0.5596, sense_resistance_ohm=10.923)
    tiny = CrossbarCircuit(g, col_wire_resistance_ohm=5.135e-16, **kwargs).solve(v)
    ideal = CrossbarCircuit(g, col_wire_resistance_ohm=0.0, **kwargs).solve(v)
    np.testing.assert_array_equal(tiny.col_current_a, ideal.col_current_a)
    for b in range(4):
        row_ref, col_ref = exact_nodal(g, 0.5596, 5.135e-16, 10.923, [True] * 4, [True], v[b],
                                       np.zeros(1))
        assert relative_error(tiny.col_current_a[b], col_ref) <= 1e-15


@pytest.mark.parametrize("seed", range(8))
def test_just_above_the_merge_threshold_is_solved_within_its_bound(seed):
    """The worst side of the threshold: wires 1.01 * MERGE_RATIO of the smallest cell resistance
    with floating lines (ill-conditioned, solved): within the documented ~2e-9."""
    rng = np.random.default_rng([seed, 3, 4])
    g, row_connected, col_connected = random_case(rng, 3, 4)
    ohm = 1.01 * MERGE_RATIO / g.max()
    vr, vc = rng.normal(size=3), rng.normal(scale=0.1, size=4)
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=ohm, col_wire_resistance_ohm=ohm,
                              sense_resistance_ohm=10.0, row_connected=row_connected,
                              col_connected=col_connected)
    assert circuit.col_wire_resistance_ohm == ohm  # solved, not merged
    solution = circuit.solve(vr, vc)
    row_ref, col_ref = exact_nodal(g, ohm, ohm, 10.0, row_connected, col_connected, vr, vc)
    currents = np.concatenate([solution.row_current_a[0], solution.col_current_a[0]])
    assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= 2e-9


@pytest.mark.parametrize("ohm", [1e-300, 1e-16, 1e-12])
def test_tiny_wires_on_a_large_array(ohm):
    """16x16 with floating lines: tiny wires merge, as 0 ohm does."""
    rng = np.random.default_rng(16)
    g, row_connected, col_connected = random_case(rng, 16, 16)
    v = rng.normal(size=(3, 16))
    kwargs = dict(sense_resistance_ohm=10.0, row_connected=row_connected,
                  col_connected=col_connected)
    tiny = CrossbarCircuit(g, row_wire_resistance_ohm=ohm, col_wire_resistance_ohm=ohm, **kwargs)
    ideal = CrossbarCircuit(g, row_wire_resistance_ohm=0.0, col_wire_resistance_ohm=0.0, **kwargs)
    np.testing.assert_array_equal(tiny.solve(v).col_current_a, ideal.solve(v).col_current_a)


@pytest.mark.parametrize("method", ["auto", "sparse"])
@pytest.mark.parametrize("wires", WIRES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 9)])
def test_node_injections_match_dense_mna(shape, wires, method):
    rng = np.random.default_rng([*shape, *(int(1000 * w) for w in wires), 7])
    g, row_connected, col_connected = random_case(rng, *shape)
    rr, rc, rs = wires
    circuit = CrossbarCircuit(
        g, row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
        row_connected=row_connected, col_connected=col_connected, method=method,
    )
    vr = rng.normal(size=(2, shape[0]))
    row_inj = rng.normal(scale=1e-4, size=(2, *shape))
    col_inj = rng.normal(scale=1e-4, size=shape)  # broadcast over the batch
    solution = circuit.solve(vr, row_node_current_a=row_inj, col_node_current_a=col_inj)
    zero = np.zeros(shape[1])
    for b in range(2):
        row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b], zero,
                                     row_inj[b], col_inj)
        scale = max(np.abs(row_ref).max(), np.abs(col_ref).max(), np.abs(row_inj).max())
        assert np.max(np.abs(solution.row_current_a[b] - row_ref)) <= 1e-12 * scale
        assert np.max(np.abs(solution.col_current_a[b] - col_ref)) <= 1e-12 * scale
    # Superposition: the injections alone add to the voltages alone.
    alone = circuit.solve(np.zeros(shape[0]), row_node_current_a=row_inj, col_node_current_a=col_inj)
    plain = circuit.solve(vr)
    np.testing.assert_allclose(plain.col_current_a + alone.col_current_a, solution.col_current_a,
                               rtol=0, atol=1e-12 * scale)


def test_bad_injections_are_refused():
    circuit = CrossbarCircuit(np.ones((2, 3)), row_wire_resistance_ohm=1.0, col_wire_resistance_ohm=1.0)
    with pytest.raises(ConfigError, match="row_node_current_a"):
        circuit.solve([1.0, 0.0], row_node_current_a=np.ones((3, 2)))
    with pytest.raises(ConfigError, match="col_node_current_a"):
        circuit.solve([1.0, 0.0], col_node_current_a=np.full((2, 3), np.nan))
    with pytest.raises(ConfigError, match="batch"):
        circuit.solve(np.ones((2, 2)), col_node_current_a=np.ones((3, 2, 3)))
    # Row 1 floats and has no cell: current injected into it has nowhere to go.
    g = np.array([[1e-3, 1e-3, 1e-3], [0.0, 0.0, 0.0]])
    floating = CrossbarCircuit(g, row_wire_resistance_ohm=1.0, col_wire_resistance_ohm=1.0,
                               row_connected=[True, False])
    injection = np.zeros((2, 3))
    floating.solve([1.0, 0.0], row_node_current_a=injection)  # zero is fine
    injection[1, 1] = 1e-6
    with pytest.raises(ConfigError, match="floating island"):
        floating.solve([1.0, 0.0], row_node_current_a=injection)


def test_structured_matches_sparse_with_floating_lines():
    rng = np.random.default_rng(7)
    g, row_connected, col_connected = random_case(rng, 40, 33)
    kwargs = dict(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5, sense_resistance_ohm=10,
                  row_connected=row_connected, col_connected=col_connected)
    fast = CrossbarCircuit(g, **kwargs)
    slow = CrossbarCircuit(g, method="sparse", **kwargs)
    assert fast.method == "structured"
    vr = rng.normal(size=(5, 40))
    a, b = fast.solve(vr), slow.solve(vr)
    assert relative_error(a.col_current_a, b.col_current_a) <= 1e-12
    assert relative_error(a.row_current_a, b.row_current_a) <= 1e-12
    assert relative_error(a.row_node_voltage_v, b.row_node_voltage_v) <= 1e-12
    assert relative_error(a.col_node_voltage_v, b.col_node_voltage_v) <= 1e-12


@pytest.mark.parametrize("method", ["auto", "sparse"])
def test_ideal_wires_are_exactly_mvm(method):
    rng = np.random.default_rng(1)
    g = rng.uniform(0, 1e-3, (9, 13))
    v = rng.normal(size=(4, 9))
    solution = CrossbarCircuit(g, method=method).solve(v)
    np.testing.assert_allclose(solution.col_current_a, v @ g, rtol=1e-14, atol=0)
    np.testing.assert_allclose(solution.row_current_a, v * g.sum(axis=1), rtol=1e-14, atol=0)
    assert np.all(solution.row_node_voltage_v == v[:, :, None])
    assert np.all(solution.col_node_voltage_v == 0)


@pytest.mark.parametrize("method", ["auto", "sparse"])
def test_superposition_and_conservation(method):
    rng = np.random.default_rng(2)
    g, row_connected, col_connected = random_case(rng, 20, 17)
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.3,
                              sense_resistance_ohm=5, row_connected=row_connected,
                              col_connected=col_connected, method=method)
    v1, v2 = rng.normal(size=20), rng.normal(size=20)
    c1, c2 = rng.normal(size=17), rng.normal(size=17)
    both = circuit.solve(2 * v1 - 3 * v2, 2 * c1 - 3 * c2)
    one, two = circuit.solve(v1, c1), circuit.solve(v2, c2)
    expected = 2 * one.col_current_a - 3 * two.col_current_a
    assert relative_error(both.col_current_a, expected) <= 1e-12
    # With grounded columns all current entering the rows leaves through the columns.
    grounded = circuit.solve(v1)
    total = np.abs(grounded.row_current_a).sum()
    assert abs(grounded.row_current_a.sum() - grounded.col_current_a.sum()) <= 1e-12 * total


@pytest.mark.parametrize("method", ["auto", "sparse"])
def test_reciprocity(method):
    rng = np.random.default_rng(3)
    g, _, _ = random_case(rng, 11, 8)
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5,
                              sense_resistance_ohm=10, method=method)
    # Short-circuit transfer admittances: row i driven -> column j, and column j driven -> row i.
    row_drive = circuit.solve(np.eye(11)).col_current_a  # (row i, col j): out of column j
    col_drive = circuit.solve(np.zeros((8, 11)), np.eye(8)).row_current_a  # (col j, row i)
    assert relative_error(col_drive.T, -row_drive) <= 1e-12


def test_floating_lines_carry_no_current_and_ignore_their_voltage():
    rng = np.random.default_rng(4)
    g = rng.uniform(1e-4, 1e-3, (6, 5))
    row_connected = np.array([1, 0, 1, 1, 0, 1], bool)
    col_connected = np.array([1, 1, 0, 1, 1], bool)
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=1, col_wire_resistance_ohm=1,
                              sense_resistance_ohm=1, row_connected=row_connected,
                              col_connected=col_connected)
    v = rng.normal(size=6)
    changed = v.copy()
    changed[~row_connected] += 5.0
    a, b = circuit.solve(v), circuit.solve(changed)
    assert np.all(a.row_current_a[0, ~row_connected] == 0)
    assert np.all(a.col_current_a[0, ~col_connected] == 0)
    np.testing.assert_array_equal(a.col_current_a, b.col_current_a)
    # A floating row still carries sneak current between its cells.
    cell = g * (a.row_node_voltage_v[0] - a.col_node_voltage_v[0])
    assert np.all(np.abs(cell[1]).max() > 1e-6 * np.abs(cell).max())


def test_floating_island_is_nan_and_silent():
    g = np.full((3, 3), 1e-3)
    g[1, :] = 0.0  # row 1 touches nothing and floats: an island
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=1, col_wire_resistance_ohm=1,
                              row_connected=[True, False, True])
    assert circuit.method == "sparse"
    solution = circuit.solve([1.0, 2.0, 3.0])
    assert np.all(np.isnan(solution.row_node_voltage_v[0, 1]))
    assert np.all(np.isfinite(solution.col_current_a))
    # The same array with row 1 connected: it carries no current either way.
    ref = CrossbarCircuit(g, row_wire_resistance_ohm=1, col_wire_resistance_ohm=1)
    ref = ref.solve([1.0, 2.0, 3.0])
    np.testing.assert_allclose(solution.col_current_a, ref.col_current_a, rtol=1e-13)
    assert solution.row_current_a[0, 1] == 0


def test_single_vector_gives_a_batch_of_one():
    circuit = CrossbarCircuit(np.ones((2, 3)) * 1e-3, row_wire_resistance_ohm=1,
                              col_wire_resistance_ohm=1)
    solution = circuit.solve([1.0, 0.5])
    assert solution.row_current_a.shape == (1, 2)
    assert solution.col_current_a.shape == (1, 3)
    assert solution.row_node_voltage_v.shape == (1, 2, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "key"),
    [
        ((np.full((2, 2), -1.0),), {}, "conductance_s"),
        ((np.full((2, 2), np.nan),), {}, "conductance_s"),
        ((np.ones(3),), {}, "conductance_s"),
        ((np.ones((2, 2)),), {"row_wire_resistance_ohm": -1}, "row_wire_resistance_ohm"),
        ((np.ones((2, 2)),), {"sense_resistance_ohm": np.inf}, "sense_resistance_ohm"),
        ((np.ones((2, 2)),), {"row_connected": [True]}, "row_connected"),
        ((np.ones((2, 2)),), {"method": "magic"}, "method"),
        ((np.ones((2, 2)),), {"method": "structured"}, "method"),
    ],
)
def test_bad_construction_names_the_argument(args, kwargs, key):
    with pytest.raises(ConfigError) as info:
        CrossbarCircuit(*args, **kwargs)
    assert info.value.key == key


def test_bad_voltages_are_refused():
    circuit = CrossbarCircuit(np.ones((2, 3)))
    with pytest.raises(ConfigError, match="row_voltage_v"):
        circuit.solve([1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="row_voltage_v"):
        circuit.solve([1.0, np.nan])
    with pytest.raises(ConfigError, match="batch"):
        circuit.solve(np.ones((2, 2)), np.ones((3, 3)))


def test_tiny_conductances_stay_accurate():
    """Leakage-only cells: terminal currents come from cell currents, not from tiny wire drops."""
    rng = np.random.default_rng(8)
    g = np.full((12, 10), 8e-12)
    v = rng.normal(size=12)
    kwargs = dict(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5, sense_resistance_ohm=10)
    fast = CrossbarCircuit(g, **kwargs).solve(v)
    slow = CrossbarCircuit(g, method="sparse", **kwargs).solve(v)
    assert relative_error(fast.col_current_a, slow.col_current_a) <= 1e-12
    # The wires (< 100 ohm in all) perturb a 1e11 ohm cell by < 1e-9.
    assert relative_error(fast.col_current_a[0], v @ g) <= 1e-8
    assert relative_error(fast.row_current_a[0], v * g.sum(axis=1)) <= 1e-8


@settings(derandomize=True, max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 7),
    seed=st.integers(0, 2**32 - 1),
    wire_ohm=st.sampled_from([0.0, 0.01, 1.0, 100.0]),
    sense_ohm=st.sampled_from([0.0, 10.0]),
)
def test_every_configuration_agrees_with_dense_mna(rows, cols, seed, wire_ohm, sense_ohm):
    """Any shape, wires, open cells and floating lines (islands included) against the oracle."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-4, 1e-2, (rows, cols)) * (rng.random((rows, cols)) < 0.6)
    row_connected = rng.random(rows) < 0.6
    col_connected = rng.random(cols) < 0.6
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=wire_ohm,
                              col_wire_resistance_ohm=rng.choice([0.0, wire_ohm]),
                              sense_resistance_ohm=sense_ohm, row_connected=row_connected,
                              col_connected=col_connected)
    vr, vc = rng.normal(size=rows), rng.normal(size=cols)
    solution = circuit.solve(vr, vc)
    # The oracle needs every node held: with an island (NaN voltages) check only finite currents.
    voltages = np.concatenate([solution.row_node_voltage_v, solution.col_node_voltage_v])
    if np.isnan(voltages).any():
        assert np.isfinite(solution.row_current_a).all()
        assert np.isfinite(solution.col_current_a).all()
        return
    row_ref, col_ref = dense_mna(g, circuit.row_wire_resistance_ohm,
                                 circuit.col_wire_resistance_ohm, sense_ohm, row_connected,
                                 col_connected, vr, vc)
    # Normwise, on the largest current or one cell's current at full voltage (all may be 0).
    full_scale = g.max() * max(np.abs(vr).max(), np.abs(vc).max())
    scale = max(np.abs(row_ref).max(), np.abs(col_ref).max(), full_scale)
    assert np.max(np.abs(solution.row_current_a[0] - row_ref)) <= 1e-11 * scale
    assert np.max(np.abs(solution.col_current_a[0] - col_ref)) <= 1e-11 * scale


def test_solves_restore_the_blas_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from concurrent.futures import ThreadPoolExecutor

    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    circuit = CrossbarCircuit(np.full((20, 20), 1e-3), row_wire_resistance_ohm=1,
                              col_wire_resistance_ohm=1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: circuit.solve(np.full(20, float(k))), range(16)))
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before
    np.testing.assert_allclose(results[3].col_current_a, 3 * results[1].col_current_a, rtol=1e-13)


# ---- per-segment wires, drivers and sense inputs ---------------------------------------------

def scattered_wires(rng, rows, cols, *, zeros=0.0):
    """Row and column segments ``(rows, cols)``, sense ``(cols,)`` and driver ``(rows,)``
    resistances that differ element by element; a fraction ``zeros`` of each is exactly 0."""
    wires = (rng.uniform(0.2, 2.0, (rows, cols)), rng.uniform(0.2, 2.0, (rows, cols)),
             rng.uniform(5.0, 15.0, cols), rng.uniform(5.0, 15.0, rows))
    for ohm in wires:
        ohm[rng.random(ohm.shape) < zeros] = 0.0
    return wires


def wire_kwargs(rr, rc, rs, rd):
    return dict(row_wire_resistance_ohm=rr, col_wire_resistance_ohm=rc, sense_resistance_ohm=rs,
                driver_resistance_ohm=rd)


def test_one_cell_is_its_series_resistances():
    circuit = CrossbarCircuit([[1e-3]], **wire_kwargs([[0.5]], [[0.7]], [10.0], [20.0]))
    assert circuit.method == "structured"
    current = circuit.solve([1.0]).col_current_a[0, 0]
    assert current == pytest.approx(1.0 / (20.0 + 0.5 + 1e3 + 0.7 + 10.0), rel=1e-15)


@pytest.mark.parametrize("method", ["structured", "sparse"])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (6, 1), (3, 4)])
def test_scattered_wires_match_exact_rational_arithmetic(shape, method):
    """Every segment, driver and sense input its own value: the structured solver's per-link
    couplings and the sparse solver's per-element stamps are exact to float64 rounding."""
    rng = np.random.default_rng([*shape, 600])
    g, row_connected, col_connected = random_case(rng, *shape, floating=0.4)
    wires = scattered_wires(rng, *shape)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected, method=method)
    vr = rng.normal(size=(2, shape[0]))
    vc = rng.normal(scale=0.1, size=(2, shape[1]))
    row_inj = rng.normal(scale=1e-4, size=(2, *shape)) * [[[0.0]], [[1.0]]]
    solution = circuit.solve(vr, vc, row_node_current_a=row_inj)
    rr, rc, rs, rd = wires
    for b in range(2):
        row_ref, col_ref = exact_nodal(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                       row_inj[b], rd=rd)
        currents = np.concatenate([solution.row_current_a[b], solution.col_current_a[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= 1e-13


@pytest.mark.parametrize("method", ["auto", "sparse"])
@pytest.mark.parametrize("zeros", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(1, 6), (6, 1), (7, 9), (12, 10)])
def test_scattered_wires_match_dense_mna(shape, zeros, method):
    """Per-element wires with some ideal (0-ohm) segments, drivers and senses among them."""
    rng = np.random.default_rng([*shape, int(10 * zeros), 601])
    g, row_connected, col_connected = random_case(rng, *shape)
    wires = scattered_wires(rng, *shape, zeros=zeros)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected, method=method)
    vr = rng.normal(size=(3, shape[0]))
    vc = rng.normal(scale=0.1, size=(3, shape[1]))
    col_inj = rng.normal(scale=1e-4, size=shape)
    solution = circuit.solve(vr, vc, col_node_current_a=col_inj)
    rr, rc, rs, rd = wires
    for b in range(3):
        row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                     col_inj=col_inj, rd=rd)
        currents = np.concatenate([solution.row_current_a[b], solution.col_current_a[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= 1e-12


@pytest.mark.parametrize("method", ["auto", "sparse"])
def test_uniform_arrays_solve_as_the_scalars_bit_for_bit(method):
    rng = np.random.default_rng(602)
    g, row_connected, col_connected = random_case(rng, 12, 10)
    common = dict(row_connected=row_connected, col_connected=col_connected, method=method)
    scalar = CrossbarCircuit(g, **wire_kwargs(0.5, 0.7, 10.0, 0.0), **common)
    arrays = CrossbarCircuit(g, **wire_kwargs(np.full((12, 10), 0.5), np.full((12, 10), 0.7),
                                              np.full(10, 10.0), np.zeros(12)), **common)
    assert arrays.method == scalar.method == ("structured" if method == "auto" else "sparse")
    vr = rng.normal(size=(4, 12))
    inj = rng.normal(scale=1e-4, size=(4, 12, 10))
    a = scalar.solve(vr, row_node_current_a=inj, col_node_current_a=inj)
    b = arrays.solve(vr, row_node_current_a=inj, col_node_current_a=inj)
    for name in ("row_current_a", "col_current_a", "row_node_voltage_v", "col_node_voltage_v"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_structured_matches_sparse_with_scattered_wires():
    rng = np.random.default_rng(603)
    g, row_connected, col_connected = random_case(rng, 40, 33)
    kwargs = dict(wire_kwargs(*scattered_wires(rng, 40, 33)), row_connected=row_connected,
                  col_connected=col_connected)
    fast = CrossbarCircuit(g, **kwargs)
    slow = CrossbarCircuit(g, method="sparse", **kwargs)
    assert fast.method == "structured"
    vr = rng.normal(size=(5, 40))
    a, b = fast.solve(vr), slow.solve(vr)
    for name in ("row_current_a", "col_current_a", "row_node_voltage_v", "col_node_voltage_v"):
        assert relative_error(getattr(a, name), getattr(b, name)) <= 1e-12


def test_each_element_below_the_threshold_merges_alone():
    g = np.full((3, 4), 1e-3)
    tiny = 0.99 * merge_threshold_ohm(g)
    rr, rc = np.full((3, 4), 0.5), np.full((3, 4), 0.7)
    rr[1, 2], rc[2, 3] = tiny, tiny
    rs, rd = np.array([10.0, tiny, 10.0, 10.0]), np.array([tiny, 5.0, 5.0])
    circuit = CrossbarCircuit(g, **wire_kwargs(rr, rc, rs, rd))
    assert circuit.method == "sparse"  # a merged segment joins two nodes
    expected = [np.where(a == tiny, 0.0, a) for a in (rr, rc, rs, rd)]
    solved = (circuit.row_wire_resistance_ohm, circuit.col_wire_resistance_ohm,
              circuit.sense_resistance_ohm, circuit.driver_resistance_ohm)
    for actual, want in zip(solved, expected):
        np.testing.assert_array_equal(actual, want)
        assert not actual.flags.writeable
    v = np.array([1.0, -0.5, 0.25])
    merged = CrossbarCircuit(g, **wire_kwargs(*expected)).solve(v)
    np.testing.assert_array_equal(circuit.solve(v).col_current_a, merged.col_current_a)
    row_ref, col_ref = dense_mna(g, *expected[:3], np.ones(3, bool), np.ones(4, bool), v,
                                 np.zeros(4), rd=expected[3])
    assert relative_error(merged.col_current_a[0], col_ref) <= 1e-13


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"row_wire_resistance_ohm": np.ones((2, 4))}, "row_wire_resistance_ohm"),
        ({"col_wire_resistance_ohm": np.ones(3)}, "col_wire_resistance_ohm"),
        ({"sense_resistance_ohm": np.ones(2)}, "sense_resistance_ohm"),
        ({"driver_resistance_ohm": [1.0, -1.0]}, "driver_resistance_ohm"),
        ({"driver_resistance_ohm": np.inf}, "driver_resistance_ohm"),
        ({"row_wire_resistance_ohm": np.full((2, 3), np.nan)}, "row_wire_resistance_ohm"),
    ],
)
def test_bad_per_segment_resistances_name_the_argument(kwargs, key):
    with pytest.raises(ConfigError) as info:
        CrossbarCircuit(np.ones((2, 3)), **kwargs)
    assert info.value.key == key


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    zeros=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_every_scattered_configuration_agrees_with_dense_mna(rows, cols, seed, zeros):
    """Per-element wires (some or all ideal), open cells, floating lines, islands: the oracle."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-4, 1e-2, (rows, cols)) * (rng.random((rows, cols)) < 0.6)
    row_connected = rng.random(rows) < 0.6
    col_connected = rng.random(cols) < 0.6
    wires = scattered_wires(rng, rows, cols, zeros=zeros)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected)
    vr, vc = rng.normal(size=rows), rng.normal(size=cols)
    solution = circuit.solve(vr, vc)
    voltages = np.concatenate([solution.row_node_voltage_v, solution.col_node_voltage_v])
    if np.isnan(voltages).any():
        assert np.isfinite(solution.row_current_a).all()
        assert np.isfinite(solution.col_current_a).all()
        return
    rr, rc, rs, rd = wires
    row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr, vc, rd=rd)
    full_scale = g.max(initial=0.0) * max(np.abs(vr).max(), np.abs(vc).max())
    scale = max(np.abs(row_ref).max(), np.abs(col_ref).max(), full_scale)
    assert np.max(np.abs(solution.row_current_a[0] - row_ref)) <= 1e-11 * scale
    assert np.max(np.abs(solution.col_current_a[0] - col_ref)) <= 1e-11 * scale


# Measured worst cases of the iterative solver against the oracles (tests below): exact rational
# 2.1e-16, dense MNA (its own rounding included) 1.6e-16; bounds about one bit above.
ITERATIVE_EXACT, ITERATIVE_DENSE = 4e-16, 3e-16


# ---- terminal currents alone: the transfer matrix -------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (6, 1), (3, 4)])
def test_transfer_matches_exact_rational_arithmetic(shape):
    """Scattered wires, floating lines, column voltages: the transfer route is as exact as the
    refined solve it is built from (measured 4e-17 to 2.4e-16 relative here)."""
    rng = np.random.default_rng([*shape, 700])
    g, row_connected, col_connected = random_case(rng, *shape, floating=0.4)
    wires = scattered_wires(rng, *shape)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected)
    vr = rng.normal(size=(3, shape[0]))
    vc = rng.normal(scale=0.1, size=(3, shape[1]))
    row_current, col_current = circuit.currents(vr, vc, method="transfer")
    assert circuit.transfer_ready
    rr, rc, rs, rd = wires
    for b in range(3):
        row_ref, col_ref = exact_nodal(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                       rd=rd)
        currents = np.concatenate([row_current[b], col_current[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= 5e-16


@pytest.mark.parametrize("zeros", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(1, 6), (6, 1), (7, 9), (12, 10)])
def test_transfer_matches_dense_mna_with_merged_wires(shape, zeros):
    """Some ideal (0-ohm, merged) segments, drivers and senses: the sparse solver builds it
    (measured up to 4.3e-16 relative, the oracle's own rounding included)."""
    rng = np.random.default_rng([*shape, int(10 * zeros), 701])
    g, row_connected, col_connected = random_case(rng, *shape)
    wires = scattered_wires(rng, *shape, zeros=zeros)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected)
    vr = rng.normal(size=(3, shape[0]))
    vc = rng.normal(scale=0.1, size=(3, shape[1]))
    row_current, col_current = circuit.currents(vr, vc, method="transfer")
    rr, rc, rs, rd = wires
    for b in range(3):
        row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                     rd=rd)
        currents = np.concatenate([row_current[b], col_current[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= 1e-15


def test_transfer_agrees_with_the_direct_solve_on_islands_and_floating_voltages():
    g = np.full((3, 3), 1e-3)
    g[1, :] = 0.0  # row 1 floats and touches nothing: an island
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=1, col_wire_resistance_ohm=1,
                              row_connected=[True, False, True], col_connected=[True, True, False])
    vr = np.array([[1.0, 2.0, 3.0], [0.5, -7.0, 0.0]])
    vc = np.array([0.1, -0.2, 9.0])  # column 2 floats: its voltage is ignored
    direct = circuit.currents(vr, vc, method="direct")
    transfer = circuit.currents(vr, vc, method="transfer")
    solved = circuit.solve(vr, vc)
    np.testing.assert_array_equal(direct[1], solved.col_current_a)
    for a, b in zip(transfer, direct):
        assert relative_error(a, b) <= 1e-15
    assert np.all(transfer[0][:, 1] == 0) and np.all(transfer[1][:, 2] == 0)
    y = circuit.transfer_matrix_s()
    assert y.shape == (6, 6)
    assert np.all(y[[1, 5]] == 0)  # floating terminals drive nothing
    # Reciprocity: column current per row volt = -(row current per column volt).
    np.testing.assert_allclose(y[3:, :3], -y[:3, 3:].T, rtol=0, atol=1e-15 * np.abs(y).max())


def test_auto_builds_the_transfer_matrix_once_the_vectors_reach_its_unit_solves():
    """``auto`` where the transfer matrix comes from unit solves (a merged wire segment: no
    reduction onto the terminals): direct solves until the vectors asked reach ``rows`` (``+
    cols`` with column voltages); then the transfer matrix, built once, for every later batch."""
    rng = np.random.default_rng(702)
    g, _, _ = random_case(rng, 8, 5)
    row_wire = np.full((8, 5), 0.5)
    row_wire[3, 2] = 0.0  # merged
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=row_wire, col_wire_resistance_ohm=0.7,
                              sense_resistance_ohm=10.0)
    batches = []
    solve = circuit.solve
    circuit.solve = lambda vr, vc=None: batches.append(np.atleast_2d(vr).shape[0]) or solve(vr, vc)
    v = rng.normal(size=(8, 8))
    circuit.currents(v[:3])
    circuit.currents(v[3:7])
    assert batches == [3, 4] and not circuit.transfer_ready  # 7 vectors < 8 rows: direct
    currents = circuit.currents(v[7:])  # the 8th: the unit solves (one batch), then a product
    assert batches == [3, 4, 8] and circuit.transfer_ready
    circuit.currents(v)
    assert batches == [3, 4, 8]  # built: no more solves
    np.testing.assert_allclose(currents[1], solve(v[7:]).col_current_a, rtol=1e-14)
    # Column voltages need the column-driven part: 5 more unit solves, once.
    circuit.currents(v, rng.normal(size=(8, 5)))
    circuit.currents(v, rng.normal(size=5))
    assert batches == [3, 4, 8, 5]
    # A batch that reaches the unit solves alone takes the transfer route at once.
    fresh = CrossbarCircuit(g, row_wire_resistance_ohm=row_wire, col_wire_resistance_ohm=0.7)
    fresh.currents(rng.normal(size=(7, 8)))
    assert not fresh.transfer_ready
    fresh.currents(rng.normal(size=(1, 8)))
    assert fresh.transfer_ready
    with pytest.raises(ConfigError) as info:
        circuit.currents(v, method="magic")
    assert info.value.key == "method"
    with pytest.raises(ConfigError, match="batch"):
        circuit.currents(np.ones((2, 8)), np.ones((3, 5)))


# ---- the iterative solver: a circuit's first vectors, nothing factored ----------------------

@pytest.fixture
def always_iterative(monkeypatch):
    """``auto`` solves iteratively whatever the size (the rule allows one vector per 48
    columns, so none on these small arrays otherwise)."""
    import crossbar_ctl.core.circuit as module

    monkeypatch.setattr(module, "_ITERATIVE_COLS_PER_VECTOR", 0)


def factored(circuit) -> bool:
    """Whether the circuit's direct solver is built (``auto`` factors on first need)."""
    return circuit.factored


@pytest.mark.parametrize("shape", [(2, 3), (6, 1), (3, 4), (1, 5)])
def test_iterative_matches_exact_rational_arithmetic(shape, always_iterative):
    """Scattered wires, floating lines, column voltages, injections: converged as exactly as the
    refined direct solve."""
    rng = np.random.default_rng([*shape, 800])
    g, row_connected, col_connected = random_case(rng, *shape, floating=0.4)
    wires = scattered_wires(rng, *shape)
    circuit = CrossbarCircuit(g, **wire_kwargs(*wires), row_connected=row_connected,
                              col_connected=col_connected)
    vr = rng.normal(size=(2, shape[0]))
    vc = rng.normal(scale=0.1, size=(2, shape[1]))
    row_inj = rng.normal(scale=1e-4, size=(2, *shape)) * [[[0.0]], [[1.0]]]
    solution = circuit.solve(vr, vc, row_node_current_a=row_inj)
    assert not factored(circuit)
    rr, rc, rs, rd = wires
    for b in range(2):
        row_ref, col_ref = exact_nodal(g, rr, rc, rs, row_connected, col_connected, vr[b], vc[b],
                                       row_inj[b], rd=rd)
        currents = np.concatenate([solution.row_current_a[b], solution.col_current_a[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= ITERATIVE_EXACT


@pytest.mark.parametrize("shape", [(7, 9), (12, 10), (1, 6)])
def test_iterative_matches_dense_mna_and_the_direct_solve(shape, always_iterative):
    rng = np.random.default_rng([*shape, 801])
    g, row_connected, col_connected = random_case(rng, *shape)
    wires = scattered_wires(rng, *shape)
    kwargs = dict(wire_kwargs(*wires), row_connected=row_connected, col_connected=col_connected)
    circuit = CrossbarCircuit(g, **kwargs)
    vr = rng.normal(size=(3, shape[0]))
    col_inj = rng.normal(scale=1e-4, size=shape)
    solution = circuit.solve(vr, col_node_current_a=col_inj)
    assert not factored(circuit)
    direct = CrossbarCircuit(g, method="structured", **kwargs).solve(vr, col_node_current_a=col_inj)
    rr, rc, rs, rd = wires
    for b in range(3):
        row_ref, col_ref = dense_mna(g, rr, rc, rs, row_connected, col_connected, vr[b],
                                     np.zeros(shape[1]), col_inj=col_inj, rd=rd)
        currents = np.concatenate([solution.row_current_a[b], solution.col_current_a[b]])
        assert relative_error(currents, np.concatenate([row_ref, col_ref])) <= ITERATIVE_DENSE
    for name in ("row_node_voltage_v", "col_node_voltage_v"):
        assert relative_error(getattr(solution, name), getattr(direct, name)) <= 1e-15


def test_iterative_on_leakage_held_lines_and_a_large_array():
    """64 x 64, one closed cell, the rest leakage (a calibration reading): the rule takes the
    iterative solver for one vector, which agrees with the direct one."""
    g = np.full((64, 64), 8e-12)
    g[32, 21] = 1e-4
    kwargs = dict(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5,
                  sense_resistance_ohm=10.0)
    circuit = CrossbarCircuit(g, **kwargs)
    v = np.zeros(64)
    v[32] = 1.0
    solution = circuit.solve(v)
    assert not factored(circuit)
    direct = CrossbarCircuit(g, method="structured", **kwargs).solve(v)
    assert relative_error(solution.col_current_a, direct.col_current_a) <= 1e-15
    assert relative_error(solution.row_current_a, direct.row_current_a) <= 1e-15


def test_auto_solves_the_first_vectors_iteratively_then_factors():
    """One vector per 48 columns before factoring (96 columns: two); merged wires, islands and
    explicit methods factor at once."""
    rng = np.random.default_rng(802)
    g = rng.uniform(1e-5, 1e-3, (20, 96))
    kwargs = dict(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.7)
    circuit = CrossbarCircuit(g, **kwargs)
    assert not factored(circuit)
    v = rng.normal(size=(3, 20))
    first = circuit.solve(v[0])
    second = circuit.solve(v[1])
    assert not factored(circuit)
    circuit.solve(v[2])  # the third vector passes the rule
    assert factored(circuit) and circuit.method == "structured"
    again = circuit.solve(v[0])
    assert relative_error(first.col_current_a, again.col_current_a) <= 1e-15
    direct = CrossbarCircuit(g, method="structured", **kwargs).solve(v[:2]).col_current_a
    assert relative_error(np.concatenate([first.col_current_a, second.col_current_a]),
                          direct) <= 1e-15
    batch = CrossbarCircuit(g, **kwargs)
    batch.solve(v)  # three at once: past the rule
    assert factored(batch)
    for kw in ({"method": "structured"}, {"method": "sparse"}, {"col_wire_resistance_ohm": 0.0}):
        assert factored(CrossbarCircuit(g, **{**kwargs, **kw}))


def test_iterative_falls_back_to_the_direct_solver(monkeypatch, always_iterative):
    """A solve that does not converge within its passes is the direct solver's."""
    import crossbar_ctl.core.circuit as module

    monkeypatch.setattr(module, "_OUTER_PASSES", 1)  # one pass never proves convergence
    rng = np.random.default_rng(803)
    g, row_connected, col_connected = random_case(rng, 5, 4)
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.7,
                              row_connected=row_connected, col_connected=col_connected)
    v = rng.normal(size=5)
    solution = circuit.solve(v)
    assert factored(circuit)
    row_ref, col_ref = exact_nodal(g, 0.5, 0.7, 0.0, row_connected, col_connected, v,
                                   np.zeros(4))
    assert relative_error(solution.col_current_a[0], col_ref) <= 5e-16
