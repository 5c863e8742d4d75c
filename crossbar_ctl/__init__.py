"""crossbar-ctl: a hardware-in-the-loop controller for resistive crossbars.

This package holds the leaves (``errors``, ``config``, ``files``, ``circuit``), the subset-sum
optimizer, the lab factory, the analog MVM engine and the ``crossbar`` command. It stays light on
import: the public names below load their modules on first use (PEP 562), so ``drivers`` and
``calibration`` can import the leaves without a cycle and without paying for numba.

>>> from crossbar_ctl import open_lab, solve_subset_sum   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> private module that defines it.
_EXPORTS = {
    # lab factory
    "open_lab": "_lab",
    # subset-sum optimizer
    "solve_subset_sum": "_optimizer",
    "SubsetSumResult": "_optimizer",
    "SubsetSumStatus": "_optimizer",
    "MAX_EXACT_BRANCHES": "_optimizer",
    "MAX_BRANCHES": "_optimizer",
    # networks
    "Network": "_network",
    "Layer": "_network",
    "build_network": "_network",
    "load_network": "_network",
    "save_network": "_network",
    "load_dataset": "_network",
    # plans, programming, checks
    "SwitchPlan": "_plan",
    "PlanOptions": "_plan",
    "ProgramRecord": "_plan",
    "ArrayModel": "_plan",
    "make_plan": "_plan",
    "ProgramOptions": "_program",
    "program_plan": "_program",
    "CheckReport": "_check",
    "LayerCheck": "_check",
    "ErrorBudget": "_check",
    "run_check": "_check",
    "array_model": "_engine",
    "program_network": "_engine",
    "check_network": "_engine",
    "check_drift": "_engine",
    "check_lab": "_engine",
    "run_demo": "_demo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossbar_ctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"crossbar_ctl.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
