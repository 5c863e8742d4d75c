"""Shared test options: opt-in tests against real hardware."""

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
