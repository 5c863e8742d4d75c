"""``crossbar sim serve``: the simulated lab on loopback TCP and a pseudo-terminal."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from crossbar_ctl.cli._main import emit, print_table
from crossbar_ctl.core.config import load_lab_config
from crossbar_ctl.core.errors import ConfigError


def add_commands(commands, bench) -> None:
    """Add this area's subcommands to ``crossbar`` and ``crossbar bench``."""
    sim = commands.add_parser("sim", help="the simulated lab")
    sim.set_defaults(run=lambda args: sim.print_help() or 0)
    sub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve the simulated instruments on loopback TCP and a pty until Ctrl-C",
        description="Start the simulated lab and serve every instrument on its own TCP port "
        "(raw SCPI, '\\n' terminated, as LAN instruments serve port 5025) and the switch board "
        "also on a pseudo-terminal. Open them with pyvisa (ResourceManager('@py'), "
        "read_termination and write_termination '\\n') or pyserial (serial.Serial(path)).",
    )
    serve.add_argument("--config", "--lab", dest="config", metavar="LAB_TOML",
                       help="lab file: its [sim] table is the array, "
                       "instruments.source_meter.model the SMU (default: the built-in lab)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--port", action="append", default=[], metavar="NAME=PORT",
                       help="fixed TCP port for a device (smu, board, matrix); default ephemeral")
    serve.add_argument("--json", action="store_true", help="print the URIs as JSON")
    serve.set_defaults(run=_serve)


def _ports(specs: list[str]) -> dict[str, int]:
    ports = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"--port {spec!r}: expected NAME=PORT with PORT in 1..65535", key="port")
        ports[name] = int(value)
    return ports


def _serve(args: argparse.Namespace) -> int:
    from sim._lab import SMU_MODELS, SimLab
    from sim._serve import LabServer

    config = load_lab_config(args.config)
    if config.sim is None:
        raise ConfigError(f"{args.config}: no [sim] table: nothing to simulate", key="sim")
    meter = config.instruments.source_meter
    model = meter.model if meter is not None and meter.model else "keithley2450"
    if model not in SMU_MODELS:
        raise ConfigError(f"instruments.source_meter.model = {model!r}: the simulator has "
                          f"{', '.join(SMU_MODELS)}", key="instruments.source_meter.model")
    ports = _ports(args.port)
    unknown = sorted(set(ports) - {"smu", "board", "matrix"})
    if unknown:
        raise ConfigError(f"--port {unknown[0]}=...: devices are smu, board, matrix", key="port")
    lab = SimLab(config.sim, smu_model=model, routing=config.instruments.routing)
    models = {"smu": model, "matrix": "e5250a", "board": "switchboard"}
    try:
        server = LabServer(lab, host=args.host, ports=ports).start()
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}: {exc}", key="port") from exc
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        rows: list[dict[str, Any]] = [
            {"device": name, "model": models[name], "address": resource, "uri": f"visa://{resource}"}
            for name, resource in server.uris.items()
        ]
        rows += [{"device": name, "model": models[name], "address": path, "uri": f"serial://{path}"}
                 for name, path in server.pty_paths.items()]
        emit(rows, args, lambda result: _show(result, config.sim))
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    print("crossbar sim serve: stopped", file=sys.stderr)
    return 0


def _show(rows: list[dict[str, Any]], sim: Any) -> None:
    print_table(rows, title=f"simulated lab: {sim.rows}x{sim.cols} array, {sim.branches} branches, "
                f"seed {sim.seed}")
    print("\npyvisa: ResourceManager('@py').open_resource(address, read_termination='\\n', "
          "write_termination='\\n')\npyserial: serial.Serial(address)\nCtrl-C stops the lab.")
