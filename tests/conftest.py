"""Shared test options (opt-in tests against real hardware) and fixtures."""

import os
from collections import Counter

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--instrument-uri",
        action="append",
        default=[],
        help="URI of a real instrument (visa://..., serial://...); enables the hardware tests",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the worker count into workers
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Both cores by default: ``-n 2 --dist loadfile`` where pytest-xdist (the test extra) is
    installed and neither ``-n`` nor ``--pdb`` was given; ``-n 0`` runs in one process.

    Set here rather than in addopts so that an environment without xdist still runs the suite.
    loadfile keeps each file on one worker, so its module fixtures and caches are computed once.
    """
    if (config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
            and config.option.numprocesses is None and config.option.dist == "no"
            and not config.option.usepdb):
        config.option.numprocesses = 2
        config.option.dist = "loadfile"
        config.option.loadscopereorder = False  # the order below, not xdist's by test count


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _slow_files_first(items)
    if config.getoption("--instrument-uri"):
        return
    skip = pytest.mark.skip(reason="needs real hardware: pass --instrument-uri URI")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def _slow_files_first(items: list[pytest.Item]) -> None:
    """Order the files by their count of slow tests, most first; each file's own order is kept.

    xdist's ``--dist loadfile`` hands whole files to its workers in this order: starting the long
    files first keeps one worker from finishing alone at the end (longest processing time first).
    """
    slow = Counter(item.path for item in items if "slow" in item.keywords)
    rank = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (-slow[item.path], rank[item.path]))


@pytest.fixture
def failing_savefig(monkeypatch):
    """Make every ``Figure.savefig`` fail as on a full disk: its target written in part, then OSError."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def broken(self, target, *args, **kwargs):
        if isinstance(target, (str, os.PathLike)):
            with open(target, "wb") as handle:
                handle.write(b"partial")
        else:
            target.write(b"partial")
        raise OSError("No space left on device")

    def install() -> None:
        monkeypatch.setattr(Figure, "savefig", broken)

    return install
