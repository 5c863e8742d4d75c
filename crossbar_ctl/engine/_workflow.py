"""The analog MVM engine: the steps users run, over the calibration, the optimizer and the lab.

- :func:`array_model`: what a calibration record says about the array, checked against a lab;
- :func:`program_network`: map, solve and program a network with the hardware in the loop;
- :func:`check_network`: run it on the array and compare with float64;
- :func:`run_demo`: the whole job on the default simulated lab (``crossbar demo``).

Everything that can be refused (bad weights, shapes, tiling, reach, a calibration of another
array or too old) is refused before the first mask is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.engine._check import CheckReport, run_check
from crossbar_ctl.engine._distributed import TileMap
from crossbar_ctl.engine._guard import DEFAULT_SLACK_BITS, guard_plan
from crossbar_ctl.engine._network import Network
from crossbar_ctl.engine._plan import ArrayModel, CalibrationRef, PlanOptions, SwitchPlan, make_plan
from crossbar_ctl.engine._program import ProgramOptions, lab_idn, per_board, program_plan
from crossbar_ctl.engine._residual import plan_options_for
from crossbar_ctl.core.errors import EngineError

if TYPE_CHECKING:
    from calibration import CalibrationRecord, RecheckResult, TcrEstimate
    from drivers import Lab

__all__ = [
    "array_model", "check_drift", "check_fingerprint", "check_lab", "check_network",
    "program_network",
]


def _board_idn(idn: dict[str, str]) -> str:
    for key in ("board", "switch_board"):
        if key in idn:
            return idn[key]
    return ""


def array_model(record: CalibrationRecord) -> ArrayModel:
    """The engine's view of a :class:`calibration.CalibrationRecord`.

    Raises
    ------
    EngineError
        A partial record (a checkpoint), or one where no branch is usable.
    """
    header = record.header
    if not header.complete:
        raise EngineError("the calibration record is partial (a checkpoint); finish it with "
                          "crossbar calibrate --resume before programming")
    usable = np.asarray(record.usable, dtype=bool)
    if not usable.any():
        raise EngineError("the calibration record flags every branch; recalibrate the array")
    fingerprint = header.fingerprint.model_dump_json() if header.fingerprint is not None else ""
    reference = CalibrationRef(checksum=record.checksum(), rows=header.rows, cols=header.cols,
                               branches=header.branches, board_idn=_board_idn(header.idn),
                               created_utc=header.updated_at or header.started_at, fingerprint_json=fingerprint)
    from calibration import FLAG_STUCK_CLOSED

    forced = (np.asarray(record.flags) & FLAG_STUCK_CLOSED) != 0
    return ArrayModel(np.asarray(record.conductance_s, float), np.asarray(record.sigma_s, float),
                      usable, record.twin, reference, forced if forced.any() else None)


def check_lab(reference: CalibrationRef, lab: Lab) -> None:
    """Refuse a calibration (or a plan made from one) that belongs to another array.

    Raises
    ------
    EngineError
        The geometry or the board's identity differ.
    """
    geometry = tuple(lab.geometry)
    if geometry != (reference.rows, reference.cols, reference.branches):
        raise EngineError(
            f"the calibration is of a {reference.rows}x{reference.cols} array with {reference.branches} "
            f"branches but this lab's array is {geometry[0]}x{geometry[1]} with {geometry[2]}; "
            "calibrate this array first"
        )
    board = _board_idn(lab_idn(lab))
    if reference.board_idn and board and board != reference.board_idn:
        raise EngineError(f"the calibration was made on board {reference.board_idn!r} but this lab's board "
                          f"is {board!r}; calibrate this array first")


def check_fingerprint(reference: CalibrationRef, lab: Lab) -> None:
    """Read the calibration's fingerprint branches again; refuse a calibration of another array.

    Raises
    ------
    CalibrationError
        The branches read differ beyond drift and noise (see ``calibration.verify_fingerprint``).
    """
    if reference.fingerprint_json:
        from calibration import Fingerprint, verify_fingerprint

        verify_fingerprint(lab, Fingerprint.model_validate_json(reference.fingerprint_json),
                           what="the calibration")


def check_drift(lab: Lab, record: CalibrationRecord, *, max_rms_z: float = 2.0) -> RecheckResult:
    """Re-measure a sample of branches (the calibration's recheck); refuse a record that no longer holds.

    Raises
    ------
    EngineError
        The rechecked branches moved by more than their uncertainty allows.
    """
    from calibration import recheck

    result = recheck(lab, record, max_rms_z=max_rms_z)
    if not result.valid:
        raise EngineError(
            f"the calibration no longer holds: {result.checked} rechecked branches moved by "
            f"{result.rms_z:.1f} sigma rms (limit {max_rms_z:g}; median drift {result.median_rel_drift:+.2e}); "
            "recalibrate with crossbar calibrate"
        )
    return result


def program_network(lab: Lab | Sequence[Lab], network: Network, record: CalibrationRecord | Sequence[CalibrationRecord],
                    *, plan_options: PlanOptions | None = None,
                    program_options: ProgramOptions | None = None, recheck: bool = True,
                    progress: Callable[[int], None] | None = None, tcr: TcrEstimate | None = None,
                    tile_map: TileMap | None = None) -> SwitchPlan:
    """Map a network onto a calibrated array and program it with the hardware in the loop.

    Parameters
    ----------
    lab : drivers.Lab, or a sequence of them (the boards of a lab, ``open_labs``)
    network : Network
    record : calibration.CalibrationRecord, or one per board, in the boards' order
    plan_options, program_options : optional
        The plan options default to :func:`crossbar_ctl.engine._residual.plan_options_for` the
        program options (the joint cost's weight for a plan programmed with its residual plan).
    recheck : bool
        Re-measure a sample of branches first and refuse a record too old for the array's drift.
    progress : callable, optional
        Called with 1 per tile solved and per tile programmed.
    tcr : calibration.TcrEstimate, optional
        Program with the conductances predicted at the lab's measured temperature
        (``calibration.record_at_temperature``). The drift recheck compares raw readings and
        cannot tell a temperature step from drift, so it is skipped then.
    tile_map : callable, optional
        Solve the tiles on a Dask cluster (:func:`crossbar_ctl.engine._distributed.tile_map`);
        default: in this process.

    Returns
    -------
    SwitchPlan
        With the final masks and the :class:`ProgramRecord`.
    """
    labs = list(lab) if isinstance(lab, (list, tuple)) else [lab]
    records = per_board(record, len(labs), "calibration records")
    if tcr is not None:
        if len(labs) > 1:
            raise EngineError("a TCR estimate is of one array; program a lab of several boards without --tcr")
        from calibration import record_at_temperature

        records = [record_at_temperature(records[0], tcr, labs[0].temperature_c())]
        recheck = False
    models = [array_model(board_record) for board_record in records]
    for board_lab, board_record, model in zip(labs, records, models):
        check_lab(model.reference, board_lab)
        check_fingerprint(model.reference, board_lab)
        if recheck:
            check_drift(board_lab, board_record)
    plan = make_plan(network, models, options=plan_options or plan_options_for(program_options), progress=progress,
                     tile_map=tile_map)
    return program_plan(labs, plan, models, options=program_options, progress=progress)


def check_network(lab: Lab | Sequence[Lab], plan: SwitchPlan, x: np.ndarray, y: np.ndarray | None = None, *,
                  nplc: float | None = None, progress: Callable[[int], None] | None = None,
                  details: dict | None = None, allow_stale: bool = False,
                  slack_bits: float = DEFAULT_SLACK_BITS) -> CheckReport:
    """Run a programmed plan on this lab's array and compare with float64 (see :func:`run_check`).

    The drift guard (:func:`crossbar_ctl.engine._guard.guard_plan`) probes the programmed tiles
    first and refuses a plan whose error has grown past its budget (``slack_bits`` of precision
    lost since programming) unless ``allow_stale``; the report keeps the probe (``drift_probe``).
    A plan on several boards takes their labs in order (``open_labs``); the guard probes every
    board's tiles.
    """
    labs = per_board(lab, plan.board_count, "labs")
    for board, board_lab in enumerate(labs):
        check_lab(plan.board_calibration(board), board_lab)
        check_fingerprint(plan.board_calibration(board), board_lab)
    probe = guard_plan(labs, plan, allow_stale=allow_stale, slack_bits=slack_bits)
    report = run_check(labs, plan, x, y, nplc=nplc, progress=progress, details=details)
    return report.model_copy(update={"drift_probe": probe})
