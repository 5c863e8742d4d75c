"""crossbar-ctl: a hardware-in-the-loop controller for resistive crossbars.

This package holds, in layers, the leaves (``core``: errors, config, files, circuit), the
subset-sum ``optimizer``, the analog MVM ``engine`` and the ``cli``, with the lab factory
(``_lab``) beside them. It stays light on import: the public names below load their modules on
first use (PEP 562), so ``drivers`` and ``calibration`` can import the leaves without a cycle and
without paying for numba.

>>> from crossbar_ctl import open_lab, solve_subset_sum   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the subpackage (or private module) that exports it.
_EXPORTS = {
    # lab factory
    "open_lab": "_lab",
    "advance_sim_time": "_lab",
    # subset-sum optimizer
    "solve_subset_sum": "optimizer",
    "SubsetSumResult": "optimizer",
    "SubsetSumStatus": "optimizer",
    "MAX_EXACT_BRANCHES": "optimizer",
    "MAX_BRANCHES": "optimizer",
    # networks
    "Network": "engine",
    "Layer": "engine",
    "Op": "engine",
    "build_network": "engine",
    "load_network": "engine",
    "save_network": "engine",
    "load_dataset": "engine",
    # plans, programming, checks
    "SwitchPlan": "engine",
    "PlanOptions": "engine",
    "ProgramRecord": "engine",
    "ArrayModel": "engine",
    "make_plan": "engine",
    "ProgramOptions": "engine",
    "program_plan": "engine",
    "CheckReport": "engine",
    "LayerCheck": "engine",
    "ErrorBudget": "engine",
    "run_check": "engine",
    "array_model": "engine",
    "program_network": "engine",
    "check_network": "engine",
    "check_drift": "engine",
    "check_lab": "engine",
    "DriftProbe": "engine",
    "probe_plan": "engine",
    "recalibrate_plan": "engine",
    "update_plan": "engine",
    "watch_plan": "engine",
    "run_demo": "engine",
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
