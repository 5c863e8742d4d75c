"""The ``crossbar`` command: a thin shell over the public API.

Each area registers its subcommands from its own module (``cli/_*.py``) through
``add_commands(commands, bench)``; every subcommand's handler takes the parsed arguments and
returns a result (dict or list) that is printed as a table, or as JSON with ``--json``.
Errors print one line on stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from crossbar_ctl import __version__
from crossbar_ctl.core.config import config_error
from crossbar_ctl.core.errors import ConfigError, CrossbarError

__all__ = [
    "build_options", "check_output_path", "emit", "int_range", "main", "positive_float",
    "positive_int", "print_table",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

# Modules that add subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "crossbar_ctl.cli._engine",  # demo, program, check
    "crossbar_ctl.cli._train",  # train, bench lottery-train
    "crossbar_ctl.cli._calibrate",  # calibrate, bench calibrate
    "crossbar_ctl.cli._lab",  # info, bench io
    "crossbar_ctl.cli._sim",  # sim serve
    "crossbar_ctl.cli._circuit",  # bench circuit
    "crossbar_ctl.cli._optimizer",  # bench precision, solver, peers, lottery
    "crossbar_ctl.cli._study",  # study, bench scale
    "crossbar_ctl.cli._drift",  # recalibrate, watch, bench drift
)

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def print_table(rows: Sequence[dict[str, Any]], *, title: str = "", file=None) -> None:
    """Print dict rows as an aligned text table (floats in 4 significant digits)."""
    file = file or sys.stdout
    if title:
        print(title, file=file)
    if not rows:
        print("(no rows)", file=file)
        return
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    table = [[cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in table)) for i, col in enumerate(columns)]
    # Numbers align right, text aligns left.
    numeric = [all(isinstance(row.get(col), (int, float)) for row in rows) for col in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    print(line(columns), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in table:
        print(line(r), file=file)


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and _has_default(action.default) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _has_default(value: Any) -> bool:
    """A default worth showing: not None, False, SUPPRESS or an empty list (0 is one)."""
    return not (value is None or value is False or value == argparse.SUPPRESS
                or (isinstance(value, (list, tuple)) and not value))


class _Parser(argparse.ArgumentParser):
    """The parser of ``crossbar`` and every subcommand: defaults in help, one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse prints usage and the error on two lines
        self.exit(EXIT_ERROR, f"crossbar: error: {message} (see {self.prog} --help)\n")


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (inclusive; no upper bound if None)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value}")
        return value

    return parse


positive_int = int_range(1)
"""An argparse type: an integer >= 1."""


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def build_options(model: type[ModelT], **fields: Any) -> ModelT:
    """``model(**fields)`` from command-line values; a refusal names the option, on one line.

    Raises
    ------
    ConfigError
        A value the options model refuses, e.g. ``--max-iterations -1: Input should be ...``.
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        if name in fields:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} {fields[name]}: {error['msg']}", key=name) from exc
        raise config_error(exc, model.__name__) from exc


def check_output_path(path: str | os.PathLike | None, option: str, *,
                      directory: bool = False) -> Path | None:
    """Refuse an output path that cannot be written, before any work is done.

    Missing parent directories are fine (the writers create them); the nearest existing one
    must be a directory where a file can actually be created (probed, so permissions, ACLs and
    read-only file systems all count).

    Parameters
    ----------
    path : path or None
        Where the command will write; None (option not given) is accepted as is.
    option : str
        The option that named the path, e.g. ``"--out"``, quoted in the message.
    directory : bool, optional
        ``path`` is a directory the command writes files into, rather than a file.

    Returns
    -------
    Path or None
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    ConfigError
        The path is a directory where a file is expected (or the reverse), sits below a file,
        or its directory is not writable.
    """
    if path is None:
        return None
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, expected a directory", key=option)
    if not directory and path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory, expected a file name", key=option)
    parent = (path if directory else path.parent).absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a directory", key=option)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write in {parent} "
                          f"({exc.strerror or exc})", key=option) from exc
    return path


def emit(result: Any, args: argparse.Namespace, show: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON with ``--json``, otherwise through ``show``."""
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    else:
        show(result)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crossbar",
        description="Calibrate, program and check resistive crossbars (simulated lab by default).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"crossbar-ctl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv every instrument exchange)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print a table (or --json)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCH")
    bench_parser.set_defaults(run=lambda args: bench_parser.print_help() or 0)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_commands(commands, bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a refused option (one line, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    try:
        code = args.run(args)
    except CrossbarError as exc:
        print(f"crossbar: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValidationError as exc:  # options or a file the models refuse: one line, not a bug report
        print(f"crossbar: error: {config_error(exc, exc.title)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("crossbar: interrupted; outputs off, switches open", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"crossbar: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line for the user, the traceback with -vv
        logging.getLogger("crossbar").debug("internal error", exc_info=True)
        print(f"crossbar: internal error: {type(exc).__name__}: {exc} (rerun with -vv for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_ERROR
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
