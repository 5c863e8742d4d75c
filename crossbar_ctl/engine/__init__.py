"""The analog MVM engine: networks, mapping, plans, pre-distortion, programming, checks, demo."""

from crossbar_ctl.engine._check import CheckReport, ErrorBudget, LayerCheck, run_check
from crossbar_ctl.engine._demo import run_demo
from crossbar_ctl.engine._network import (
    Layer,
    Network,
    Op,
    build_network,
    load_dataset,
    load_network,
    save_network,
)
from crossbar_ctl.engine._mapping import ArrayModel
from crossbar_ctl.engine._plan import PlanOptions, ProgramRecord, SwitchPlan, make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.engine._workflow import (
    array_model,
    check_drift,
    check_lab,
    check_network,
    program_network,
)

__all__ = [
    "ArrayModel", "CheckReport", "ErrorBudget", "Layer", "LayerCheck", "Network", "Op",
    "PlanOptions", "ProgramOptions", "ProgramRecord", "SwitchPlan", "array_model", "build_network",
    "check_drift", "check_lab", "check_network", "load_dataset", "load_network", "make_plan",
    "program_network", "program_plan", "run_check", "run_demo", "save_network",
]
