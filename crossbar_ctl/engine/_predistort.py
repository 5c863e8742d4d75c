"""Pre-distortion against the twin: local pair refinement on the linearised array response.

With wire and sense resistance every cell's output depends on its own conductance (the IR drop
of its own current) and on every other cell of its row and column (their loads). Re-solving all
pairs from scratch moves every cell's common mode at random, which moves every load, so a
solve-and-reevaluate loop never settles below a few per cent. Instead, starting from a solved
configuration, each round:

1. asks the twin for the transfer ``T`` and its exact derivative ``D = dT_ij / dG_ij`` (one
   forward and one adjoint solve of the nodal equations);
2. for every pair, searches all plus-side subsets against all minus-side subsets (meet in the
   middle over the ``2**n`` subset sums of each side) for the pair whose *linearised* output
   ``T + D (G - G0)`` on each side is closest to the target, penalising the conductance moved
   (``locality_s_per_s * |dG|``) so loads, and with them the linearisation, stay valid.

Each round re-linearises at the new configuration, so the steps shrink as the outputs converge.

A side of more than ``WINDOW_BRANCHES`` branches is refined a window at a time: each round moves
only that many of its branches (a window that rotates from round to round, :func:`window`) and
keeps the others as they are, so a round costs the same at any branch count and the conductance
it can move stays local. A cap on closed branches per pair (``max_closed``) is kept exactly: the
minus-side subsets are searched one closed count at a time, against the plus-side subsets the
cap still allows.
"""

from __future__ import annotations

import numpy as np

from calibration import TwinParameters

__all__ = ["WINDOW_BRANCHES", "refine_pairs", "subset_sums", "twin_response", "window"]

WINDOW_BRANCHES = 12
"""Branches per side one refinement round may move (4096 subsets a side); a cell with more keeps
the rest as they are for that round."""


def window(branches: int, round_: int) -> np.ndarray:
    """The branches a refinement round moves, ``int (min(branches, WINDOW_BRANCHES),)``.

    All of them up to ``WINDOW_BRANCHES``; above, ``WINDOW_BRANCHES`` consecutive ones (cyclically)
    starting where the previous round's window ended, so every branch is moved in turn.
    """
    size = min(branches, WINDOW_BRANCHES)
    return (round_ * size + np.arange(size)) % branches


