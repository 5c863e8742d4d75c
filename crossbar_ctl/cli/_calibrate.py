"""``crossbar calibrate`` and ``crossbar bench calibrate`` (registered by crossbar_ctl.cli._main)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from crossbar_ctl.cli._main import int_range, positive_float
from crossbar_ctl.core.errors import CalibrationError, CrossbarError, InstrumentError
from crossbar_ctl.core.files import atomic_save_figure, pyplot

__all__ = ["add_commands"]


def add_commands(commands, bench) -> None:
    """Add ``calibrate`` to ``crossbar`` and ``calibrate`` to ``crossbar bench``."""
    parser = commands.add_parser(
        "calibrate", help="measure every branch of the array (simulated lab by default)",
        description="Measure every branch's conductance with its uncertainty and fault flags; "
                    "checkpointed, resumable with --resume.")
    parser.add_argument("--lab", type=Path, default=None, help="lab file (TOML); default: simulated lab")
    parser.add_argument("--board", type=int_range(0, 1023), default=0, metavar="B",
                        help="which board of a lab with several ([[boards]]): 0 is the lab's own")
    parser.add_argument("--out", type=Path, default=Path("calibration.npz"),
                        help="record to write (also the checkpoint)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the partial record in --out (refused if it is of another array)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw the conductance histogram per column and the flagged branches "
                             "(needs matplotlib)")
    parser.add_argument("--method", choices=("auto", "readout", "smu"), default="auto",
                        help="readout: one row driven, every column sensed at once by the board; smu: one "
                             "cell at a time through the source-meter; auto: readout when the board has one")
    parser.add_argument("--design", choices=("single", "s-matrix"), default="single",
                        help="branches closed per step: one at a time, or a weighing design (about half, "
                             "estimated by least squares)")
    parser.add_argument("--repeats", type=int_range(2, 1000), default=2,
                        help="readings per step in the first pass (>= 2: the noise model is fitted from them)")
    parser.add_argument("--nplc", type=positive_float, default=1.0,
                        help="integration time of every reading, in power-line cycles (0.01 to 10)")
    parser.add_argument("--read-voltage-v", type=positive_float, default=None,
                        help="voltage on the driven row, volts; refused if beyond the lab's limits, never "
                             "lowered (default: the highest the limits allow, at most 0.5 V)")
    parser.add_argument("--target-rel-sigma", type=positive_float, default=None,
                        help="adaptive averaging: read again until every branch's sigma/g is below this "
                             "(default: no adaptive averaging)")
    parser.add_argument("--time-budget-s", type=positive_float, default=None,
                        help="wall-time budget of the adaptive averaging, seconds (default: none)")
    parser.add_argument("--unselected", choices=("ground", "float"), default="ground",
                        help="unselected lines in SMU reads: grounded, or floating (shows the sneak-path error)")
    parser.add_argument("--no-twin", action="store_true",
                        help="do not fit the wiring twin (wire and sense resistance)")
    parser.add_argument("--temperature-c", type=float, default=None, metavar="T",
                        help="simulated lab only: set the array's temperature (degC) before measuring "
                             "(default: the lab file's; a real lab records its own)")
    parser.set_defaults(run=_calibrate)

    tcr = commands.add_parser(
        "calibrate-tcr", help="estimate each branch's TCR from calibrations at different temperatures",
        description="Fit each branch's temperature coefficient from two or more calibration records of "
                    "the same array taken at different temperatures (crossbar calibrate --temperature-c "
                    "on a simulated lab); crossbar program --tcr then programs at the lab's temperature.")
    tcr.add_argument("--calibration", type=Path, nargs="+", required=True, metavar="CAL",
                     help="calibration records (.npz) of one array, at two or more temperatures")
    tcr.add_argument("--out", type=Path, default=Path("tcr.npz"), help="TCR record to write")
    tcr.add_argument("--json", action="store_true", help="print the summary as JSON")
    tcr.set_defaults(run=_calibrate_tcr)

    b = bench.add_parser("calibrate", help="calibration throughput, accuracy and weighing-design gain")
    b.add_argument("--json", action="store_true", help="print the tables as JSON")
    b.add_argument("--quick", action="store_true", help="a 16x16x8 array (a smoke run)")
    b.add_argument("--no-tcp", action="store_true", help="skip the TCP/pty transport run")
    b.set_defaults(run=_bench)


def _options(args: argparse.Namespace):
    from calibration import CalibrationOptions
    from crossbar_ctl.cli._main import build_options

    return build_options(CalibrationOptions, method=args.method, design=args.design, repeats=args.repeats,
                         nplc=args.nplc, read_voltage_v=args.read_voltage_v,
                         target_rel_sigma=args.target_rel_sigma, time_budget_s=args.time_budget_s,
                         unselected=args.unselected, fit_twin=not args.no_twin)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Any]:
    """A progress callback whose bar appears with the first unit measured (not before a refusal)."""
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int, stage: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False))
        bar = bars[0]
        bar.total = total
        bar.set_description(stage)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _calibrate(args: argparse.Namespace) -> int:
    from calibration import calibrate
    from crossbar_ctl._lab import open_lab, set_sim_temperature_c
    from crossbar_ctl.cli._main import check_output_path, emit, print_table

    options = _options(args)
    check_output_path(args.out, "--out")  # before any measuring
    if args.plot is not None:
        check_output_path(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise CalibrationError("--plot needs matplotlib: pip install 'crossbar-ctl[plot]'")
    if args.resume and not args.out.exists():
        raise CalibrationError(f"--resume: {args.out} does not exist")
    try:
        with open_lab(args.lab, board=args.board) as lab, _progress_bar() as progress:
            if args.temperature_c is not None:
                set_sim_temperature_c(lab, args.temperature_c)
            record = calibrate(lab, options=options, checkpoint=args.out, resume=args.resume,
                               progress=progress)
    except KeyboardInterrupt:
        if args.out.exists():
            print(f"crossbar: partial record in {args.out}; continue with --resume", file=sys.stderr)
        raise
    except CrossbarError as exc:
        if args.out.exists() and isinstance(exc, InstrumentError):
            raise CalibrationError(f"{exc} (partial record in {args.out}; continue with --resume)") from exc
        raise
    result = _summary(record, args.out)
    if args.plot is not None:
        plot_record(record, args.plot)
        result["plot"] = str(args.plot)

    def show(res: dict) -> None:
        rows = [{"quantity": k, "value": v} for k, v in res.items() if not isinstance(v, dict)]
        print_table(rows, title=f"calibration of {record.header.rows}x{record.header.cols}x"
                                f"{record.header.branches} ({record.header.method}, "
                                f"{record.header.options.design})")

    emit(result, args, show)
    return 0


def _calibrate_tcr(args: argparse.Namespace) -> int:
    from calibration import CalibrationRecord, fit_tcr
    from crossbar_ctl.cli._main import check_output_path, emit, print_table

    check_output_path(args.out, "--out")
    estimate = fit_tcr([CalibrationRecord.load(path) for path in args.calibration])
    estimate.save(args.out)
    result: dict[str, Any] = dict(estimate.summary(), out=str(args.out))
    emit(result, args, lambda res: print_table([{"quantity": k, "value": v} for k, v in res.items()],
                                               title="TCR of each branch's resistance (1/K)"))
    return 0


def _summary(record, out: Path) -> dict[str, Any]:
    from calibration import flag_names

    result: dict[str, Any] = dict(record.summary())
    result["read_voltage_v"] = record.header.read_voltage_v
    kinds: dict[str, int] = {}
    for value in record.flags[record.flags != 0].ravel():
        for name in flag_names(int(value)):
            kinds[name] = kinds.get(name, 0) + 1
    result["flagged_by_kind"] = kinds
    twin = record.twin
    if twin is not None:
        result.update(twin_row_wire_ohm=twin.row_wire_resistance_ohm,
                      twin_col_wire_ohm=twin.col_wire_resistance_ohm,
                      twin_sense_ohm=twin.sense_resistance_ohm,
                      twin_holdout_rel_rms=twin.holdout_rel_rms)
    result["temperature_c"] = record.header.temperature_end_c
    result["out"] = str(out)
    return result


def plot_record(record, path: Path) -> None:
    """Conductance histogram per column (image) and the flagged branches, to ``path``."""
    plt = pyplot(CalibrationError, "--plot needs")
    from calibration import FLAG_EXCLUDE, flag_names

    g = record.conductance_s
    ok = record.usable
    rows, cols, branches = record.geometry
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    values = g[ok] * 1e6
    edges = np.linspace(np.percentile(values, 0.5), np.percentile(values, 99.5), 60) if values.size else [0, 1]
    image = np.stack([np.histogram(g[:, c][ok[:, c]] * 1e6, bins=edges)[0] for c in range(cols)], axis=1)
    left.imshow(image, aspect="auto", origin="lower", cmap="viridis",
                extent=(-0.5, cols - 0.5, edges[0], edges[-1]))
    left.set_xlabel("column")
    left.set_ylabel("branch conductance (uS)")
    left.set_title("conductance histogram per column")
    flagged = np.argwhere(record.flags & FLAG_EXCLUDE)
    kinds = {}
    for r, c, k in flagged:
        kinds.setdefault("+".join(flag_names(int(record.flags[r, c, k]))), []).append((r, c))
    for name, cells in kinds.items():
        cells = np.array(cells)
        right.scatter(cells[:, 1], cells[:, 0], s=18, label=f"{name} ({len(cells)})")
    right.set_xlim(-0.5, cols - 0.5)
    right.set_ylim(rows - 0.5, -0.5)
    right.set_xlabel("column")
    right.set_ylabel("row")
    right.set_title(f"flagged branches ({len(flagged)})")
    if kinds:
        right.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


# ---- bench ---------------------------------------------------------------------------------------

def _tcp_lab(config) -> Any:
    """The same simulated lab served on loopback TCP (SMU) and a pty (board), opened through them."""
    from crossbar_ctl._lab import open_lab

    return open_lab(config, served=True)


def _bench(args: argparse.Namespace) -> int:
    from calibration import bench_calibrate
    from crossbar_ctl.cli._main import emit, print_table
    from crossbar_ctl._lab import open_lab

    transports = {"in-process": open_lab}
    if not args.no_tcp:
        transports["tcp+pty"] = _tcp_lab
    result = bench_calibrate(transports, quick=args.quick)

    def show(res: dict) -> None:
        for title, rows in res.items():
            if title == "throughput":
                title += " (x_smu_single: branches/s over the SMU's cell-by-cell reads, in process, this run)"
            print_table(rows, title=title)
            print()

    emit(result, args, show)
    return 0
