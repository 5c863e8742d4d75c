"""What the refinement's difference-channel probes cost: the demo's network programmed twice on one
calibration of the demo's lab (pcb, 64x64x8), single-ended then as by default, each with its CPU
and wall time, readout vectors and switch writes (README, "Realized weight precision on the pcb
board"). Run from the repository: ``python scripts/refine_cost.py``."""

import time
from importlib.resources import files

import crossbar_ctl
from calibration import calibrate
from crossbar_ctl._lab import open_lab
from crossbar_ctl.engine._network import load_network
from crossbar_ctl.engine._program import ProgramOptions
from crossbar_ctl.engine._workflow import program_network

data = files(crossbar_ctl) / "data"
network = load_network(str(data / "digits_mlp.npz"))
with open_lab(str(data / "demo_lab.toml")) as lab:
    record = calibrate(lab)
    for name, options in (("single-ended", ProgramOptions(refine_differential=False)),
                          ("difference channels (default)", ProgramOptions())):
        cpu, wall = time.process_time(), time.perf_counter()
        plan = program_network(lab, network, record, program_options=options)
        program = plan.header.program
        print(f"{name}: {time.process_time() - cpu:.1f} s CPU, {time.perf_counter() - wall:.1f} s wall, "
              f"{program.refine_readings} refinement readout vectors, {program.cost.switch_writes} switch writes")
