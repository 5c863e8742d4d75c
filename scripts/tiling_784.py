"""End to end with tiling: the 784-500-10 digits network programmed and checked on the default
simulated lab (64x64x8, pcb), 216 tiles; prints one JSON object (README, "Networks larger than the
array").

    python scripts/tiling_784.py --calibration cal.npz --samples 30

``cal.npz`` is ``crossbar calibrate --out cal.npz`` of the default lab. Programming is one verify
pass per tile (no pre-distortion, no closed-loop rounds or refinement: every readout vector costs
the simulator a circuit solve); ``--full`` programs with every step (``crossbar program``'s
defaults). The plan is written to ``--out`` and the first ``--samples`` held-out digits are run
through it (``run_check``: without the drift guard's probe of every tile). ``--hidden 32`` makes the
network 784-32-10 (14 tiles), to see what the full steps cost per tile.
"""

import argparse
import json
import time

from calibration import CalibrationRecord
from crossbar_ctl import open_lab
from crossbar_ctl.engine._check import run_check
from crossbar_ctl.engine._plan import PlanOptions
from crossbar_ctl.engine._program import ProgramOptions
from crossbar_ctl.engine._workflow import program_network
from crossbar_ctl.engine._zoo import digits28_mlp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--calibration", required=True, help="calibration record of the default simulated lab")
parser.add_argument("--samples", type=int, default=30, help="held-out digits checked")
parser.add_argument("--out", default="plan784.npz", help="where to write the plan")
parser.add_argument("--full", action="store_true", help="pre-distortion, closed-loop rounds and refinement")
parser.add_argument("--hidden", type=int, default=500, help="hidden units of the MLP")
args = parser.parse_args()

network = digits28_mlp(args.hidden)  # trained once with scikit-learn, then read from the user cache
record = CalibrationRecord.load(args.calibration)
x, y = network.test_x[: args.samples], network.test_y[: args.samples]
started, cpu = time.time(), time.process_time()
with open_lab() as lab:
    reduced = {} if args.full else {"plan_options": PlanOptions(predistort=False),
                                    "program_options": ProgramOptions(max_iterations=0, refine_rounds=0)}
    plan = program_network(lab, network, record, **reduced)
    programmed, programmed_cpu = time.time(), time.process_time()
    plan.save(args.out)
    report = run_check(lab, plan, x, y, nplc=4.0)  # crossbar check's default
print(json.dumps({
    "network": network.name, "steps": "full" if args.full else "one verify pass", "tiles": len(plan.header.tiles), "program_s": programmed - started, "program_cpu_s": programmed_cpu - cpu,
    "check_s": time.time() - programmed, "check_cpu_s": time.process_time() - programmed_cpu,
    "samples": report.samples, "agreement": report.agreement, "digital_accuracy": report.digital_accuracy,
    "analog_accuracy": report.analog_accuracy, "enob": [layer.enob for layer in report.layers],
    "realized_bits_median": [layer.realized_bits.median for layer in report.layers],
    "program_cost": plan.header.program.cost.model_dump(exclude={"per_board"}),
    "affine_switch_writes": plan.header.affine.switch_writes if plan.header.affine else None,
    "check_cost": report.cost.model_dump(exclude={"per_board"}),
}, indent=1))
