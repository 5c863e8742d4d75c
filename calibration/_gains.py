"""Column channel gains: each column's readout against the one source-meter.

A board's column channels each have their own transimpedance gain (a 0.1 % resistor sets it), so
every reading of column ``j`` is ``(1 + e_j)`` times the current, and so is every branch the board
calibrates there: a pair's two columns then disagree by ``e_plus - e_minus`` of their common mode,
which no measurement through the same channels can see. The source-meter reads every column through
one and the same channel, so the ratio of the board's reading to the source-meter's, for the same
cells, is the column's gain up to one factor common to all columns.

:func:`measure_column_gains` drives a few rows with one branch per cell closed (the first step of
the design), once through the board's readout (every column at once, :data:`BOARD_REPEATS` times the
readings: they cost one vector for all columns) and once per column through the source-meter and the
routing, each at ``+V`` and ``-V`` (the difference cancels the channels' offsets and the DAC's bow),
and keeps ``gain_j = ratio_j / mean(ratio)``: relative gains of mean 1, so the record stays in the
unit of the board's mean channel. That unit's own error (1e-3 / sqrt(cols) expected on pcb: -1.6e-4
on the demo's board) is a scale every programmed weight carries; the source-meter's ratio would
put it at 2e-5 there, but its datasheet accuracy (0.020 % of reading, 0.015 % of the source, drawn
uniformly: 1.4e-4 rms) is no better than 64 channels' mean in expectation, and was worse on two
16-column boards (5-9e-5 against 1-2e-5), so the mean channel stays the unit. Readings are
divided by them before they are estimated (:mod:`calibration._fit`); raw readings stay raw (the
recheck and the fingerprint compare raw with raw).
"""

from __future__ import annotations

import numpy as np

from calibration._run import Run

__all__ = ["BOARD_REPEATS", "GAIN_ROWS", "measure_column_gains"]

GAIN_ROWS = 2
"""Rows read for the gains (evenly spaced); each gives every column one ratio."""
BOARD_REPEATS = 8
"""The board's readings per sign and row, in units of the source-meter's ``repeats`` per column (the
board reads every column in one vector). On the demo's board, 32 source-meter readings: the gains'
column-to-column error 2.44e-5 rms with 1, 1.81e-5 with 8."""


def measure_column_gains(run: Run, arrays: dict[str, np.ndarray], repeats: int) -> None:
    """Measure each column channel's relative gain into ``arrays`` (``column_gain``, ``column_gain_sigma``).

    Nothing is measured (and nothing stored) without a source-meter, for reads through the
    source-meter alone, with ``repeats`` 0, or when ``arrays`` already holds them (a resumed run).

    Parameters
    ----------
    run : Run
        A column-parallel run whose rows are measured (shorts found are left open).
    arrays : dict
        The run's twin arrays, saved with the record.
    repeats : int
        Readings per sign, per row and per path.
    """
    lab = run.lab
    if (repeats == 0 or run.method != "readout" or lab.source_meter is None
            or "column_gain" in arrays):
        return
    smu = lab.source_meter
    smu.set_nplc(run.options.nplc)
    smu.set_compliance_current_a(lab.limits.max_current_a)
    smu.set_current_range_a(None)
    voltage = run.voltage_v
    resolution = run.state["resolution_a"].copy()  # the board's ADC step, not the meter's
    ratios = []
    for row in np.linspace(0, run.rows - 1, min(GAIN_ROWS, run.rows)).round().astype(int):
        masks = run.step_masks(int(row), 0)
        run.load_row(int(row), masks)
        board = (run.drive_row(int(row), BOARD_REPEATS * repeats, voltage).mean(axis=0)
                 - run.drive_row(int(row), BOARD_REPEATS * repeats, -voltage).mean(axis=0)) / 2
        lab.routing.ground_all()
        smu.set_current_range_a(float(np.nanmax(np.abs(board))) * 1.2)  # one range: one gain
        meter = np.full(run.cols, np.nan)
        for col in np.flatnonzero(masks):
            meter[col] = (run.smu_read(int(row), int(col), repeats, voltage).mean()
                          - run.smu_read(int(row), int(col), repeats, -voltage).mean()) / 2
        smu.output_off()
        smu.set_current_range_a(None)
        lab.routing.ground_all()
        run.load_row(int(row), np.zeros(run.cols, dtype=np.uint64))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(masks > 0, board / meter, np.nan))
    run.state["resolution_a"][:] = resolution
    ratio = np.array(ratios)
    seen = np.isfinite(ratio).any(axis=0)
    if not seen.any():
        return
    mean_ratio = np.nanmean(ratio[:, seen], axis=0)
    gain = np.ones(run.cols)
    gain[seen] = mean_ratio / np.mean(mean_ratio)
    spread = np.nanstd(ratio[:, seen], axis=0, ddof=min(1, ratio.shape[0] - 1)) / np.mean(mean_ratio)
    sigma = np.zeros(run.cols)
    sigma[seen] = spread / np.sqrt(np.sum(np.isfinite(ratio[:, seen]), axis=0))
    arrays["column_gain"] = gain
    arrays["column_gain_sigma"] = sigma
