"""``crossbar info``, ``crossbar bench io`` and ``crossbar bench board`` (registered by
``crossbar_ctl.cli._main``)."""

from __future__ import annotations

import argparse
from typing import Any

from crossbar_ctl.cli._main import emit, print_table


def add_commands(commands, bench) -> None:
    """Add this area's subcommands to ``crossbar`` and ``crossbar bench``."""
    info = commands.add_parser(
        "info", help="the lab: geometry, instrument identities, limits",
        description="Open the lab (the simulated one by default), identify every instrument and "
        "print the geometry, the IDN strings, the routing and readout, and the safety limits. "
        "The lab is left safe: outputs off, switches open.")
    info.add_argument("--lab", metavar="LAB_TOML", help="lab file (default: the simulated lab)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_info)

    io = bench.add_parser(
        "io", help="SMU readings per second: single point vs list sweep, in process vs TCP",
        description="Readings per second through the source-meter driver against the simulated "
        "lab, one point per round trip versus buffered list sweeps, in process and over loopback "
        "TCP through pyvisa-py, side by side. In process, the simulator's own compute is "
        "measured apart: controller_us is the driver and transport path alone.")
    io.add_argument("--single", type=int, default=2000, metavar="N", help="single-point readings (default 2000)")
    io.add_argument("--sweeps", type=int, default=4, metavar="N", help="list sweeps of 2500 points (default 4)")
    io.add_argument("--nplc", type=float, default=0.01, help="integration time (default 0.01)")
    io.add_argument("--json", action="store_true", help="print JSON instead of a table")
    io.set_defaults(run=_bench_io)

    board = bench.add_parser(
        "board", help="switch board: lines and time per readout vector and whole-array load, one each vs batched",
        description="Readout vectors and whole-array mask loads through the switch board driver on the "
        "default 64 x 64 x 8 simulated board, one line per vector and row (a board without BATCH) "
        "against batched lines (MVMB; LOADB and ROWS?), in process and over a pty through pyserial. "
        "The replies are what a slow serial link pays for; the seconds include the simulator's physics.")
    board.add_argument("--vectors", type=int, default=256, metavar="N", help="readout vectors (default 256)")
    board.add_argument("--loads", type=int, default=8, metavar="N", help="whole-array loads (default 8)")
    board.add_argument("--json", action="store_true", help="print JSON instead of a table")
    board.set_defaults(run=_bench_board)


def _info(args: argparse.Namespace) -> int:
    from crossbar_ctl._lab import lab_info, open_lab

    with open_lab(args.lab) as lab:
        result = lab_info(lab)

    def show(info: dict[str, Any]) -> None:
        rows = [{"item": "lab", "value": f"{info['name']} ({'simulated in process' if info['simulated'] else 'instruments at their URIs'})"},
                {"item": "geometry", "value": f"{info['rows']} x {info['cols']} cells, {info['branches']} branches"},
                {"item": "routing", "value": info["routing"]},
                {"item": "readout", "value": info["readout"]},
                {"item": "temperature_c", "value": f"{info['temperature_c']:.2f}"}]
        rows += [{"item": f"{role}", "value": f"{idn}  [{info['uris'][role]}]"} for role, idn in info["idn"].items()]
        limits = {**info["limits"], "min_resistance_ohm": info["min_resistance_ohm"]}
        rows += [{"item": key, "value": f"{value:g}"} for key, value in limits.items()]
        print_table(rows)

    emit(result, args, show)
    return 0


def _bench_io(args: argparse.Namespace) -> int:
    from crossbar_ctl._lab import bench_io
    from crossbar_ctl.core.errors import ConfigError

    if args.single < 1 or args.sweeps < 1:
        raise ConfigError("--single and --sweeps must be >= 1")
    results = bench_io(single_readings=args.single, sweeps=args.sweeps, nplc=args.nplc)

    def show(rows: list[dict[str, Any]]) -> None:
        table = [{"transport": r["transport"], "mode": r["mode"], "readings": r["readings"],
                  "readings/s": r["readings_per_s"], "us/reading": r["us_per_reading"],
                  "sim_us": "" if r["sim_us_per_reading"] is None else r["sim_us_per_reading"],
                  "controller_us": "" if r["controller_us_per_reading"] is None else r["controller_us_per_reading"],
                  "x_sim_device": "" if r["x_sim_device"] is None else r["x_sim_device"],
                  "controller_x_sim_device": "" if r["controller_x_sim_device"] is None
                  else r["controller_x_sim_device"]}
                 for r in rows]
        print_table(table, title=f"SMU I/O against the simulated lab (Keithley 2450, NPLC {args.nplc:g}); "
                                 "x_sim_device: over the simulated instrument's own time per reading "
                                 "(same mode, in process, this run)")

    emit(results, args, show)
    return 0


def _bench_board(args: argparse.Namespace) -> int:
    from crossbar_ctl._lab import bench_board
    from crossbar_ctl.core.errors import ConfigError

    if args.vectors < 1 or args.loads < 1:
        raise ConfigError("--vectors and --loads must be >= 1")
    results = bench_board(vectors=args.vectors, loads=args.loads)

    def show(rows: list[dict[str, Any]]) -> None:
        print_table(rows, title="Switch board lines against the simulated 64 x 64 x 8 board: one each vs batched")

    emit(results, args, show)
    return 0
