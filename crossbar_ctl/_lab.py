"""The lab factory: the one place that starts a simulated lab.

``with open_lab() as lab:`` gives the default simulated lab on a fresh machine; ``open_lab("lab.toml")``
opens the instruments a lab file names (any mix of ``visa://``, ``serial://`` and ``sim://``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from crossbar_ctl.core.config import LabConfig, SimArrayConfig, load_lab_config
from crossbar_ctl.core.errors import ConfigError
from drivers import DEFAULT_MIN_RESISTANCE_OHM, Lab, Transport, build_lab, open_transport

__all__ = ["Labs", "SimTruth", "advance_sim_time", "bench_board", "bench_io", "lab_info", "min_resistance_ohm", "open_lab",
           "open_labs", "set_sim_temperature_c"]

_SERVED_TIMEOUT_S = 10.0
"""Least reply timeout of a simulated lab this factory serves (see :func:`open_lab`)."""
_LOGNORMAL_SIGMAS = 5.0
"""How far below nominal a lognormal resistor is assumed to reach (exp(-5 sigma))."""


def min_resistance_ohm(sim: SimArrayConfig | None) -> float:
    """The smallest resistance behind one closed branch that the lab declares, in ohms.

    For a simulated array: the population's lower tail (uniform: ``nominal * (1 - spread)``;
    lognormal and ladder: ``nominal * exp(-5 spread)``) plus the switch's on-resistance
    (``-5`` sigma of its spread). Without a declaration: a conservative default.
    """
    if sim is None:
        return DEFAULT_MIN_RESISTANCE_OHM
    population = sim.population
    if population.kind == "uniform":
        low = population.nominal_resistance_ohm * (1 - population.spread)
    else:
        low = population.nominal_resistance_ohm * math.exp(-_LOGNORMAL_SIGMAS * population.spread)
    return low + sim.switch_on_resistance_ohm * math.exp(-_LOGNORMAL_SIGMAS * sim.switch_on_spread)


class SimTruth:
    """What only a simulated lab knows, for evaluation figures (``lab.truth``; None on hardware).

    The engine reads it to score what it did (realized bits, the error budget), never to decide
    what to do: control goes through the instruments. Every figure is for the masks now set on the
    array, noiseless, without converters.
    """

    def __init__(self, array: Any) -> None:
        self._array = array

    def transfer_s(self) -> Any:
        """The true transfer matrix ``(rows, cols)``, siemens: the current into each column per volt
        on each row alone (the others at 0 V), through the simulator's own circuit."""
        import numpy as np

        return np.asarray(self._array.circuit().solve(np.eye(self._array.rows)).col_current_a)

    def cell_conductance_s(self) -> Any:
        """True cell conductances ``(rows, cols)``, siemens (faults included)."""
        return self._array.cell_conductance_s()

    def branch_conductance_s(self) -> Any:
        """True conductance of every branch through its own switch ``(rows, cols, branches)``, S."""
        return self._array.branch_conductance_s()


