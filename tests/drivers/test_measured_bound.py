"""The drivers' calibrated total-current bound (issue 12, readout): the cells' calibrated
conductance, checked by one reading per row, bounds the total current about 2.5x tighter than
closed branches over the smallest resistance, so the row voltages can rise as much; the simulated
board never carries more than the configured limit, and a short since calibration is refused
before anything is driven hard. The simulator's truth (read here only) is the judge; the truth's
cell conductances stand for a calibration's."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.config import Fault
from crossbar_ctl.core.errors import LimitError
from drivers._board import BOUND_MARGIN

SMALL = {"sim": {"rows": 8, "cols": 8, "branches": 4, "seed": 3, "profile": "pcb"}}


def _true_total_a(lab, voltage_v: np.ndarray) -> np.ndarray:
    """The sum of |current| into the rows for row voltages ``(batch, rows)`` as the DACs apply
    them, A (truth: wires, drivers and sense inputs included)."""
    board, array = lab.sim.devices["board"], lab.sim.array
    circuit = array.circuit(np.ones(array.rows, bool), np.ones(array.cols, bool))
    applied = np.stack([board.dac_output_v(v) for v in np.atleast_2d(voltage_v)])
    return np.sum(np.abs(circuit.solve(applied).row_current_a), axis=1)


def test_the_bound_is_the_calibrated_rows_with_their_margin_checked_once_per_load():
    with open_lab(SMALL) as lab:
        board = lab.board
        masks = np.zeros((8, 8), dtype=np.uint64)
        masks[:7] = 0b1111
        board.load_masks(masks)
        closed = board.conductance_bound_s().copy()
        cells = lab.truth.cell_conductance_s()
        bound = board.declare_cell_conductance_s(cells)
        assert board.bound_readings == 8  # the zero vector and the seven rows with closed branches
        assert np.allclose(bound, BOUND_MARGIN * cells.sum(axis=1))
        assert np.all(board.conductance_bound_s() == bound)
        assert np.all(closed[:7] / bound[:7] > 2)  # seed 3: 2.4-3.1x
        board.release_declared()  # other readings scale to closed branches again
        assert np.array_equal(board.conductance_bound_s(), closed)
        board.declare_cell_conductance_s(cells)
        assert board.bound_readings == 8  # once per loaded configuration
        masks[6] = 0b0111
        board.load_masks(masks)  # other masks: closed branches again until declared
        assert np.allclose(board.conductance_bound_s(), masks_bound(board))


def test_signed_inputs_at_the_calibrated_bound_stay_within_the_limit():
    """The demo's board (64x64x8 pcb), about half the branches closed, each input vector scaled
    as ``row_voltages`` scales it (0.9 of the limit): the truth's total current, the column nodes'
    swing under rows of both signs included, stays within the limit; the closed-branch bound used
    less than half of it."""
    with open_lab({"sim": {"seed": 0, "profile": "pcb"}}) as lab:
        board = lab.board
        rng = np.random.default_rng(0)
        board.load_masks(rng.integers(0, 256, size=(64, 64), dtype=np.uint64))
        closed = board.conductance_bound_s().copy()
        bound = board.declare_cell_conductance_s(lab.truth.cell_conductance_s())
        limit = lab.limits.max_total_current_a
        x = np.vstack([rng.uniform(-1, 1, size=(12, 64)), rng.uniform(0, 1, size=(4, 64))])
        used = {}
        for name, b in (("closed", closed), ("calibrated", bound)):
            voltage = x * (0.9 * limit / (np.abs(x) @ b))[:, None]
            lab.readout.mvm(voltage)  # the drivers accept it
            used[name] = float(np.max(_true_total_a(lab, voltage))) / limit
        # measured (seed 0): 0.64 of the limit at the calibrated bound, 0.25 at the closed-branch one
        assert used["calibrated"] < 0.9 and used["calibrated"] > 2 * used["closed"]


def test_a_short_since_calibration_is_refused_and_never_driven_past_the_limit():
    with open_lab({**SMALL, "limits": {"max_total_current_a": 5e-3}}) as lab:
        board = lab.board
        masks = np.zeros((8, 8), dtype=np.uint64)
        masks[0] = 0b1111
        board.load_masks(masks)
        calibrated = lab.truth.cell_conductance_s()  # before the short
        lab.sim.array.inject_fault(Fault(kind="short_resistor", row=0, col=2, branch=1))
        # the calibration trusted alone would drive row 0 to the DACs' 1 V: six times the limit
        trusted_v = min(1.0, 0.9 * lab.limits.max_total_current_a / (BOUND_MARGIN * calibrated[0].sum()))
        drive = np.zeros(8)
        drive[0] = trusted_v
        assert _true_total_a(lab, drive)[0] > 5 * lab.limits.max_total_current_a
        peak = [0.0]
        sim_board = lab.sim.devices["board"]
        read = sim_board._column_currents_a

        def watched(voltage_v):
            peak[0] = max(peak[0], float(_true_total_a(lab, voltage_v)[0]))
            return read(voltage_v)

        sim_board._column_currents_a = watched
        with pytest.raises(LimitError, match="short since calibration"):
            board.declare_cell_conductance_s(calibrated)
        assert 0 < peak[0] < lab.limits.max_total_current_a  # the probes themselves
        assert np.array_equal(board.conductance_bound_s(), masks_bound(board))


def masks_bound(board) -> np.ndarray:
    """Closed branches over the smallest resistance, per row, S."""
    closed = np.array([[int(m).bit_count() for m in row] for row in board.known_masks()]).sum(axis=1)
    return closed / board.guard.min_resistance_ohm
