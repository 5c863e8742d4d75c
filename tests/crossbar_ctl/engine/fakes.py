"""Small fakes for the engine tests (no tests here): an exact brute-force subset-sum solver, a synthetic
array model and a fake lab whose truth differs from the model."""

from types import SimpleNamespace

import numpy as np

from crossbar_ctl.engine._mapping import ArrayModel, CalibrationRef
from calibration import TwinParameters
from crossbar_ctl.engine._twin import twin_transfer


def exact_solver(values_s, target_s, *, sigma_s=None, usable=None, max_closed=None, tolerance_s=0.0):
    """Best subset of each row of ``values_s`` by enumeration (oracle for small pools)."""
    cells, m = values_s.shape
    subsets = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(bool)
    mask = np.zeros((cells, m), bool)
    for c in range(cells):
        allowed = subsets if usable is None else subsets[~np.any(subsets & ~usable[c], axis=1)]
        if max_closed is not None:
            allowed = allowed[allowed.sum(1) <= max_closed]
        sums = allowed @ values_s[c]
        mask[c] = allowed[np.argmin(np.abs(sums - target_s[c]))]
    return SimpleNamespace(mask=mask, achieved_s=np.sum(mask * values_s, 1))


def array_model(rows=6, cols=8, branches=4, *, seed=0, wire_ohm=0.0, sense_ohm=0.0, faults=0.0):
    rng = np.random.default_rng(seed)
    g = 1.0 / (1e4 * rng.lognormal(0.0, 0.2, size=(rows, cols, branches)) + 20.0)
    usable = rng.random(g.shape) >= faults
    twin = TwinParameters(row_wire_resistance_ohm=wire_ohm, col_wire_resistance_ohm=wire_ohm,
                     sense_resistance_ohm=sense_ohm)
    return ArrayModel(g, g * 1e-4, usable, twin,
                      CalibrationRef(checksum="fake", rows=rows, cols=cols, branches=branches))


class FakeBoard:
    settle_s = 0.0

    def __init__(self, rows, cols):
        self.masks = np.zeros((rows, cols), np.uint64)
        self.loads = 0
        self.row_writes = self.switch_writes = self.settle_waits = 0  # as drivers.SwitchBoard counts

    def load_masks(self, masks):
        masks = np.array(masks, np.uint64)
        changed = np.any(masks != self.masks, axis=1)
        self.row_writes += int(changed.sum())
        self.switch_writes += int(np.bitwise_count(masks ^ self.masks).sum())
        self.masks = masks
        self.loads += 1

    def known_masks(self):
        return self.masks.copy()

    def read_masks(self):
        return self.masks.copy()

    def capabilities(self):
        return {"MVM"}

    def dac_max_v(self):
        return 1.0

    def adc_range_a(self):
        return 1e-3


class FakeReadout:
    """V @ T of a 'true' array (its own conductances and wires) plus relative read noise."""

    def __init__(self, board, true_g, twin, *, noise=1e-4, seed=0):
        self.board, self.true_g, self.twin = board, true_g, twin
        self.rows, self.cols = true_g.shape[:2]
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def cell_conductance_s(self):
        from crossbar_ctl.engine._mapping import selection_from_masks

        closed = selection_from_masks(self.board.masks, self.true_g.shape[2])
        return np.sum(closed * self.true_g, axis=-1)

    def transfer(self):
        return twin_transfer(self.twin, self.cell_conductance_s())

    def mvm(self, voltage_v):
        voltage_v = np.atleast_2d(voltage_v)
        self.calls += len(voltage_v)
        current = voltage_v @ self.transfer()
        return current * (1 + self.noise * self.rng.standard_normal(current.shape))


class FakeTruth:
    """The fake's noiseless truth, as ``crossbar_ctl._lab.SimTruth`` gives it on a simulated lab."""

    def __init__(self, readout):
        self.readout = readout

    def transfer_s(self):
        return self.readout.transfer()

    def cell_conductance_s(self):
        return self.readout.cell_conductance_s()


class FakeLab:
    def __init__(self, model, *, true_error=1e-3, true_twin=None, noise=1e-4, seed=0):
        from crossbar_ctl.core.config import Limits

        rng = np.random.default_rng(seed + 1)
        rows, cols, _ = model.geometry
        true_g = model.conductance_s * (1 + true_error * rng.standard_normal(model.geometry))
        self.board = FakeBoard(rows, cols)
        self.readout = FakeReadout(self.board, true_g, true_twin or model.twin, noise=noise, seed=seed)
        self.limits = Limits()
        self.sim = None

    def idn(self):
        return {"board": "FAKE,SB-1,0,1"}