def open_lab(config: LabConfig | str | Path | dict[str, Any] | None = None, *, sim: Any = None,
             served: bool = False, board: int = 0) -> Lab:
    """Open a lab: load the configuration, start the simulator if asked, identify every instrument.

    Parameters
    ----------
    config : LabConfig, path, dict or None
        A lab configuration, a TOML lab file, a parsed mapping, or None for the default
        simulated lab.
    sim : SimLab, optional
        A simulated lab already running (for example served on TCP by ``crossbar sim serve`` in
        this process): ``sim://`` URIs use its devices and ``lab.sim`` is set to it, so tests can
        read the truth behind ``visa://`` instruments. By default a ``SimLab`` is started when any
        URI is ``sim://``.
    served : bool
        Serve the simulated instruments on loopback TCP (pyvisa ``@py``) and the board on a
        pseudo-terminal (pyserial), and reach them through those stacks instead of in process.
        The servers stop when the lab closes.
    board : int
        Which board of a lab with several (``[[boards]]``) to open; 0: the lab's own instruments.
        :func:`open_labs` opens them all.

    Returns
    -------
    Lab
        Use it in a ``with`` block: on exit (or any error, or Ctrl-C) outputs go off and every
        switch opens. ``lab.sim`` is the simulated lab when any URI is ``sim://``, and
        ``lab.truth`` its :class:`SimTruth` (None on hardware).

    Raises
    ------
    ConfigError
        The configuration is invalid, or ``served`` without simulated instruments.
    InstrumentError
        An instrument cannot be reached or is not the configured model.
    """
    lab_config = load_lab_config(config)
    if not 0 <= board <= len(lab_config.boards):
        raise ConfigError(f"board = {board}: the lab has boards 0 to {len(lab_config.boards)}", key="board")
    lab_config = lab_config.board(board)
    instruments = lab_config.instruments
    roles = {"switch_board": instruments.switch_board, "source_meter": instruments.source_meter,
             "switch_matrix": instruments.switch_matrix}
    roles = {role: inst for role, inst in roles.items() if inst is not None}
    simulated = any(inst.uri.startswith("sim://") for inst in roles.values())
    if served and not simulated:
        raise ConfigError("served=True needs sim:// instruments to serve")
    if sim is None and simulated:
        from sim import SimLab  # the lab factory is the only place that starts the simulator

        smu = instruments.source_meter
        sim = SimLab(lab_config.sim, smu_model=(smu.model or "keithley2450") if smu else "keithley2450",
                     routing=instruments.routing)
    server = None
    if served:
        from sim import LabServer

        server = LabServer(sim).start()
        served_uris = server.lab_uris()
        # The simulator computes its physics in the reply path, in threads of this process: its
        # replies usually take under 0.1 s, but on a loaded machine a 64x64x16 bench once needed
        # more than 2 s. Instruments of a user's lab file keep their timeout_s.
        roles = {role: inst.model_copy(update={"uri": served_uris[inst.uri.removeprefix("sim://")],
                                               "timeout_s": max(inst.timeout_s, _SERVED_TIMEOUT_S)})
                 if inst.uri.startswith("sim://") else inst for role, inst in roles.items()}
    transports: dict[str, Transport] = {}
    try:
        for role, inst in roles.items():
            transports[role] = open_transport(inst.uri, timeout_s=inst.timeout_s, reconnects=inst.reconnects,
                                              devices=sim.devices if sim is not None else None, role=role)
        min_ohm = lab_config.limits.min_resistance_ohm or min_resistance_ohm(lab_config.sim)
        lab = build_lab(lab_config, transports, min_resistance_ohm=min_ohm, sim=sim,
                        on_close=server.stop if server is not None else None)
        lab.truth = SimTruth(sim.array) if sim is not None else None
        return lab
    except BaseException:
        for transport in transports.values():
            transport.close()
        if server is not None:
            server.stop()
        raise


class Labs(list):
    """The boards of a lab, each a :class:`drivers.Lab`; ``with`` closes every one (outputs off,
    switches open), on success, error or Ctrl-C."""

    def __enter__(self) -> "Labs":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        failed: list[BaseException] = []
        for lab in self:  # every board made safe, even when one fails
            try:
                lab.__exit__(exc_type, exc, tb)
            except BaseException as error:  # noqa: BLE001 - re-raised below, after the others
                failed.append(error)
        if failed:
            raise failed[0]

    def close(self) -> None:
        self.__exit__(None, None, None)


def open_labs(config: LabConfig | str | Path | dict[str, Any] | None = None, *, served: bool = False) -> Labs:
    """Open every board of a lab (board 0, then each ``[[boards]]``): see :func:`open_lab`.

    A simulated board gets a simulated array of its own (its ``sim`` table, or the lab's with the
    seed plus the board's index).
    """
    lab_config = load_lab_config(config)
    labs = Labs()
    try:
        for board in range(1 + len(lab_config.boards)):
            labs.append(open_lab(lab_config, served=served, board=board))
    except BaseException:
        labs.close()
        raise
    return labs


def set_sim_temperature_c(lab: Lab, temperature_c: float) -> None:
    """Set a simulated lab's array temperature, degC (as a climate chamber would; it then wanders).

    Raises
    ------
    ConfigError
        The lab is not simulated (a real lab records its own temperature), or the value is out of
        the lab file's range (-50 to 150 degC).
    """
    if lab.sim is None:
        raise ConfigError("--temperature-c sets a simulated lab's temperature; a real lab records its own",
                          key="temperature_c")
    if not -50.0 <= float(temperature_c) <= 150.0:
        raise ConfigError(f"temperature_c = {temperature_c!r}: must lie in [-50, 150] degC", key="temperature_c")
    lab.sim.temperature_c = float(temperature_c)


