"""Why the S-matrix calibration at 0.02 V has no usable branch on pcb: ``crossbar bench calibrate``'s
weighing-design comparison (16x16x8, seed 0, single design against the S-matrix for as many
readings, at 0.5 V and 0.02 V) on the pcb board with some of its effects switched off, each given
as a ``[sim] physics`` override (docs/internals.md, "calibration/"). Run from the repository:

    python scripts/design_gain_effects.py                                   # pcb as it is
    python scripts/design_gain_effects.py '{"readout": {"adc_inl_lsb": 0, "adc_dnl_lsb": 0, "offset_fraction": 0}}'
"""

import json
import sys

from calibration._bench import design_gain
from crossbar_ctl._lab import open_lab

physics = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def factory(config):
    return open_lab(config.model_copy(update={"sim": config.sim.model_copy(update={"physics": physics})}))


for row in design_gain(factory):
    print(f"{row['design']:9s} {row['read_voltage_v']:5.2f} V  error {row['rms_error_s']:.3g} S rms  "
          f"sigma {row['median_sigma_s']:.3g} S  gain {row['gain_measured']:.2f} (theory {row['gain_theory']:.2f})")
