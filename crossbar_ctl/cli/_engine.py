"""Subcommands of the engine: ``demo``, ``program``, ``check`` (registered by crossbar_ctl.cli._main)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossbar_ctl.cli._main import (
    build_options, check_output_path, emit, int_range, positive_float, positive_int, print_table,
)
from crossbar_ctl.cli._study import add_cluster_options, cluster
from crossbar_ctl.core.errors import ConfigError

if TYPE_CHECKING:
    from crossbar_ctl.engine._check import LayerCheck


def add_commands(commands, bench) -> None:
    """Add this area's subcommands to ``crossbar`` and ``crossbar bench``."""
    demo = commands.add_parser(
        "demo", help="calibrate the simulated lab, program the digits network, check it (the main job)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--plot", metavar="DIR", type=Path,
                      help="write check.png (analog vs float64) to DIR (needs matplotlib)")
    demo.add_argument("--lab", metavar="LAB.toml", help="a simulated lab file (default: the demo lab)")
    demo.add_argument("--profile", choices=("ideal", "pcb", "harsh"),
                      help="the simulated board's hidden physics instead of the lab file's "
                           "(the demo lab's: pcb; ideal: the controller's own model)")
    demo.add_argument("--samples", type=positive_int, metavar="N",
                      help="use only the first N test samples (default: all of them)")
    demo.add_argument("--served", action="store_true",
                      help="go through the real stacks: pyvisa over loopback TCP, pyserial over a pty")
    demo.add_argument("--noise-seed", type=int_range(0, 2**32 - 1), metavar="S",
                      help="another realization of the read noise on the same board (default: the lab's); "
                           "one run is one realization: compare changes over several")
    demo.add_argument("--no-residual", action="store_true",
                      help="program without the residual plan (crossbar program --residual), to compare")
    demo.set_defaults(run=_demo)

    program = commands.add_parser("program", help="map a network onto a calibrated array and program it")
    source = program.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="W", help="network: .npz (docs/networks.md) or .onnx")
    source.add_argument("--plan", metavar="PLAN", type=Path,
                        help="a plan made from the calibration (crossbar train): programmed as it is, not re-solved")
    source.add_argument("--update", metavar="PLAN", type=Path,
                        help="a programmed plan: re-solve and rewrite only its pairs over budget, on --calibration "
                             "(its own or one recalibrated from it: crossbar recalibrate); its affine correction "
                             "is measured again with --affine-vectors (0: the old one kept)")
    program.add_argument("--calibration", required=True, metavar="CAL", nargs="+",
                         help="calibration record (.npz); one per board, in order, for a lab of several boards")
    program.add_argument("--lab", metavar="LAB.toml", help="lab file (default: the simulated lab)")
    program.add_argument("--out", metavar="PLAN", type=Path, default=Path("plan.npz"),
                         help="where to write the switch plan")
    program.add_argument("--no-predistort", action="store_true", help="solve for the bare cells, ignoring wires")
    program.add_argument("--max-iterations", type=int_range(0, 20), default=3, metavar="N",
                         help="closed-loop rounds per tile, 0 to 20")
    program.add_argument("--common-mode-weight", type=float, metavar="W",
                         help="the common-mode-aware joint cost |error| + W (G+ + G-), W dimensionless "
                              "(default 3e-5, the pcb readout's error per siemens of common mode; 0: off)")
    program.add_argument("--affine-vectors", type=int_range(0, 100_000), default=64, metavar="N",
                         help="reference vectors per tile for the affine correction measured after programming "
                              "(each output's gain and offset, applied by check; 0: none)")
    program.add_argument("--single-ended", action="store_true",
                         help="measure the correction (and so run check) on the columns' own channels, not the "
                              "board's difference channels (CAP? DIFF)")
    program.add_argument("--residual", action="store_true",
                         help="program each weight's measured residual on the same cells at its own scale, which "
                              "check adds (about 1 bit more; every inference loads and reads each tile twice); "
                              "the joint cost's weight is then 3e-4 unless --common-mode-weight is given")
    program.add_argument("--max-tiles", type=positive_int, default=None, metavar="N",
                         help="refuse a layer that needs more array tiles than this (default: no limit)")
    program.add_argument("--no-pack", action="store_true",
                         help="one tile per program step, at the array's top-left (default: small tiles share a step)")
    program.add_argument("--tcr", metavar="TCR", type=Path, default=None,
                         help="TCR record from crossbar calibrate-tcr: program with the conductances predicted "
                              "at the lab's measured temperature (default: as calibrated)")
    add_cluster_options(program, "solve the tiles")
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
    check.add_argument("--samples", type=positive_int, metavar="N",
                       help="use only the first N samples of the data (default: all of them)")
    check.add_argument("--allow-stale", action="store_true",
                       help="run even when the drift guard finds the plan over its error budget (the report keeps "
                            "the probe)")
    check.add_argument("--json", action="store_true", help="print the check report as JSON")
    check.set_defaults(run=_check)

    bench_demo = bench.add_parser("demo", help="the main job against its targets (time, agreement, bits)")
    bench_demo.add_argument("--served", action="store_true", help="through pyvisa over TCP and pyserial over a pty")
    bench_demo.add_argument("--json", action="store_true", help="print the rows as JSON")
    bench_demo.set_defaults(run=_bench_demo)

    branches = bench.add_parser(
        "branches", help="bits against branches per cell (4..16), calibrate -> program -> check per row")
    branches.add_argument("--profile", choices=("ideal", "pcb", "harsh"), default="ideal",
                          help="the simulated board's hidden physics")
    branches.add_argument("--rows", type=int_range(2, 64), default=16, metavar="N",
                          help="array rows (the layer has N - 1 inputs and the bias)")
    branches.add_argument("--cols", type=int_range(2, 64), default=16, metavar="N",
                          help="array columns (the layer has N // 2 outputs)")
    branches.add_argument("--samples", type=positive_int, default=200, metavar="N", help="random inputs checked")
    branches.add_argument("--branches", type=int_range(1, 16), nargs="+", default=[4, 6, 8, 12, 16],
                          metavar="N", help="branches per cell, one row each")
    branches.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the layer and the labs")
    branches.add_argument("--common-mode-weight", type=float, metavar="W",
                          help="plan with the common-mode-aware joint cost |error| + W (G+ + G-) (default 3e-5, "
                               "the pcb readout's error per siemens of common mode; 0: off)")
    branches.add_argument("--plot", metavar="FILE.png", type=Path,
                          help="bits against branches beside one bit per resistor (needs matplotlib)")
    branches.add_argument("--json", action="store_true", help="print the rows as JSON")
    branches.set_defaults(run=_bench_branches)


