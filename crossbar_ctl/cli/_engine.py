"""Subcommands of the engine: ``demo``, ``program``, ``check`` (registered by crossbar_ctl.cli._main)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from crossbar_ctl.cli._main import (
    build_options, check_output_path, emit, int_range, positive_float, positive_int, print_table,
)
from crossbar_ctl.core.errors import ConfigError


def add_commands(commands, bench) -> None:
    """Add this area's subcommands to ``crossbar`` and ``crossbar bench``."""
    demo = commands.add_parser(
        "demo", help="calibrate the simulated lab, program the digits network, check it (the main job)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--plot", metavar="DIR", type=Path,
                      help="write check.png (analog vs float64) to DIR (needs matplotlib)")
    demo.add_argument("--lab", metavar="LAB.toml", help="a simulated lab file (default: the demo lab)")
    demo.add_argument("--samples", type=positive_int, metavar="N",
                      help="use only the first N test samples (default: all of them)")
    demo.add_argument("--served", action="store_true",
                      help="go through the real stacks: pyvisa over loopback TCP, pyserial over a pty")
    demo.set_defaults(run=_demo)

    program = commands.add_parser("program", help="map a network onto a calibrated array and program it")
    program.add_argument("--weights", required=True, metavar="W", help="network: .npz (docs/networks.md) or .onnx")
    program.add_argument("--calibration", required=True, metavar="CAL", help="calibration record (.npz)")
    program.add_argument("--lab", metavar="LAB.toml", help="lab file (default: the simulated lab)")
    program.add_argument("--out", metavar="PLAN", type=Path, default=Path("plan.npz"),
                         help="where to write the switch plan")
    program.add_argument("--no-predistort", action="store_true", help="solve for the bare cells, ignoring wires")
    program.add_argument("--max-iterations", type=int_range(0, 20), default=3, metavar="N",
                         help="closed-loop rounds per tile, 0 to 20")
    program.add_argument("--max-tiles", type=positive_int, default=64, metavar="N",
                         help="refuse a layer that needs more array tiles than this")
    program.add_argument("--json", action="store_true", help="print the plan summary as JSON")
    program.set_defaults(run=_program)

    check = commands.add_parser("check", help="run a programmed network on the array and compare with float64")
    check.add_argument("--plan", required=True, metavar="PLAN", help="switch plan from crossbar program")
    check.add_argument("--data", required=True, metavar="DATA", help=".npz with x (and y) or test.x / test.y")
    check.add_argument("--lab", metavar="LAB.toml", help="lab file (default: the simulated lab)")
    check.add_argument("--out", metavar="REPORT.json", type=Path, help="also write the check report")
    check.add_argument("--plot", metavar="FILE.png", type=Path,
                       help="analog vs float64 scatter and error histogram (needs matplotlib)")
    check.add_argument("--nplc", type=positive_float, default=4.0,
                       help="readout integration time for the run, power-line cycles")
    check.add_argument("--json", action="store_true", help="print the check report as JSON")
    check.set_defaults(run=_check)

    bench_demo = bench.add_parser("demo", help="the main job against its targets (time, agreement, bits)")
    bench_demo.add_argument("--served", action="store_true", help="through pyvisa over TCP and pyserial over a pty")
    bench_demo.add_argument("--json", action="store_true", help="print the rows as JSON")
    bench_demo.set_defaults(run=_bench_demo)


def _check_plot(path: Path | None, option: str, *, directory: bool = False) -> None:
    """Refuse, before any work, a plot that could not be drawn or written."""
    if path is None:
        return
    check_output_path(path, option, directory=directory)
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"{option} needs matplotlib: pip install 'crossbar-ctl[plot]'", key=option)


def _bench_demo(args: argparse.Namespace) -> int:
    from crossbar_ctl.engine._demo import run_demo

    result = run_demo(show_progress=False, served=args.served)
    bits = min(layer["effective_bits"] for layer in result["layers"])
    gap = abs(result["analog_accuracy"] - result["digital_accuracy"])
    rows = [
        {"figure": "agreement", "value": result["agreement"], "target": ">= 0.99", "met": result["agreement"] >= 0.99},
        {"figure": "|analog - digital| accuracy", "value": gap, "target": "<= 0.01", "met": gap <= 0.01},
        {"figure": "min effective bits", "value": bits, "target": ">= 8", "met": bits >= 8},
        {"figure": "total time, s", "value": result["timings_s"]["total"], "target": "<= 60 warm, <= 120 cold",
         "met": result["timings_s"]["total"] <= 60},
    ]
    emit(rows, args, lambda rows: print_table(rows, title="crossbar demo against its targets"))
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) or sys.stderr.isatty()


def _summary(result: dict[str, Any], layers: list[dict]) -> None:
    print_table([{
        "network": result["network"], "samples": result["samples"],
        "digital_acc": result["digital_accuracy"], "analog_acc": result["analog_accuracy"],
        "agreement": result["agreement"],
        "min_eff_bits": min(layer["eff_bits"] for layer in layers),
    }], title="analog vs float64")
    print()
    print_table(layers, title="per layer (budget: rms output error by cause)")


