"""The analog MVM engine: networks, mapping, plans, pre-distortion, programming, checks, demo."""

from crossbar_ctl.engine._affine import AffineRecord, measure_affine
from crossbar_ctl.engine._check import CheckReport, ErrorBudget, LayerCheck, run_check
from crossbar_ctl.engine._datasets import Dataset, load_data
from crossbar_ctl.engine._demo import run_demo
from crossbar_ctl.engine._guard import DriftProbe, guard_plan, probe_plan
from crossbar_ctl.engine._network import (
    Layer,
    Network,
    Op,
    build_network,
    load_dataset,
    load_network,
    save_network,
)
from crossbar_ctl.engine._lottery import TrainOptions, TrainResult, program_trained, train_dense, train_masks
from crossbar_ctl.engine._mapping import ArrayModel
from crossbar_ctl.engine._plan import PlanOptions, ProgramRecord, SwitchPlan, make_plan
from crossbar_ctl.engine._program import ProgramOptions, program_plan
from crossbar_ctl.engine._update import UpdateReport, recalibrate_plan, update_plan
from crossbar_ctl.engine._watch import watch_plan
from crossbar_ctl.engine._workflow import (
    array_model,
    check_drift,
    check_lab,
    check_network,
    program_network,
)

__all__ = [
    "AffineRecord", "ArrayModel", "CheckReport", "Dataset", "DriftProbe", "ErrorBudget", "Layer", "LayerCheck", "Network", "Op",
    "PlanOptions", "ProgramOptions", "ProgramRecord", "SwitchPlan", "TrainOptions", "TrainResult", "UpdateReport",
    "array_model", "build_network", "check_drift", "check_lab", "check_network", "guard_plan", "load_data",
    "load_dataset", "load_network", "make_plan", "measure_affine", "probe_plan", "program_network", "program_plan", "program_trained",
    "recalibrate_plan", "run_check", "run_demo", "save_network", "train_dense", "train_masks", "update_plan", "watch_plan",
]
