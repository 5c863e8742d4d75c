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
keeps the others as they are, so a round's cost is bounded at any branch count. The measured
refinement (few rounds, each one read on the array) moves more, every branch while the tile's
subset tables fit ``WINDOW_SUMS``: a window leaves it short of the full search (16x16 pcb at 16
branches, seed 1: a 12-branch window left the closed loop 7.6e-8 S rms, realized 12.83 bits
median and 9.70 at the 1st percentile, where every branch left 3.5e-8, 13.55 and 11.45). A cap on closed branches per pair (``max_closed``) is kept exactly: the
minus-side subsets are searched one closed count at a time, against the plus-side subsets the
cap still allows.
"""

from __future__ import annotations

import numpy as np

from calibration import TwinParameters

__all__ = ["WINDOW_BRANCHES", "WINDOW_SUMS", "refine_pairs", "subset_sums", "twin_response", "window"]

WINDOW_BRANCHES = 12
"""Branches per side a refinement round may always move (4096 subsets a side)."""

WINDOW_SUMS = 2**23
"""Subset sums per side a round may tabulate over the tile's pairs (64 MB of float64 a side): a
window grows past ``WINDOW_BRANCHES`` while ``pairs * 2**size`` fits (a 16x16 array's 120 pairs:
all 16 branches; the demo's 64x64 tile at 16 branches: 12)."""


def window(branches: int, round_: int, pairs: int = 1, sums: int = WINDOW_SUMS) -> np.ndarray:
    """The branches a refinement round moves, ``int (size,)``.

    Every branch where ``pairs * 2**branches <= sums`` (or ``branches <= WINDOW_BRANCHES``);
    above, ``size`` consecutive ones (cyclically, the most that fit, at least ``WINDOW_BRANCHES``)
    starting where the previous round's window ended, so every branch is moved in turn.
    """
    fits = int(np.log2(sums / max(pairs, 1))) if sums > 0 else 0
    size = min(branches, max(WINDOW_BRANCHES, fits))
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
    from crossbar_ctl.optimizer._pairs import subset_sums as kernel

    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty((values.shape[0], 2 ** values.shape[1]))
    kernel(values, np.ascontiguousarray(usable, dtype=np.bool_), out)
    return out


def refine_pairs(target_s: np.ndarray, plus: dict[str, np.ndarray], minus: dict[str, np.ndarray], *,
                 locality: float, room: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (plus subset, minus subset) per pair under the linearised response.

    A pair's output on each side is ``t0 + slope (sums - g0)``; for every plus subset, the minus
    subsets of each closed count nearest to its output minus the target are scored by the output
    error plus ``locality`` times the conductance moved on both sides (numba kernels,
    :mod:`crossbar_ctl.optimizer._pairs`).

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
    from crossbar_ctl.optimizer._pairs import nearest_pairs

    keys = ("sums", "g0", "t0", "slope")
    return nearest_pairs(np.asarray(target_s, dtype=np.float64), tuple(plus[k] for k in keys),
                         tuple(minus[k] for k in keys), locality, room)
