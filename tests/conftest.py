"""Shared test options (opt-in tests against real hardware) and fixtures."""

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--instrument-uri",
        action="append",
        default=[],
        help="URI of a real instrument (visa://..., serial://...); enables the hardware tests",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--instrument-uri"):
        return
    skip = pytest.mark.skip(reason="needs real hardware: pass --instrument-uri URI")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


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
