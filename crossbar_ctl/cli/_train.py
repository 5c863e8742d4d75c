"""``crossbar train`` (switch masks trained on a calibration) and ``crossbar bench lottery-train``."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from crossbar_ctl.cli._main import (
    build_options, check_output_path, emit, int_range, positive_float, positive_int, print_table,
)
from crossbar_ctl.core.errors import ConfigError

_DATA_HELP = "digits8 (8x8, 64 inputs), digits28 (upsampled to 28x28, 784 inputs) or a data file (.npz)"


def add_commands(commands, bench) -> None:
    """Add ``train`` to ``crossbar`` and ``lottery-train`` to ``crossbar bench``."""
    train = commands.add_parser(
        "train", help="train switch masks on a calibration's measured pools (edge-popup, twin in the loop)")
    train.add_argument("--calibration", required=True, metavar="CAL", help="calibration record (.npz)")
    train.add_argument("--data", required=True, metavar="DATA", help=_DATA_HELP)
    train.add_argument("--arch", default="64-32-10", metavar="ARCH",
                       help="input size, then layers: N dense, cNkK[sS][pP] convolution (e.g. 64-c4k3s2-32-10)")
    train.add_argument("--out", metavar="PLAN", type=Path, default=Path("plan.npz"),
                       help="where to write the switch plan (crossbar program --plan programs it)")
    train.add_argument("--epochs", type=int_range(0, 10_000), default=30, metavar="N",
                       help="passes over the training set (0: the random mask)")
    train.add_argument("--keep-fraction", type=positive_float, default=0.5, metavar="K",
                       help="fraction of each layer's usable branches closed, 0 to 1")
    train.add_argument("--learning-rate", type=positive_float, default=2.0, metavar="LR",
                       help="peak learning rate of the scores (SGD, momentum 0.9, cosine decay)")
    train.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="samples per step")
    train.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the scores and batches")
    train.add_argument("--max-tiles", type=positive_int, default=None, metavar="N",
                       help="refuse a layer that needs more array tiles than this (default: no limit)")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(run=_train)

    lottery = bench.add_parser(
        "lottery-train", help="dense+subset-sum vs edge-popup on the measured pools vs random masks, "
                              "calibrated, programmed and checked on one simulated array")
    lottery.add_argument("--profile", choices=("ideal", "pcb", "harsh"), default="pcb",
                         help="the simulated board's hidden physics")
    lottery.add_argument("--arch", default="64-32-10", metavar="ARCH", help="as crossbar train --arch")
    lottery.add_argument("--data", default="digits8", metavar="DATA", help=_DATA_HELP)
    lottery.add_argument("--rows", type=int_range(2, 1024), default=64, metavar="N", help="array rows")
    lottery.add_argument("--cols", type=int_range(2, 1024), default=64, metavar="N", help="array columns")
    lottery.add_argument("--branches", type=int_range(1, 16), default=8, metavar="N", help="branches per cell")
    lottery.add_argument("--epochs", type=int_range(1, 10_000), default=30, metavar="N",
                         help="training epochs of the dense network and of the masks")
    lottery.add_argument("--samples", type=positive_int, metavar="N",
                         help="check only the first N held-out samples (default: all of them)")
    lottery.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the lab and of training")
    lottery.add_argument("--plot", metavar="FILE.png", type=Path,
                         help="accuracy of each method, digital and analog (needs matplotlib)")
    lottery.add_argument("--json", action="store_true", help="print the rows as JSON")
    lottery.set_defaults(run=_bench_lottery_train)


def _bar_enabled(args: argparse.Namespace) -> bool:
    from crossbar_ctl.cli._engine import _progress

    return _progress(args)


def _train(args: argparse.Namespace) -> int:
    check_output_path(args.out, "--out")
    from calibration import CalibrationRecord
    from crossbar_ctl.engine._datasets import load_data
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._lottery import TrainOptions, train_masks
    from crossbar_ctl.engine._workflow import array_model

    options = build_options(TrainOptions, epochs=args.epochs, keep_fraction=args.keep_fraction,
                            learning_rate=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
                            max_tiles=args.max_tiles)
    data = load_data(args.data)
    model = array_model(CalibrationRecord.load(args.calibration))
    with progress_bar(options.epochs, "train", enabled=_bar_enabled(args)) as bar:
        def step(done: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(done)

        result = train_masks(model, data, args.arch, options=options, progress=step)
    result.plan.save(args.out)
    summary = {
        "plan": str(args.out), "network": result.network.name, "data": data.name, "arch": args.arch,
        "train_samples": len(data.train_y), "test_samples": len(data.test_y),
        "train_accuracy": result.train_accuracy, "test_accuracy": result.test_accuracy,
        "final_loss": result.losses[-1] if result.losses else None, "train_s": result.train_s,
        "layers": [{"layer": lp.index, "kind": lp.kind, "tiles": len(lp.tiles),
                    "conductance_per_weight_s": lp.conductance_per_weight_s,
                    "branches_per_weight": lp.branches_per_weight} for lp in result.plan.header.layers],
    }

    def show(summary: dict[str, Any]) -> None:
        print_table([{key: summary[key] for key in ("network", "data", "train_accuracy", "test_accuracy",
                                                    "final_loss", "train_s")}],
                    title=f"masks trained on the measured pools (float64 accuracy of the twin's weights); "
                          f"plan written to {summary['plan']}")
        print()
        print_table(summary["layers"], title="per layer")

    emit(summary, args, show)
    return 0


def _bench_lottery_train(args: argparse.Namespace) -> int:
    if args.plot is not None:
        check_output_path(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise ConfigError("--plot needs matplotlib: pip install 'crossbar-ctl[plot]'", key="--plot")
    from crossbar_ctl.engine._bench_lottery import METHODS, bench_lottery_train, plot_lottery_train
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._lottery import parse_arch
    from crossbar_ctl.engine._datasets import load_data

    parse_arch(args.arch, load_data(args.data).input_shape)  # refused before the lab is calibrated
    with progress_bar(1 + len(METHODS), "lottery-train", enabled=_bar_enabled(args)) as bar:
        def step(stage: str) -> None:
            bar.set_postfix_str(stage, refresh=False)
            bar.update(1)

        rows = bench_lottery_train(profile=args.profile, arch=args.arch, data=args.data, rows=args.rows,
                                   cols=args.cols, branches=args.branches, epochs=args.epochs,
                                   samples=args.samples, seed=args.seed, progress=step)
    title = (f"{args.arch} on {args.data}, {args.rows}x{args.cols}x{args.branches} simulated array "
             f"({args.profile}), {args.epochs} epochs")
    if args.plot:
        plot_lottery_train(rows, args.plot, title=title)

    def show(rows: list[dict[str, Any]]) -> None:
        units = {"method": "method", "arch": "arch", "digital_accuracy": "digital acc [1]",
                 "analog_accuracy": "analog acc [1]", "agreement": "agreement [1]", "enob_min": "min enob [bit]",
                 "train_s": "train [s]", "program_s": "program [s]", "check_s": "check [s]"}
        print_table([{units[key]: value for key, value in row.items()} for row in rows],
                    title=f"{title}: held-out accuracy, float64 (digital) and on the array (analog)")
        if args.plot:
            print(f"plot: {args.plot}")

    emit(rows, args, show)
    return 0


def program_saved_plan(args: argparse.Namespace) -> int:
    """``crossbar program --plan``: program a plan made from the calibration (``crossbar train``)."""
    for given, option in ((args.no_predistort, "--no-predistort"), (args.max_tiles is not None, "--max-tiles"),
                          (getattr(args, "no_pack", False), "--no-pack"), (args.tcr is not None, "--tcr"),
                          (len(args.calibration) > 1, "a second --calibration")):
        if given:
            raise ConfigError(f"{option} solves a network; a --plan is programmed as it was made", key=option)
    from calibration import CalibrationRecord
    from crossbar_ctl._lab import open_lab
    from crossbar_ctl.cli._engine import _cost_table, _program_table
    from crossbar_ctl.engine._demo import progress_bar
    from crossbar_ctl.engine._lottery import program_trained
    from crossbar_ctl.engine._plan import SwitchPlan
    from crossbar_ctl.engine._program import ProgramOptions

    program_options = build_options(ProgramOptions, max_iterations=args.max_iterations)
    plan = SwitchPlan.load(args.plan)
    record = CalibrationRecord.load(args.calibration[0])
    with open_lab(args.lab) as lab:
        with progress_bar(len(plan.header.tiles), "program", enabled=_bar_enabled(args)) as bar:
            plan = program_trained(lab, plan, record, program_options=program_options, progress=bar.update)
    plan.save(args.out)
    done = plan.header.program
    result = {"plan": str(args.out), "network": plan.header.network_name, "tiles": len(plan.header.tiles),
              "program": done.model_dump() if done else None,
              "cost": done.cost.model_dump() if done and done.cost else None}

    def show(result: dict[str, Any]) -> None:
        print(f"{result['network']}: programmed plan written to {result['plan']}")
        _program_table(result["program"])
        print()
        _cost_table(result["cost"], "programming")

    emit(result, args, show)
    return 0
