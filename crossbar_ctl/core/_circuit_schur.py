"""The terminal transfer matrix of a crossbar by nested dissection, in sign-preserving arithmetic.

The nodal graph (row nodes, column nodes, the row and column terminals; cells, wire segments,
source and sense elements as conductances) is reduced onto its terminals exactly: every other
node is eliminated (Kron reduction), which leaves the terminals' own Laplacian ``W``: the current
into terminal ``t`` is ``sum_u W[t, u] (V_t - V_u)``.

Order. Nested dissection of the two-layer grid by hand: a rectangle of cells splits across its
longer side. Cut between columns at column ``m``: the row nodes ``(., m)`` are the separator (row
wires cross the cut), and column line ``m``, left alone once they are gone, is a chain eliminated
before it; a cut between rows is the same with the layers swapped. Small rectangles are leaves.
Each step eliminates its nodes from a dense front (its nodes, then the not yet eliminated nodes
they reach: separators above it and terminals), whose update passes to its parent (multifrontal).
The plan depends only on the shape; it is built once per shape (:func:`_plan`).

Arithmetic. Each front holds the weights ``w >= 0`` between its nodes, never a diagonal: a pivot
is the sum of its node's remaining weights (Grassmann, Taksar and Heyman's rule), and eliminating
it adds ``w_pi w_pj / d_p >= 0`` to every pair. Only sums and products of positive numbers occur:
no cancellation, so every weight is exact to ~depth * eps relative however stiff the wires are
next to the cells (a factorisation of the nodal matrix loses ~eps * wire / cell conductance and
needs iterative refinement). The cost is that of a sparse Cholesky factorisation in this
order, ~(rows * cols)^1.5: 44 M multiply-adds at 128 x 128 (~14 ms CPU), 346 M at 256 x 256
(~0.1 s), 2.7 G at 512 x 512 (peak 411 MiB). The kernels are compiled by numba (no fastmath);
fronts above 64 nodes eliminate their pivots in panels of 32 and update the rest by matrix
products (BLAS), whose sums of positive terms stay exact in any order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["terminal_laplacian_s", "transfer_plan_bytes"]

# A rectangle of at most this many cells is one leaf front (all its nodes eliminated at once).
_LEAF_CELLS = 16
# Pivots eliminated one by one in panels of this many, the rest updated by one product per panel.
_PANEL = 32
# Fronts of at most this many nodes are eliminated by scalar updates alone.
_SMALL_FRONT = 64


@dataclass(frozen=True)
class _Plan:
    """The elimination of one shape: fronts in post-order, flattened for the kernel.

    Edges are numbered cells, row links, column links, sources, ends (:func:`_edge_weights`).
    """

    front_size: np.ndarray  # (fronts,) nodes in each front
    pivots: np.ndarray  # (fronts,) nodes eliminated in it (its first ones)
    edge_ptr: np.ndarray  # (fronts + 1,) its original edges: edge_id, edge_a, edge_b (positions)
    edge_id: np.ndarray
    edge_a: np.ndarray
    edge_b: np.ndarray
    child_ptr: np.ndarray  # (fronts + 1,) its children
    children: np.ndarray
    map_ptr: np.ndarray  # (fronts + 1,) positions of each front's update nodes in its parent
    maps: np.ndarray
    update_ptr: np.ndarray  # (fronts + 1,) offsets of each front's update in one buffer
    terminals: int  # rows + cols: the root's update is theirs, row terminals first

    @property
    def nbytes(self) -> int:
        """Peak bytes of the elimination: the update buffer and the largest front."""
        return 8 * (int(self.update_ptr[-1]) + int(self.front_size.max()) ** 2)


def transfer_plan_bytes(rows: int, cols: int) -> int:
    """Peak memory of :func:`terminal_laplacian_s` for a ``rows x cols`` array, bytes."""
    return _plan(rows, cols).nbytes


@functools.lru_cache(maxsize=32)  # the twin fit alone solves about a dozen shapes in turn
def _plan(rows: int, cols: int) -> _Plan:
    """The nested-dissection elimination of a ``rows x cols`` crossbar (see the module)."""
    n = rows * cols
    grid = np.arange(n).reshape(rows, cols)
    terminal_row, terminal_col = 2 * n + np.arange(rows), 2 * n + rows + np.arange(cols)
    edge_a = np.concatenate([grid.ravel(), grid[:, :-1].ravel(), n + grid[:-1].ravel(),
                             terminal_row, n + grid[-1]])
    edge_b = np.concatenate([n + grid.ravel(), grid[:, 1:].ravel(), n + grid[1:].ravel(),
                             grid[:, 0], terminal_col])
    nodes = 2 * n + rows + cols
    block, kids = _dissect(rows, cols, _LEAF_CELLS)
    count = block.shape[0]
    pivots = ((block[:, 1] - block[:, 0]) * (block[:, 3] - block[:, 2])
              * np.where(block[:, 4] == 3, 2, 1))
    elim_ptr = _offsets(pivots)
    elim_nodes = _block_nodes(block, elim_ptr, cols, n)
    step = np.full(nodes, count)  # the front that eliminates each node (terminals: never)
    step[elim_nodes] = np.repeat(np.arange(count), pivots)
    # Adjacency (CSR) and each edge's front: the first of its ends to be eliminated.
    ends = np.concatenate([edge_a, edge_b])
    order = np.argsort(ends, kind="stable")
    neighbour = np.concatenate([edge_b, edge_a])[order]
    start = np.searchsorted(ends[order], np.arange(nodes + 1))
    edge_step = np.minimum(step[edge_a], step[edge_b])
    by_step = np.argsort(edge_step, kind="stable")
    edge_start = np.searchsorted(edge_step[by_step], np.arange(count + 1))
    child_ptr = _offsets((kids >= 0).sum(axis=1))
    children = kids[kids >= 0]
    sizes, update_ptr, updates, maps, edge_pos_a, edge_pos_b = _symbolic(
        elim_ptr, elim_nodes, child_ptr, children, start.astype(np.int64),
        neighbour.astype(np.int64), step.astype(np.int64), by_step.astype(np.int64),
        edge_start.astype(np.int64), edge_a.astype(np.int64),
        edge_b.astype(np.int64))
    remaining = np.diff(update_ptr)
    root = updates[update_ptr[-2]:]
    if not np.array_equal(root, np.concatenate([terminal_row, terminal_col])):
        raise AssertionError("nested dissection left other nodes than the terminals")
    return _Plan(
        front_size=sizes, pivots=pivots,
        edge_ptr=edge_start.astype(np.int64), edge_id=by_step.astype(np.int64),
        edge_a=edge_pos_a, edge_b=edge_pos_b, child_ptr=child_ptr, children=children,
        map_ptr=update_ptr, maps=maps, update_ptr=_offsets(remaining**2), terminals=rows + cols,
    )


def _offsets(lengths) -> np.ndarray:
    """Offsets of consecutive pieces of these lengths: ``[0, l0, l0 + l1, ...]``."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