def advance_sim_time(lab: Lab, duration_s: float) -> float:
    """Let simulated time pass on a simulated lab without waiting: its resistors drift, its
    temperature wanders (days take as long as a second).

    Parameters
    ----------
    duration_s : float
        Simulated time to pass, s (finite, >= 0).

    Returns
    -------
    float
        The lab's simulated time afterwards, s.

    Raises
    ------
    ConfigError
        The lab is not simulated (real time cannot be skipped), or the duration is negative or
        not finite.
    """
    if lab.sim is None:
        raise ConfigError("only a simulated lab's clock can be advanced; a real lab waits", key="duration_s")
    duration_s = float(duration_s)
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ConfigError(f"duration_s = {duration_s!r}: must be finite and >= 0", key="duration_s")
    lab.sim.advance_time(duration_s)
    lab.sim.sync_time()
    return lab.sim.time_s


def lab_info(lab: Lab) -> dict[str, Any]:
    """What ``crossbar info`` shows: geometry, identities, limits, roles."""
    rows, cols, branches = lab.geometry
    return {
        "name": lab.config.name,
        "simulated": lab.sim is not None,
        "rows": rows,
        "cols": cols,
        "branches": branches,
        "idn": lab.idn(),
        "uris": {role: inst.uri for role, inst in (
            ("switch_board", lab.config.instruments.switch_board),
            ("source_meter", lab.config.instruments.source_meter),
            ("switch_matrix", lab.config.instruments.switch_matrix)) if inst is not None},
        "routing": lab.config.instruments.routing if lab.routing is not None else "none",
        "readout": type(lab.readout).__name__,
        "capabilities": sorted(lab.board.capabilities()),
        "temperature_c": lab.temperature_c(),
        "limits": lab.limits.model_dump(),
        "min_resistance_ohm": lab.guard.min_resistance_ohm,
    }


def bench_io(*, single_readings: int = 2000, sweep_points: int = 2500, sweeps: int = 4,
             nplc: float = 0.01, seed: int = 0) -> list[dict[str, Any]]:
    """Readings per second through the SMU driver: one point at a time versus list sweeps,
    in process and over loopback TCP (pyvisa ``@py``) against the simulated lab.

    In process, the time spent inside the simulated instrument (its physics) is measured apart,
    so ``controller_us_per_reading`` is the driver and transport path alone.

    Returns
    -------
    list of dict
        One row per (transport, mode): ``transport``, ``mode``, ``readings``, ``seconds``,
        ``readings_per_s``, ``us_per_reading``, ``sim_us_per_reading`` and
        ``controller_us_per_reading`` (in process only; None over TCP, where the simulator runs in
        server threads of this process); and the ratios to the reference measured in the same run,
        the simulated instrument's own time per reading in the same mode (in process):
        ``x_sim_device`` (``us_per_reading`` over it) and ``controller_x_sim_device`` (in process).
    """
    import time

    import numpy as np

    from sim import LabServer, SimLab

    def setup(transport_uri: str, devices: Any) -> Any:
        board_uri, smu_uri = transport_uri
        config = LabConfig(sim=sim_config, instruments={
            "switch_board": {"uri": board_uri, "model": "switchboard"},
            "source_meter": {"uri": smu_uri, "model": "keithley2450"}})
        lab = open_lab(config, sim=devices)
        smu = lab.source_meter
        smu.reset()
        smu.set_nplc(nplc)
        smu.set_current_range_a(1e-4)
        lab.board.set_mask(0, 0, 1)
        lab.routing.connect(source_rows=[0], sense_cols=[0])
        smu.set_source_voltage_v(0.1)
        smu.output_on()
        return lab

    def run(lab: Lab, transport: str) -> list[dict[str, Any]]:
        smu = lab.source_meter
        link = smu.transport
        rows = []
        voltages = np.full(sweep_points, 0.1)
        for mode, count, action in (
            ("single", single_readings, lambda: [smu.measure_current_a() for _ in range(single_readings)]),
            ("list", sweeps * sweep_points, lambda: [smu.sweep_voltages_v(voltages) for _ in range(sweeps)]),
        ):
            device_before = getattr(link, "device_time_s", None)
            start = time.perf_counter()
            action()
            seconds = time.perf_counter() - start
            row = {"transport": transport, "mode": mode, "readings": count, "seconds": seconds,
                   "readings_per_s": count / seconds, "us_per_reading": 1e6 * seconds / count,
                   "sim_us_per_reading": None, "controller_us_per_reading": None}
            if device_before is not None:
                device_s = link.device_time_s - device_before
                row["sim_us_per_reading"] = 1e6 * device_s / count
                row["controller_us_per_reading"] = 1e6 * (seconds - device_s) / count
            rows.append(row)
        return rows

    sim_config = SimArrayConfig(rows=16, cols=16, branches=8, seed=seed)
    results = []
    sim_lab = SimLab(sim_config)
    with setup(("sim://board", "sim://smu"), sim_lab) as lab:
        results += run(lab, "in-process")
    sim_lab = SimLab(sim_config)
    with LabServer(sim_lab) as server:
        uris = {name: f"visa://{resource}" for name, resource in server.uris.items()}
        with setup((uris["board"], uris["smu"]), sim_lab) as lab:
            results += run(lab, "tcp (pyvisa @py)")
    device_us = {r["mode"]: r["sim_us_per_reading"] for r in results if r["sim_us_per_reading"]}
    for r in results:
        reference = device_us.get(r["mode"])
        r["x_sim_device"] = r["us_per_reading"] / reference if reference else None
        r["controller_x_sim_device"] = (r["controller_us_per_reading"] / reference
                                        if reference and r["controller_us_per_reading"] is not None else None)
    return results