def _check_plot(path: Path | None, option: str, *, directory: bool = False) -> None:
    """Refuse, before any work, a plot that could not be drawn or written."""
    if path is None:
        return
    check_output_path(path, option, directory=directory)
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"{option} needs matplotlib: pip install 'crossbar-ctl[plot]'", key=option)


def _bench_demo(args: argparse.Namespace) -> int:
    from crossbar_ctl.engine._demo import demo_targets, run_demo

    rows = demo_targets(run_demo(show_progress=False, served=args.served))
    emit(rows, args, lambda rows: print_table(rows, title="crossbar demo against its targets"))
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) or sys.stderr.isatty()


def _common_mode(args: argparse.Namespace) -> dict[str, float]:
    """``--common-mode-weight`` as a plan option, when given (else the plans' default)."""
    return {} if args.common_mode_weight is None else {"common_mode_weight": args.common_mode_weight}


def _bench_branches(args: argparse.Namespace) -> int:
    _check_plot(args.plot, "--plot")
    from crossbar_ctl.engine._bench import bench_branches, plot_branches
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._plan import PlanOptions

    plan_options = build_options(PlanOptions, **_common_mode(args))
    with progress_bar(len(args.branches), f"branches ({args.profile})", enabled=_progress(args)) as bar:
        rows = bench_branches(profile=args.profile, branches=args.branches, rows=args.rows, cols=args.cols,
                              samples=args.samples, seed=args.seed, plan_options=plan_options,
                              progress=bar.update)
    if args.plot:
        plot_branches(rows, args.plot, title=f"{args.rows}x{args.cols} array, profile {args.profile}")

    def show(rows: list[dict[str, Any]]) -> None:
        units = {"branches": "branches [#]", "pool": "pool [#]", "realized_bits_median": "realized median [bit]",
                 "realized_bits_p01": "realized p01 [bit]", "planned_bits_median": "planned median [bit]",
                 "subset_sum_bits_median": "subset sum median [bit]", "enob": "enob [bit]",
                 "calibration_floor_bits": "calibration floor [bit]", "readout_floor_bits": "readout floor [bit]",
                 "common_mode_ratio": "common mode [1]", "common_mode_full_scale": "common mode / full scale [1]",
                 "refine_readings": "refine readings [#]",
                 "switch_writes": "switch writes [#]", "agreement": "agreement [1]", "wall_s": "wall [s]"}
        print_table([{units[key]: value for key, value in row.items()} for row in rows],
                    title=f"one U(-1, 1) layer on a {args.rows}x{args.cols} array, profile {args.profile}: "
                          "bits against max|w| (subset sum: the optimizer on the true branch values)")
        if args.plot:
            print(f"plot: {args.plot}")

    emit(rows, args, show)
    return 0