@njit(cache=True)
def _dissect(rows, cols, leaf):  # pragma: no cover - compiled
    """The fronts in post-order: ``(count, 5)`` blocks ``r0, r1, c0, c1, layers`` of the nodes
    each eliminates (layers: 1 row nodes, 2 column nodes, 3 both) and ``(count, 3)`` children
    (-1: none). A rectangle of at most ``leaf`` cells is a leaf; a larger one is cut across its
    longer side at m: its two halves, the line at m (a chain), then the separator."""
    cap = 2 * rows * cols + 8
    block = np.empty((cap, 5), dtype=np.int64)
    kids = np.full((cap, 3), -1, dtype=np.int64)
    # Frames: r0, r1, c0, c1, state, m, across columns, first half, second half.
    stack = np.empty((4 * (rows + cols) + 8, 9), dtype=np.int64)
    stack[0, :5] = (0, rows, 0, cols, 0)
    depth, count, done = 1, 0, -1
    while depth > 0:
        frame = stack[depth - 1]
        r0, r1, c0, c1, state = frame[0], frame[1], frame[2], frame[3], frame[4]
        if state == 0:
            if (r1 - r0) * (c1 - c0) <= leaf:
                block[count] = (r0, r1, c0, c1, 3)
                done = count
                count += 1
                depth -= 1
                continue
            across = c1 - c0 >= r1 - r0
            m = (c0 + c1) // 2 if across else (r0 + r1) // 2
            frame[4], frame[5], frame[6] = 1, m, across
            stack[depth, :5] = (r0, r1, c0, m, 0) if across else (r0, m, c0, c1, 0)
            depth += 1
        elif state == 1:
            m, across = frame[5], frame[6]
            frame[7] = done
            frame[4] = 2
            if m + 1 < (c1 if across else r1):
                stack[depth, :5] = (r0, r1, m + 1, c1, 0) if across else (m + 1, r1, c0, c1, 0)
                depth += 1
            else:
                done = -1
        else:
            m, across = frame[5], frame[6]
            if across:  # column line m, then the row nodes at m
                block[count] = (r0, r1, m, m + 1, 2)
                block[count + 1] = (r0, r1, m, m + 1, 1)
            else:  # row line m, then the column nodes at m
                block[count] = (m, m + 1, c0, c1, 1)
                block[count + 1] = (m, m + 1, c0, c1, 2)
            kids[count + 1] = (frame[7], done, count)
            done = count + 1
            count += 2
            depth -= 1
    return block[:count].copy(), kids[:count].copy()