def bench_board(*, vectors: int = 256, loads: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Readout vectors and whole-array loads through the switch board driver, one line per vector
    and per row (a board without ``BATCH``) against batched lines (``MVMB``; ``LOADB`` and ``ROWS?``),
    in process and over a pseudo-terminal (pyserial), on the default 64 x 64 x 8 simulated board.

    Returns
    -------
    list of dict
        One row per (transport, lines, operation): ``transport``, ``lines`` (``"one each"`` or
        ``"batched"``), ``operation``, ``count`` (vectors or loads), ``replies`` (the board's
        replies awaited), ``seconds``, ``per_s``; the readings of both modes are the same.
    """
    import time

    import numpy as np

    from sim import LabServer, SimLab

    sim_config = SimArrayConfig(seed=seed)
    rng = np.random.default_rng(seed)
    voltage_v = rng.uniform(-0.005, 0.005, (vectors, sim_config.rows))  # within the total-current bound
    masks = rng.integers(0, 1 << sim_config.branches, (loads, sim_config.rows, sim_config.cols))
    results = []
    for transport in ("in-process", "pty (pyserial)"):
        for batched in (False, True):
            sim_lab = SimLab(sim_config)
            sim_lab.devices["board"].has_batch = batched
            server = LabServer(sim_lab).start() if transport != "in-process" else None
            uri = f"serial://{server.pty_paths['board']}" if server else "sim://board"
            try:
                instruments = {"switch_board": {"uri": uri, "timeout_s": _SERVED_TIMEOUT_S}}
                with open_lab(LabConfig(sim=sim_config, instruments=instruments), sim=sim_lab) as lab:
                    board = lab.board
                    board.safe()
                    board.mvm(voltage_v[0])  # a served simulator's first solve in its thread can take 1-2 s
                    for operation, count, action in (
                        ("whole-array loads", loads, lambda board=board: [board.load_masks(m) for m in masks]),
                        ("readout vectors", vectors, lambda board=board: board.mvm(voltage_v)),
                    ):
                        replies, start = board.transport.round_trips, time.perf_counter()
                        action()
                        seconds = time.perf_counter() - start
                        results.append({"transport": transport, "lines": "batched" if batched else "one each",
                                        "operation": operation, "count": count,
                                        "replies": board.transport.round_trips - replies,
                                        "seconds": seconds, "per_s": count / seconds})
            finally:
                if server is not None:
                    server.stop()
    return results
