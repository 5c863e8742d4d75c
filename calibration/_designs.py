"""Weighing designs: which branches of a cell are closed together in each step.

A design is a 0/1 matrix ``D (steps, branches)``: step ``s`` closes the branches ``k`` with
``D[s, k] = 1``; the cell then reads ``sum_k D[s, k] g[k]`` (plus its all-open baseline), and
every branch is estimated by least squares. One-at-a-time is the identity. An S-matrix (Harwit &
Sloane, *Hadamard Transform Optics*, 1979) closes about half the branches per step; under additive
noise it cuts each branch's variance by about ``n / 4`` for as many readings, under noise
proportional to the current it gains nothing (each reading is larger by as much).
"""

from __future__ import annotations

import numpy as np

__all__ = ["design_covariance", "design_matrix", "s_matrix", "theoretical_gain"]


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def s_matrix(order: int) -> np.ndarray:
    """The S-matrix of ``order`` (``2**p - 1``, or a prime ``= 3 mod 4``), ``uint8 (order, order)``.

    Every row closes ``(order + 1) / 2`` branches and ``S.T @ S = (order + 1) / 4 * (I + J)``.
    """
    if order >= 3 and (order + 1) & order == 0:  # Sylvester: from the Hadamard matrix of order+1
        h = np.array([[1]])
        while h.shape[0] < order + 1:
            h = np.block([[h, h], [h, -h]])
        return (h[1:, 1:] == -1).astype(np.uint8)
    if _is_prime(order) and order % 4 == 3:  # Paley: cyclic, from the quadratic residues
        squares = {k * k % order for k in range(1, order)}
        first = np.array([1] + [int(k in squares) for k in range(1, order)], dtype=np.uint8)
        return np.array([np.roll(first, i) for i in range(order)])
    raise ValueError(f"no S-matrix of order {order}: use 2**p - 1 or a prime equal to 3 mod 4")


def design_matrix(kind: str, branches: int) -> np.ndarray:
    """The design for ``branches`` branches per cell, ``uint8 (steps, branches)``.

    Parameters
    ----------
    kind : {"single", "s-matrix"}
        ``single``: the identity; ``s-matrix``: the smallest S-matrix with at least ``branches``
        columns, truncated to ``branches`` columns (any columns of a nonsingular matrix are
        independent, so every branch stays estimable).
    """
    if kind == "single":
        return np.eye(branches, dtype=np.uint8)
    if kind != "s-matrix":
        raise ValueError(f"design must be 'single' or 's-matrix', not {kind!r}")
    if branches < 3:
        return np.eye(branches, dtype=np.uint8)
    order = branches
    while True:
        try:
            return s_matrix(order)[:, :branches].copy()
        except ValueError:
            order += 1


def design_covariance(design: np.ndarray, reading_var: np.ndarray | float) -> np.ndarray:
    """Covariance of the least-squares branch estimates, ``(branches, branches)``.

    Parameters
    ----------
    design : ndarray (steps, branches)
    reading_var : float or ndarray (steps,)
        Variance of each step's reading (same units squared as the branch values).
    """
    d = np.asarray(design, dtype=np.float64)
    weights = np.broadcast_to(1.0 / np.asarray(reading_var, dtype=np.float64), (d.shape[0],))
    return np.linalg.inv(d.T @ (weights[:, None] * d))


def theoretical_gain(design: np.ndarray, conductance_s: np.ndarray, *, noise_rel: float,
                     noise_floor_s: float) -> float:
    """Mean variance of one-at-a-time reads over that of ``design``, for as many readings.

    Parameters
    ----------
    design : ndarray (steps, branches)
    conductance_s : ndarray (branches,)
        Typical branch conductances.
    noise_rel, noise_floor_s : float
        Read noise model ``var = (noise_rel * G)**2 + noise_floor_s**2`` of one reading of a
        cell conductance ``G``.

    Returns
    -------
    float
        Above 1 when the design is better. One-at-a-time spends ``steps / branches`` readings on
        each branch.
    """
    d = np.asarray(design, dtype=np.float64)
    g = np.asarray(conductance_s, dtype=np.float64)
    steps, branches = d.shape

    def var(cell_s: np.ndarray) -> np.ndarray:
        return (noise_rel * cell_s) ** 2 + noise_floor_s**2

    single = var(g) * branches / steps
    designed = np.diag(design_covariance(d, var(d @ g)))
    return float(np.mean(single) / np.mean(designed))
