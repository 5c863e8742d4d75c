"""``crossbar bench calibrate``: throughput, honesty of the uncertainties, weighing-design gain.

Runs on simulated labs, where the truth is known (``lab.sim.array``, read here and in tests only,
never by the procedures). The caller passes the lab factories (in process, over TCP/pty), so this
module imports no simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from calibration._calibrate import calibrate
from calibration._designs import design_covariance, design_matrix
from calibration._estimate import quantization_var
from calibration._record import FLAG_EXCLUDE, CalibrationOptions, CalibrationRecord
from crossbar_ctl.core.config import Fault, LabConfig, SimArrayConfig

__all__ = ["accuracy", "bench_calibrate", "predicted_variance"]

LabFactory = Callable[[LabConfig], Any]
_KINDS = ("open_resistor", "short_resistor", "switch_stuck_open", "switch_stuck_closed")


def seeded_faults(rows: int, cols: int, branches: int, *, per_kind: int, seed: int) -> tuple[Fault, ...]:
    """``per_kind`` faults of every kind at distinct random cells."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(rows * cols, size=per_kind * len(_KINDS), replace=False)
    return tuple(Fault(kind=kind, row=int(c // cols), col=int(c % cols), branch=int(rng.integers(branches)))
                 for kind, c in zip(np.repeat(_KINDS, per_kind), cells))


def accuracy(record: CalibrationRecord, truth_s: np.ndarray, faults: tuple[Fault, ...]) -> dict[str, Any]:
    """z-score statistics of the healthy branches and fault detection against the truth."""
    faulty = np.zeros(truth_s.shape, bool)
    for fault in faults:
        faulty[fault.row, fault.col, fault.branch] = True
    measured = record.flags & FLAG_EXCLUDE == 0
    healthy = measured & ~faulty
    z = ((record.conductance_s - truth_s) / record.sigma_s)[healthy]
    flagged = record.flags != 0
    return {
        "z_sd": float(np.std(z)),
        "z_mean": float(np.mean(z)),
        "z_over_4_pct": float(100 * np.mean(np.abs(z) > 4)),
        "rel_err_rms": float(np.sqrt(np.mean(((record.conductance_s - truth_s) / truth_s)[healthy] ** 2))),
        "faults_flagged": f"{int(flagged[faulty].sum())}/{len(faults)}",
        "healthy_flagged": int((flagged & ~faulty).sum()),
    }


def predicted_variance(design: np.ndarray, conductance_s: np.ndarray, *, noise_rel: float,
                       noise_floor_a: float, voltage_v: float, repeats: int,
                       resolution_a: float = 0.0) -> float:
    """Mean variance of the branch estimates a design gives under the fitted noise model.

    Parameters
    ----------
    design : ndarray (steps, branches)
    conductance_s : ndarray (cells, branches)
        Branch conductances of the cells to average over.
    """
    d = design.astype(float)
    out = []
    for g in conductance_s:
        per_reading = (noise_rel * voltage_v * (d @ g)) ** 2 + noise_floor_a**2
        reading_var = (per_reading / repeats + quantization_var(per_reading, resolution_a)) / voltage_v**2
        out.append(np.mean(np.diag(design_covariance(d, reading_var))))
    return float(np.mean(out))


def _run(factory: LabFactory, config: LabConfig,
         options: CalibrationOptions) -> tuple[CalibrationRecord, np.ndarray, float]:
    with factory(config) as lab:
        start = time.perf_counter()
        record = calibrate(lab, options=options)
        wall = time.perf_counter() - start
        truth = lab.sim.array.branch_conductance_s()
    return record, truth, wall


def bench_calibrate(transports: Mapping[str, LabFactory], *, quick: bool = False,
                    seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Calibrate simulated arrays and report throughput, accuracy and the design gain.

    Every throughput row carries ``x_smu_single``: its branches per second over those of the
    cell-by-cell SMU reads (in process) measured in the same run, the reference of every speed
    figure.

    Parameters
    ----------
    transports : mapping of str to callable
        ``name -> factory(LabConfig)`` giving a lab context manager (``crossbar_ctl._lab.open_lab``
        in process; the CLI adds one over TCP and a pty).
    quick : bool
        A 16x16x8 array instead of 64x64x16.
    """
    rows, cols, branches = (16, 16, 8) if quick else (64, 64, 16)
    faults = seeded_faults(rows, cols, branches, per_kind=2, seed=seed)
    sim = SimArrayConfig(rows=rows, cols=cols, branches=branches, faults=faults, seed=seed)
    config = LabConfig(sim=sim)
    throughput: list[dict[str, Any]] = []
    accuracy_rows: list[dict[str, Any]] = []
    first = next(iter(transports.values()))

    def row(name: str, transport: str, record: CalibrationRecord, wall: float, measured_rows: int,
            note: str) -> dict[str, Any]:
        measured = measured_rows * cols * branches
        return {"method": name, "transport": transport, "branches": measured, "wall_s": wall,
                "branches_per_s": measured / wall, "est_full_s": rows * cols * branches / (measured / wall),
                "readings": record.header.readings, "round_trips": record.header.round_trips, "note": note}

    for transport, factory in transports.items():
        record, truth, wall = _run(factory, config, CalibrationOptions())
        throughput.append(row("column-parallel", transport, record, wall, rows, "whole array, twin fitted"))
        accuracy_rows.append({"method": "column-parallel", "transport": transport,
                              **accuracy(record, truth, faults)})
    subset = tuple(range(min(4, rows)))
    record, _, wall = _run(first, config, CalibrationOptions(design="s-matrix", rows=subset))
    throughput.append(row("weighing (S-matrix)", "in-process", record, wall, len(subset),
                          f"rows {subset[0]}..{subset[-1]} only, extrapolated"))
    one = (0,)
    record, _, wall = _run(first, config, CalibrationOptions(method="smu", rows=one))
    throughput.append(row("single (SMU)", "in-process", record, wall, 1,
                          "row 0 only (its baseline included), extrapolated"))
    smu_per_s = throughput[-1]["branches_per_s"]  # the reference, measured in this same run
    for entry in throughput:
        entry["x_smu_single"] = entry["branches_per_s"] / smu_per_s
    return {"throughput": throughput, "accuracy (healthy branches vs truth)": accuracy_rows,
            "weighing design vs one at a time (same readings)": design_gain(first, seed=seed)}


def design_gain(factory: LabFactory, *, seed: int = 0, rows: int = 16, cols: int = 16,
                branches: int = 8) -> list[dict[str, Any]]:
    """Branch variance of one-at-a-time reads and of an S-matrix design for as many readings.

    Both designs calibrate the same fault-free array (same seed) with the twin fitted, at the
    default read voltage (read noise mostly proportional to the current: the design cannot win)
    and at a low one (the ADC's quantization and noise floor dominate: it should). The measured
    variance is that of (estimate - truth); the predicted one follows from the fitted noise
    model, each run's read voltage and the design (:func:`predicted_variance`).
    """
    config = LabConfig(sim=SimArrayConfig(rows=rows, cols=cols, branches=branches, seed=seed))
    steps = {kind: design_matrix(kind, branches).shape[0] for kind in ("single", "s-matrix")}
    readings = int(np.lcm(steps["single"], steps["s-matrix"]))
    out = []
    for voltage in (0.5, 0.02):
        measured_var, predicted_var, group = {}, {}, []
        for kind in ("single", "s-matrix"):
            options = CalibrationOptions(design=kind, repeats=readings // steps[kind], read_voltage_v=voltage)
            record, truth, _ = _run(factory, config, options)
            ok = record.usable
            measured_var[kind] = float(np.mean((record.conductance_s - truth)[ok] ** 2))
            header = record.header
            predicted_var[kind] = predicted_variance(
                design_matrix(kind, branches), record.conductance_s.reshape(-1, branches),
                noise_rel=header.noise_rel, noise_floor_a=header.noise_floor_a,
                voltage_v=header.read_voltage_v, repeats=options.repeats,
                resolution_a=header.resolution_a)
            group.append({"design": kind, "steps": steps[kind], "repeats": options.repeats,
                          "readings_per_cell": steps[kind] * options.repeats,
                          "read_voltage_v": header.read_voltage_v,
                          "rms_error_s": float(np.sqrt(measured_var[kind])),
                          "median_sigma_s": float(np.median(record.sigma_s[ok]))})
        for entry in group:
            kind = entry["design"]
            entry["gain_measured"] = measured_var["single"] / measured_var[kind]
            entry["gain_theory"] = predicted_var["single"] / predicted_var[kind]
        out.extend(group)
    return out
