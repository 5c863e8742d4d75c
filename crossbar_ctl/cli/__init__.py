"""The ``crossbar`` command, thin over the Python API."""

from crossbar_ctl.cli._main import main

__all__ = ["main"]
