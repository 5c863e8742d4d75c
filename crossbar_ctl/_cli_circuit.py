"""Subcommands of this area (registered by crossbar_ctl._cli)."""

from __future__ import annotations


def add_commands(commands, bench) -> None:
    """Add this area's subcommands to ``crossbar`` and ``crossbar bench``."""