def _program_table(program: dict[str, Any]) -> None:
    print_table([{"tile": t, "iterations": program["iterations"][t],
                  "cells_resolved": program["cells_resolved"][t],
                  "residual_before_s": program["residual_rms_before_s"][t],
                  "residual_after_s": program["residual_rms_after_s"][t]}
                 for t in range(len(program["iterations"]))],
                title="programming with the hardware in the loop: rms pair residual per tile "
                      f"({program['cells_remeasured']} pairs re-measured, "
                      f"{program['branches_found_open']} branches found open since calibration)")


def _demo(args: argparse.Namespace) -> int:
    _check_plot(args.plot, "--plot", directory=True)  # before the imports: fail in a blink
    from crossbar_ctl.engine._check import LayerCheck
    from crossbar_ctl.engine._demo import run_demo
    from crossbar_ctl.engine._reports import layer_rows

    result = run_demo(lab_config=args.lab, samples=args.samples, plot_dir=args.plot,
                      show_progress=_progress(args), served=args.served)

    def show(result: dict[str, Any]) -> None:
        _summary(result, layer_rows([LayerCheck.model_validate(layer) for layer in result["layers"]]))
        print()
        print_table([{"layer": layer["index"], "branches/w": layer["branches_per_weight"],
                      "subset_sum_err_s": layer["subset_sum_error_s"],
                      "expected_err_s": layer["expected_subset_sum_error_s"],
                      "w_bits": layer["weight_error_bits"],
                      "measured_w_err": layer["measured_weight_error_rms"]} for layer in result["layers"]],
                    title="weights: subset-sum error vs the random-subset-sum expectation (one bit per resistor)")
        print()
        print_table(result["predistortion"],
                    title="relative output error vs float64 on the simulator's truth (no read noise)")
        print()
        _program_table(result["program"])
        print()
        print_table([result["timings_s"]], title="time, s")

    emit(result, args, show)
    return 0


def _program(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out")
    from calibration import CalibrationRecord
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._workflow import program_network
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._network import load_network
    from crossbar_ctl.engine._plan import PlanOptions, network_tiles
    from crossbar_ctl.engine._program import ProgramOptions

    plan_options = build_options(PlanOptions, predistort=not args.no_predistort, max_tiles=args.max_tiles)
    program_options = build_options(ProgramOptions, max_iterations=args.max_iterations)
    network = load_network(args.weights)
    record = CalibrationRecord.load(args.calibration)
    with open_lab(args.lab) as lab:
        rows, cols, _ = lab.geometry
        total = 2 * len(network_tiles(network, rows, cols, max_tiles=plan_options.max_tiles))
        with progress_bar(total, "solve + program", enabled=_progress(args)) as bar:
            plan = program_network(lab, network, record, plan_options=plan_options,
                                   program_options=program_options, progress=bar.update)
    plan.save(args.out)
    record_ = plan.header.program
    result = {
        "plan": str(args.out), "network": network.name, "tiles": len(plan.header.tiles),
        "layers": [{"layer": lp.index, "kind": lp.kind, "tiles": len(lp.tiles),
                    "conductance_per_weight_s": lp.conductance_per_weight_s,
                    "branches_per_weight": lp.branches_per_weight, "weight_error_bits": lp.weight_error_bits,
                    "subset_sum_error_s": lp.subset_sum_error_s,
                    "expected_subset_sum_error_s": lp.expected_subset_sum_error_s}
                   for lp in plan.header.layers],
        "program": record_.model_dump() if record_ else None,
    }

    def show(result: dict[str, Any]) -> None:
        print_table(result["layers"], title=f"{result['network']}: plan written to {result['plan']}")
        print()
        _program_table(result["program"])

    emit(result, args, show)
    return 0


def _check(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out")
    _check_plot(args.plot, "--plot")
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._workflow import check_network
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.engine._network import load_dataset
    from crossbar_ctl.engine._plan import SwitchPlan, inference_vectors
    from crossbar_ctl.engine._reports import layer_rows, plot_check

    plan = SwitchPlan.load(args.plan)
    x, y = load_dataset(args.data)
    details: dict = {}
    network = plan.network()
    with open_lab(args.lab) as lab:
        rows, cols, _ = lab.geometry
        with progress_bar(inference_vectors(network, rows, cols, len(x)), "analog inference",
                          enabled=_progress(args)) as bar:
            report = check_network(lab, plan, x, y, nplc=args.nplc, progress=bar.update, details=details)
    if args.out:
        report.save(args.out)
    if args.plot:
        plot_check(details, args.plot, title=f"{report.network_name}: analog vs float64")
    result = report.model_dump()

    def show(result: dict[str, Any]) -> None:
        _summary({"network": report.network_name, **result}, layer_rows(report.layers))

    emit(result, args, show)
    return 0