def _summary(result: dict[str, Any], layers: list[LayerCheck]) -> None:
    from crossbar_ctl.engine._reports import budget_rows, layer_rows

    print_table([{
        "network": result["network"], "samples [#]": result["samples"],
        "digital acc [1]": result["digital_accuracy"], "analog acc [1]": result["analog_accuracy"],
        "agreement [1]": result["agreement"],
        "min enob [bit]": min(layer.enob for layer in layers),
    }], title="analog vs float64")
    print()
    print_table(layer_rows(layers), title="per layer: bits of the weights against max|w| (planned by the twin, "
                                          "measured by the programming's closed loop, realized on the true circuit), "
                                          "and of the outputs (enob, sinad)")
    print()
    print_table(budget_rows(layers), title="error budget: rms output error by stage and its share of mean(error^2) "
                                           "(indented: of programmed's; cross: the parts' correlation)")


def _program_table(program: dict[str, Any]) -> None:
    print_table([{"tile": t, "iterations [#]": program["iterations"][t],
                  "cells resolved [#]": program["cells_resolved"][t],
                  "refine rounds [#]": (program.get("refine_rounds") or (0,) * len(program["iterations"]))[t],
                  "residual before [S]": program["residual_rms_before_s"][t],
                  "residual after [S]": program["residual_rms_after_s"][t]}
                 for t in range(len(program["iterations"]))],
                title="programming with the hardware in the loop: rms pair residual per tile "
                      f"({program['cells_remeasured']} pairs re-measured, "
                      f"{program['branches_found_open']} branches found open since calibration; "
                      f"refinement: {program.get('refine_readings', 0)} readout vectors)")


def _cost_table(cost: dict[str, Any] | None, what: str) -> None:
    """The schedule's cost: switch writes counted from the drivers beside the model's prediction."""
    if cost is None:
        return
    print_table([{"boards [#]": cost["boards"], "steps [#]": cost["steps"], "tiles [#]": cost["tiles"],
                  "switch writes [#]": cost["switch_writes"], "predicted, one pass [#]": cost["switch_writes_predicted"],
                  "row writes [#]": cost["row_writes"], "settle waits [#]": cost["settle_waits"],
                  "settle estimate [s]": cost["settle_s_estimate"]}],
                title=f"cost of {what}: switch writes counted from what the drivers sent, closed loop included, "
                      "and predicted by the schedule's model for one pass of its steps (steps: configurations "
                      "of tiles packed together)")


def _demo(args: argparse.Namespace) -> int:
    _check_plot(args.plot, "--plot", directory=True)  # before the imports: fail in a blink
    from crossbar_ctl.engine._check import LayerCheck
    from crossbar_ctl.engine._demo import run_demo
    from crossbar_ctl.engine._program import ProgramOptions

    result = run_demo(lab_config=args.lab, profile=args.profile, samples=args.samples, plot_dir=args.plot,
                      show_progress=_progress(args), served=args.served, noise_seed=args.noise_seed,
                      program_options=ProgramOptions(residual=False) if args.no_residual else None)

    def show(result: dict[str, Any]) -> None:
        noise = "" if result["noise_seed"] is None else f", noise realization {result['noise_seed']}"
        print(f"simulated board profile: {result['profile']}{noise}")
        _summary(result, [LayerCheck.model_validate(layer) for layer in result["layers"]])
        print()
        print_table([{"layer": layer["index"], "branches/w [#]": layer["branches_per_weight"],
                      "subset sum err [S]": layer["subset_sum_error_s"],
                      "expected err [S]": layer["expected_subset_sum_error_s"],
                      "w bits rms [bit]": layer["weight_error_bits"],
                      "measured w err [w]": layer["measured_weight_error_rms"]} for layer in result["layers"]],
                    title="weights: subset-sum error vs the random-subset-sum expectation (one bit per resistor); "
                          "[w]: weight units")
        print()
        print_table([{key if key == "layer" else f"{key} [1]": value for key, value in row.items()}
                     for row in result["predistortion"]],
                    title="relative output error vs float64 on the simulator's truth (no read noise)")
        print()
        _program_table(result["program"])
        if result["residual_program"]:
            print()
            _cost_table(result["residual_program"]["cost"], "programming the residual plan (crossbar program --residual)")
        print()
        print_table([{f"{key} [s]": value for key, value in result["timings_s"].items()}], title="time")

    emit(result, args, show)
    return 0