@njit(cache=True)
def _block_nodes(block, elim_ptr, cols, n):  # pragma: no cover - compiled
    """The nodes each front eliminates: its block's row nodes (layer bit 1), then its column
    nodes (bit 2), row-major."""
    out = np.empty(elim_ptr[-1], dtype=np.int64)
    for t in range(block.shape[0]):
        r0, r1, c0, c1, layers = block[t]
        q = elim_ptr[t]
        for layer in range(2):
            if layers & (1 << layer):
                for i in range(r0, r1):
                    for j in range(c0, c1):
                        out[q] = layer * n + i * cols + j
                        q += 1
    return out


@njit(cache=True)
def _symbolic(elim_ptr, elim_nodes, child_ptr, children, start, neighbour, step, by_step,
              edge_start, edge_a, edge_b):  # pragma: no cover - compiled
    """Each front's remaining nodes (sorted), its size, where its children's remaining nodes and
    its own edges' ends sit in it."""
    count = elim_ptr.size - 1
    nodes = step.size
    mark = np.full(nodes, -1, dtype=np.int64)
    position = np.zeros(nodes, dtype=np.int64)
    sizes = np.zeros(count, dtype=np.int64)
    update_ptr = np.zeros(count + 1, dtype=np.int64)
    updates = np.empty(4 * nodes + 64, dtype=np.int64)
    maps = np.zeros_like(updates)  # the root's stay 0 (no parent)
    edge_pos_a = np.empty(edge_a.size, dtype=np.int64)
    edge_pos_b = np.empty(edge_a.size, dtype=np.int64)
    for t in range(count):
        used = update_ptr[t]
        found = 0
        for q in range(elim_ptr[t], elim_ptr[t + 1]):
            mark[elim_nodes[q]] = t
        # Candidates: the eliminated nodes' neighbours, then the children's remaining nodes.
        reach = [neighbour[start[elim_nodes[q]]: start[elim_nodes[q] + 1]]
                 for q in range(elim_ptr[t], elim_ptr[t + 1])]
        for ci in range(child_ptr[t], child_ptr[t + 1]):
            c = children[ci]
            reach.append(updates[update_ptr[c]: update_ptr[c + 1]])
        for candidates in reach:
            for u in candidates:
                if step[u] > t and mark[u] != t:
                    if used + found >= updates.size:
                        updates, maps = _grow(updates, used + found), _grow(maps, used + found)
                    mark[u] = t
                    updates[used + found] = u
                    found += 1
        updates[used: used + found].sort()
        k = elim_ptr[t + 1] - elim_ptr[t]
        for q in range(k):
            position[elim_nodes[elim_ptr[t] + q]] = q
        for q in range(found):
            position[updates[used + q]] = k + q
        for ci in range(child_ptr[t], child_ptr[t + 1]):
            c = children[ci]
            for q in range(update_ptr[c], update_ptr[c + 1]):
                maps[q] = position[updates[q]]
        for e in range(edge_start[t], edge_start[t + 1]):
            edge_pos_a[e] = position[edge_a[by_step[e]]]
            edge_pos_b[e] = position[edge_b[by_step[e]]]
        sizes[t] = k + found
        update_ptr[t + 1] = used + found
    return sizes, update_ptr, updates[: update_ptr[-1]].copy(), maps[: update_ptr[-1]].copy(), \
        edge_pos_a, edge_pos_b


@njit(cache=True)
def _grow(array, used):  # pragma: no cover - compiled
    bigger = np.zeros(2 * array.size, dtype=array.dtype)
    bigger[:used] = array[:used]
    return bigger
def _edge_weights(circuit) -> np.ndarray:
    """Conductance of every edge of :func:`_plan`'s numbering, S (0 at floating terminals)."""
    rows, cols = circuit.rows, circuit.cols

    def siemens(ohm, shape) -> np.ndarray:
        return np.broadcast_to(1.0 / np.asarray(ohm, dtype=np.float64), shape).ravel()

    source = siemens(circuit._source_ohm, (rows,)) * circuit.row_connected
    end = siemens(circuit._end_ohm, (cols,)) * circuit.col_connected
    return np.concatenate([circuit.conductance_s.ravel(),
                           siemens(circuit._row_link_ohm, (rows, cols - 1)),
                           siemens(circuit._col_link_ohm, (rows - 1, cols)), source, end])