def twin_response(twin: TwinParameters, conductance_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transfer matrix and its diagonal derivative for cell conductances ``(rows, cols)``.

    Returns
    -------
    transfer_s : ndarray (rows, cols)
        Column current per volt on each row.
    slope : ndarray (rows, cols)
        ``dT[i, j] / dG[i, j]`` (dimensionless), from the adjoint solve.
    """
    from crossbar_ctl.core.circuit import CrossbarCircuit

    g = np.asarray(conductance_s, dtype=np.float64)
    rows, cols = g.shape
    circuit = CrossbarCircuit(g, row_wire_resistance_ohm=twin.row_wire_resistance_ohm,
                              col_wire_resistance_ohm=twin.col_wire_resistance_ohm,
                              sense_resistance_ohm=twin.sense_resistance_ohm,
                              driver_resistance_ohm=twin.driver_resistance_ohm)
    forward = circuit.solve(np.eye(rows))
    adjoint = circuit.solve(np.zeros((cols, rows)), np.eye(cols))
    r, c = np.arange(rows), np.arange(cols)
    across = forward.row_node_voltage_v[r, r, :] - forward.col_node_voltage_v[r, r, :]  # (rows, cols)
    back = (adjoint.row_node_voltage_v[c, :, c] - adjoint.col_node_voltage_v[c, :, c]).T
    return forward.col_current_a, -across * back


def subset_sums(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """All ``2**n`` subset sums of each row, ``(cells, 2**n)``; NaN where a subset uses an unusable value.

    Subset ``a`` closes branch ``k`` when bit ``k`` of ``a`` is set.
    """
    n = values.shape[1]
    bits = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)  # (2^n, n)
    sums = np.where(usable, values, 0.0) @ bits.T
    bad = (~usable).astype(np.float64) @ bits.T > 0
    return np.where(bad, np.nan, sums)


def refine_pairs(target_s: np.ndarray, plus: dict[str, np.ndarray], minus: dict[str, np.ndarray], *,
                 locality: float, room: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (plus subset, minus subset) per pair under the linearised response.

    Parameters
    ----------
    target_s : ndarray (cells,)
    plus, minus : dict
        Per side: ``sums`` ``(cells, 2**n)`` subset conductances (NaN: not allowed), ``g0``
        ``(cells,)`` the present conductance, ``t0`` ``(cells,)`` its present output and
        ``slope`` ``(cells,)`` ``dT/dG`` there.
    locality : float
        Penalty per siemens moved on either side (siemens of output error per siemens moved).
    room : ndarray (cells,) of int, optional
        Most branches the two subsets may close together (subset ``a`` closes ``popcount(a)``);
        default no cap.

    Returns
    -------
    plus_index, minus_index : ndarray (cells,) of int
        The chosen subsets.
    predicted_s : ndarray (cells,)
        Their linearised pair output (NaN for a cell with no allowed pair of subsets).
    """
    cells, size = plus["sums"].shape

    def side(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = s["t0"][:, None] + s["slope"][:, None] * (s["sums"] - s["g0"][:, None])
        move = locality * np.abs(s["sums"] - s["g0"][:, None])
        return out, move

    x, move_x = side(plus)
    y, move_y = side(minus)
    count = np.zeros(size, dtype=np.int64)  # closed branches of each subset, where a cap needs them
    if room is not None:
        count = ((np.arange(size)[:, None] >> np.arange(size.bit_length() - 1)) & 1).sum(axis=1)
    # meet in the middle: for each plus subset, the minus subsets of each closed count nearest to
    # x - target. Both sides sorted per cell by (closed count, value), cells and counts far apart:
    # the minus sums are searched, the plus subsets a cap allows are a prefix, in ascending runs.
    span = float(np.nanmax(np.abs(np.concatenate([x, y], axis=1)))) + float(np.max(np.abs(target_s)))
    step = 4.0 * span + 1.0
    classes = int(count.max()) + 1
    offset = step * classes * np.arange(cells)[:, None]
    key = np.where(np.isnan(y), 2.0 * span, y) + step * count
    order = np.argsort(key, axis=1)
    flat = (np.take_along_axis(key, order, axis=1) + offset).ravel()
    want = x - target_s[:, None]
    query = np.where(np.isnan(want), 0.0, want)
    plus_order = np.argsort(query + step * count, axis=1)
    query, want, move_x = (np.take_along_axis(a, plus_order, axis=1) for a in (query, want, move_x))
    query += offset
    count_x = count[plus_order]
    best_score = np.full(cells, np.inf)
    best_a = np.zeros(cells, dtype=np.int64)
    best_b = np.zeros(cells, dtype=np.int64)
    rows = np.arange(cells)[:, None]
    idx = np.arange(cells)
    for c in range(classes):
        most = size if room is None else int(np.sum(count <= room.max() - c))  # plus subsets allowed
        if most == 0:
            break
        pos = np.searchsorted(flat, (query[:, :most] + step * c).ravel()).reshape(cells, most) - rows * size
        for shift in (-1, 0):
            b = order[rows, np.clip(pos + shift, 0, size - 1)]
            score = np.abs(want[:, :most] - y[rows, b]) + move_x[:, :most] + move_y[rows, b]
            bad = np.isnan(score) | (count[b] != c)
            if room is not None:
                bad |= count_x[:, :most] > room[:, None] - c
            score = np.where(bad, np.inf, score)
            a = np.argmin(score, axis=1)
            s = score[idx, a]
            better = s < best_score
            best_score = np.where(better, s, best_score)
            best_a = np.where(better, plus_order[idx, a], best_a)
            best_b = np.where(better, b[idx, a], best_b)
    predicted = np.where(np.isfinite(best_score), x[idx, best_a] - y[idx, best_b], np.nan)  # NaN: none allowed
    return best_a, best_b, predicted