def _program(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out")
    if args.plan is not None:
        from crossbar_ctl.cli._train import program_saved_plan

        return program_saved_plan(args)
    if args.update is not None:
        from crossbar_ctl.cli._drift import program_update

        return program_update(args)
    from calibration import CalibrationRecord
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._workflow import program_network
    from crossbar_ctl._lab import open_labs
    from crossbar_ctl.engine._network import load_network
    from crossbar_ctl.engine._plan import PlanOptions, network_tiles
    from crossbar_ctl.engine._distributed import tile_map
    from crossbar_ctl.engine._program import ProgramOptions
    from crossbar_ctl.engine._residual import plan_options_for

    program_options = build_options(ProgramOptions, max_iterations=args.max_iterations,
                                    affine_vectors=args.affine_vectors, differential=not args.single_ended,
                                    residual=args.residual)
    common_mode = {"common_mode_weight": plan_options_for(program_options).common_mode_weight, **_common_mode(args)}
    plan_options = build_options(PlanOptions, predistort=not args.no_predistort, max_tiles=args.max_tiles,
                                 pack=not args.no_pack, **common_mode)
    network = load_network(args.weights)
    records = [CalibrationRecord.load(path) for path in args.calibration]
    tcr = None
    if args.tcr is not None:
        from calibration import TcrEstimate

        tcr = TcrEstimate.load(args.tcr)
    with cluster(args) as client, open_labs(args.lab) as labs:
        rows, cols, _ = labs[0].geometry
        if len(records) != len(labs):
            raise ConfigError(f"--calibration: the lab has {len(labs)} board(s); give one record per board, "
                              f"in order (got {len(records)})", key="--calibration")
        total = 2 * len(network_tiles(network, rows, cols, max_tiles=plan_options.max_tiles))
        with progress_bar(total, "solve + program", enabled=_progress(args)) as bar:
            plan = program_network(list(labs), network, records if len(records) > 1 else records[0],
                                   plan_options=plan_options,
                                   program_options=program_options, progress=bar.update, tcr=tcr,
                                   tile_map=client and tile_map(client))
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
        "cost": record_.cost.model_dump() if record_ and record_.cost else None,
        "affine": plan.header.affine.model_dump() if plan.header.affine else None,
        "residual": None if plan.residual is None else {
            "conductance_per_weight_s": [lp.conductance_per_weight_s for lp in plan.residual.header.layers],
            "cost": plan.residual.header.program.cost.model_dump() if plan.residual.header.program.cost else None},
    }

    def show(result: dict[str, Any]) -> None:
        print_table(result["layers"], title=f"{result['network']}: plan written to {result['plan']}")
        print()
        _program_table(result["program"])
        print()
        _cost_table(result["cost"], "programming")
        if result["residual"]:
            print()
            _cost_table(result["residual"]["cost"], "programming the residual plan")

    emit(result, args, show)
    return 0


def _check(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out")
    _check_plot(args.plot, "--plot")
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._workflow import check_network
    from crossbar_ctl._lab import open_labs
    from crossbar_ctl.engine._network import load_dataset
    from crossbar_ctl.engine._plan import SwitchPlan, inference_vectors
    from crossbar_ctl.engine._reports import plot_check

    plan = SwitchPlan.load(args.plan)
    x, y = load_dataset(args.data)
    if args.samples is not None:
        x, y = x[: args.samples], None if y is None else y[: args.samples]
    details: dict = {}
    network = plan.network()
    with open_labs(args.lab) as labs:
        rows, cols, _ = labs[0].geometry
        with progress_bar(inference_vectors(network, rows, cols, len(x)), "analog inference",
                          enabled=_progress(args)) as bar:
            report = check_network(list(labs), plan, x, y, nplc=args.nplc, progress=bar.update, details=details,
                                   allow_stale=args.allow_stale)
    if args.out:
        report.save(args.out)
    if args.plot:
        plot_check(details, args.plot, title=f"{report.network_name}: analog vs float64")
    result = report.model_dump()

    def show(result: dict[str, Any]) -> None:
        _summary({"network": report.network_name, **result}, list(report.layers))
        print()
        _cost_table(result["cost"], "the check")

    emit(result, args, show)
    return 0
