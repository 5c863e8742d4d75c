"""The lab: the instruments of one crossbar setup, by role, and its safe state.

:func:`build_lab` makes the drivers from open transports (by the models the configuration names);
:class:`Lab` is a context manager whose exit, on success, error or Ctrl-C, turns every output off
and opens every switch (SMU output off, matrix ``:ROUT:OPEN:CARD 0``, board ``SAFE``), trying every
instrument even when one fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from crossbar_ctl.core.config import LabConfig
from crossbar_ctl.core.errors import ConfigError, CrossbarError, InstrumentError
from drivers._board import SwitchBoard
from drivers._matrix import KeysightE5250A, SwitchMatrix
from drivers._readout import ArrayReadout, BoardReadout, SuperpositionReadout
from drivers._routing import BoardRouting, MatrixRouting, Routing
from drivers._safety import SafetyGuard
from drivers._smu import Keithley2400, Keithley2450, SourceMeter
from drivers._transport import Transport, interrupts_deferred

__all__ = ["Lab", "SOURCE_METER_MODELS", "SWITCH_MATRIX_MODELS", "build_lab"]

_log = logging.getLogger("drivers.lab")

SOURCE_METER_MODELS: dict[str, type[SourceMeter]] = {"keithley2450": Keithley2450, "keithley2400": Keithley2400}
SWITCH_MATRIX_MODELS: dict[str, type[SwitchMatrix]] = {"e5250a": KeysightE5250A, "b2200": KeysightE5250A}


class Lab:
    """The roles of one lab, its limits, and its safe state.

    Attributes
    ----------
    config : LabConfig
    limits : Limits
    guard : SafetyGuard
        The limits and the smallest resistance every driver checks against.
    board : SwitchBoard
    source_meter : SourceMeter or None
    matrix : SwitchMatrix or None
    routing : Routing or None
        Connects the SMU's terminals to array lines (through the board or the matrix).
    readout : ArrayReadout
    geometry : tuple of int
        ``(rows, cols, branches)``.
    sim : object or None
        The simulated lab behind ``sim://`` instruments (tests and benchmarks read the truth from
        it; calibration and the engine never do); None on hardware.
    """

    def __init__(self, config: LabConfig, *, guard: SafetyGuard, board: SwitchBoard,
                 source_meter: SourceMeter | None = None, matrix: SwitchMatrix | None = None,
                 routing: Routing | None = None, readout: ArrayReadout, sim: Any = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.guard = guard
        self.board = board
        self.source_meter = source_meter
        self.matrix = matrix
        self.routing = routing
        self.readout = readout
        self.sim = sim
        self._on_close = on_close  # releases what the lab factory started (a served simulator)
        self.geometry = board.geometry()
        self._closed = False
        self._unsafe_logged = False  # a failed safe state was logged; not again until one succeeds

    def __repr__(self) -> str:
        rows, cols, branches = self.geometry
        return f"Lab({self.config.name!r}, {rows}x{cols}x{branches}, readout={type(self.readout).__name__})"

    def _instruments(self) -> dict[str, Any]:
        found = {"switch_board": self.board, "source_meter": self.source_meter, "switch_matrix": self.matrix}
        return {role: driver for role, driver in found.items() if driver is not None}

    def idn(self) -> dict[str, str]:
        """Each instrument's identification string, by role."""
        return {role: driver.idn for role, driver in self._instruments().items()}

    def temperature_c(self) -> float:
        """The board's temperature sensor, degrees Celsius."""
        return self.board.temperature_c()

    def safe_state(self) -> None:
        """Outputs off and every switch open, trying every instrument even if one fails.

        SMU: ramp to 0 V and ``:OUTP OFF`` (at once if ramping fails); matrix: ``:ROUT:OPEN:CARD 0``;
        board: ``SAFE``.

        Raises
        ------
        InstrumentError
            One or more instruments could not be made safe (all were tried); names them all.
        """
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.source_meter is not None:
            steps.append(("source_meter", self._smu_off))
        if self.matrix is not None:
            steps.append(("switch_matrix", self.matrix.open_all))
        steps.append(("switch_board", self.board.safe))
        with interrupts_deferred():  # a Ctrl-C waits until every instrument was tried
            failures = _run_safe_steps(steps)
            if self.routing is not None:
                self.routing.forget()
            if failures:
                raise InstrumentError("could not make the lab safe; " + "; ".join(failures))
        self._unsafe_logged = False

    def safe_state_quietly(self) -> None:
        """:meth:`safe_state` while another error is in flight: a failure is logged, not raised.

        The failure is logged once until a safe state succeeds, however many clean-ups try again.
        """
        try:
            self.safe_state()
        except CrossbarError as exc:
            self._log_unsafe(exc)

    def _log_unsafe(self, exc: CrossbarError) -> None:
        if not self._unsafe_logged:
            self._unsafe_logged = True
            _log.error("%s", exc)

    def _smu_off(self) -> None:
        _smu_off(self.source_meter)

    def close(self) -> None:
        """Make the lab safe, then close every transport (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.safe_state()
        finally:
            try:
                for driver in self._instruments().values():
                    driver.close()
            finally:
                if self._on_close is not None:
                    self._on_close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is in flight: make safe, report, but let the original error through
            self.close()
        except CrossbarError as cleanup:
            self._log_unsafe(cleanup)


def _smu_off(smu: SourceMeter) -> None:
    try:
        smu.output_off()
    except CrossbarError:
        smu.force_output_off()


def _run_safe_steps(steps: list[tuple[str, Callable[[], None]]]) -> list[str]:
    """Run every safe-state step, even when one fails; the failures, as ``"role: message"``.

    Nothing is logged here: the caller raises or logs the failures, once.
    """
    failures = []
    for role, step in steps:
        try:
            step()
        except CrossbarError as exc:
            failures.append(f"{role}: {exc}")
    return failures


def _model(models: Mapping[str, type], name: str, key: str) -> type:
    try:
        return models[name.lower()]
    except KeyError:
        raise ConfigError(f"{key} = {name!r}: known models are {', '.join(models)}", key=key) from None


def build_lab(config: LabConfig, transports: Mapping[str, Transport], *, min_resistance_ohm: float,
              sim: Any = None, on_close: Callable[[], None] | None = None) -> Lab:
    """Identify every instrument and wire the roles.

    Parameters
    ----------
    config : LabConfig
    transports : mapping
        Open transports by role: ``switch_board`` and, when configured, ``source_meter`` and
        ``switch_matrix``.
    min_resistance_ohm : float
        The smallest resistance behind one closed branch, for the power and current limits.
    sim : optional
        The simulated lab behind ``sim://`` transports.
    on_close : callable, optional
        Called last when the lab closes (the factory stops what it started).

    Returns
    -------
    Lab
        The readout is the board's when it reports ``MVM``, else superposition through the SMU.
    """
    instruments = config.instruments
    for role, transport in transports.items():
        transport.role = transport.role or role  # named in its errors
    guard = SafetyGuard(config.limits, min_resistance_ohm=min_resistance_ohm)
    board: SwitchBoard | None = None
    source_meter: SourceMeter | None = None
    matrix: SwitchMatrix | None = None
    try:
        board = SwitchBoard(transports["switch_board"], guard=guard)
        rows, cols, _ = board.geometry()
        if instruments.source_meter is not None:
            cls = _model(SOURCE_METER_MODELS, instruments.source_meter.model or "keithley2450",
                         "instruments.source_meter.model")
            source_meter = cls(transports["source_meter"], guard=guard)
        if instruments.switch_matrix is not None:
            cls = _model(SWITCH_MATRIX_MODELS, instruments.switch_matrix.model or "e5250a",
                         "instruments.switch_matrix.model")
            matrix = cls(transports["switch_matrix"], outputs=rows + cols)
        routing: Routing | None = None
        if source_meter is not None:
            routing = MatrixRouting(matrix, rows, cols) if instruments.routing == "matrix" else BoardRouting(board)
        if board.has_readout:
            readout: ArrayReadout = BoardReadout(board)
        elif source_meter is not None and routing is not None:
            readout = SuperpositionReadout(source_meter, routing)
        else:
            raise ConfigError("the board has no MVM readout and no source_meter is configured: nothing can "
                              "read the array", key="instruments.source_meter")
        return Lab(config, guard=guard, board=board, source_meter=source_meter, matrix=matrix, routing=routing,
                   readout=readout, sim=sim, on_close=on_close)
    except BaseException:
        _abandon(transports, board, source_meter, matrix)
        raise


def _abandon(transports: Mapping[str, Transport], board: SwitchBoard | None, source_meter: SourceMeter | None,
             matrix: SwitchMatrix | None) -> None:
    """A build failed: make the instruments already identified safe, then close every transport.

    Never raises a :class:`CrossbarError` (the build's own error must come through); a Ctrl-C
    arriving meanwhile is raised once everything was tried.
    """
    steps: list[tuple[str, Callable[[], None]]] = []
    if source_meter is not None:
        steps.append(("source_meter", lambda: _smu_off(source_meter)))
    if matrix is not None:
        steps.append(("switch_matrix", matrix.open_all))
    if board is not None:
        steps.append(("switch_board", board.safe))
    with interrupts_deferred():
        try:
            failures = _run_safe_steps(steps)
            if failures:
                _log.error("could not make the lab safe after a failed build; %s", "; ".join(failures))
        finally:
            for role, transport in transports.items():
                try:
                    transport.close()
                except Exception as exc:  # closing must not hide the build's error
                    _log.debug("%s: error while closing: %s", role, exc)