def terminal_laplacian_s(circuit) -> np.ndarray:
    """The weights between the terminals of ``circuit`` after every node is eliminated, S.

    Parameters
    ----------
    circuit : CrossbarCircuit
        Every wire segment > 0 (no merged element) and no floating island.

    Returns
    -------
    ndarray, float64 (rows + cols, rows + cols)
        Symmetric, >= 0, zero diagonal; rows first, then columns. The current into terminal
        ``t`` is ``sum_u W[t, u] (V_t - V_u)``.

    Raises
    ------
    numpy.linalg.LinAlgError
        A node has no remaining path (a floating island).
    """
    plan = _plan(circuit.rows, circuit.cols)
    weights = _edge_weights(circuit)
    buffer = np.empty(int(plan.update_ptr[-1]))
    failed = _eliminate(weights, plan.front_size, plan.pivots, plan.edge_ptr, plan.edge_id,
                        plan.edge_a, plan.edge_b, plan.child_ptr, plan.children, plan.map_ptr,
                        plan.maps, plan.update_ptr, buffer)
    if failed >= 0:
        raise np.linalg.LinAlgError(f"front {failed}: a node without a path (floating island)")
    m = plan.terminals
    upper = buffer[plan.update_ptr[-2]:].reshape(m, m)
    return np.triu(upper, 1) + np.triu(upper, 1).T


@njit(cache=True)
def _eliminate(weights, front_size, pivots, edge_ptr, edge_id, edge_a, edge_b, child_ptr,
               children, map_ptr, maps, update_ptr, buffer):  # pragma: no cover - compiled
    """Every front in post-order; the updates (upper triangles) into ``buffer``. Returns the
    failing front, or -1."""
    scratch = np.empty(front_size.max())
    for t in range(front_size.size):
        f, k = front_size[t], pivots[t]
        w = np.zeros((f, f))
        for e in range(edge_ptr[t], edge_ptr[t + 1]):
            a, b = edge_a[e], edge_b[e]
            if a > b:
                a, b = b, a
            w[a, b] += weights[edge_id[e]]
        for ci in range(child_ptr[t], child_ptr[t + 1]):
            c = children[ci]
            place = maps[map_ptr[c]: map_ptr[c + 1]]
            r = place.size
            base = update_ptr[c]
            for i in range(r):
                pi = place[i]
                for j in range(i + 1, r):
                    pj = place[j]
                    if pi < pj:
                        w[pi, pj] += buffer[base + i * r + j]
                    else:
                        w[pj, pi] += buffer[base + i * r + j]
        pivot = np.empty(k)
        small = f <= _SMALL_FRONT  # one panel, every row by scalar updates (no products)
        width = max(k, 1) if small else _PANEL
        for p0 in range(0, k, width):
            p1 = min(p0 + width, k)
            for p in range(p0, p1):  # the panel's own rows (every row if small), every column
                row = w[p]
                d = 0.0
                for j in range(p + 1, f):
                    d += row[j]
                if not d > 0.0:
                    return t
                pivot[p] = d
                scratch[: f - p] = row[p:f]  # apart from w: the update below vectorises
                for i in range(p + 1, f if small else p1):
                    a = scratch[i - p]
                    if a != 0.0:
                        _add_scaled(w[i, i + 1: f], a / d, scratch[i + 1 - p: f - p])
            if p1 < k and not small:  # the panel into the later pivots' rows: one product
                panel = np.ascontiguousarray(w[p0:p1, p1:])
                scaled = np.ascontiguousarray((w[p0:p1, p1:k] / pivot[p0:p1].reshape(-1, 1)).T)
                w[p1:k, p1:] += np.dot(scaled, panel)
        r = f - k
        if r > 1 and not small:  # every pivot into the remaining pairs,
            # w_ij += sum_p w_pi w_pj / d_p, by blocks of rows, the upper ones only (BLAS)
            rest = np.ascontiguousarray(w[:k, k:])
            scaled = np.ascontiguousarray((rest / pivot.reshape(-1, 1)).T)
            for i0 in range(0, r, _PANEL):
                i1 = min(i0 + _PANEL, r)
                w[k + i0: k + i1, k + i0:] += np.dot(scaled[i0:i1],
                                                     np.ascontiguousarray(rest[:, i0:]))
        base = update_ptr[t]
        for i in range(r):  # the upper triangle (the rest is never read)
            for j in range(i + 1, r):
                buffer[base + i * r + j] = w[k + i, k + j]
    return -1


@njit(inline="always")
def _add_scaled(y, a, x):  # pragma: no cover - compiled
    """``y += a * x`` in place (one loop over two arrays: the compiler vectorises it)."""
    for j in range(y.size):
        y[j] += a * x[j]
