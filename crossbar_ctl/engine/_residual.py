"""The residual plan: each weight's measured error, programmed on the same cells at its own scale.

A programmed plan's pairs miss their targets by what the closed loop could not land (12.4-12.8 bits
of max|w| median on the demo), and the loop's last measurement sees nearly all of it. The residual
plan maps that measured residual (target less measured, weight units) as a network of its own: the
same tiles, each pair's cells given a second configuration at a scale 500-1,000 times the plan's
(:func:`crossbar_ctl.engine._mapping.choose_scale` on the residual's max), programmed with the
verify loop alone (its own error, 2^-8 of the residual's, is below 2^-17 of the weights').
``check`` loads both configurations in turn and adds their outputs: multi-device compensation
(Song et al., Science 383:903, 2024), a second device programmed with the first one's error. The
sum misses the targets by the loop's measurement error instead of its landing, and it costs each
inference a second load and reading of every tile.

The main plan's affine correction then maps each tile's readings to what the loop measured
(:func:`crossbar_ctl.engine._affine.expected_s`), not to the targets: the residual plan carries
the difference, and a correction fitted to the targets would take each output's gain error out a
second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._mapping import pair_transfer
from crossbar_ctl.engine._network import Network
from crossbar_ctl.engine._plan import COMMON_MODE_WEIGHT, ArrayModel, PlanOptions, SwitchPlan, make_plan

if TYPE_CHECKING:
    from crossbar_ctl.engine._program import ProgramOptions
    from crossbar_ctl.engine._solve import Solver
    from drivers import Lab

__all__ = ["RESIDUAL_COMMON_MODE_WEIGHT", "plan_options_for", "program_residual", "residual_network"]

RESIDUAL_COMMON_MODE_WEIGHT = 3e-4
"""The joint cost's weight for a plan programmed with its residual (``crossbar program --residual``
and the demo; :data:`crossbar_ctl.engine._plan.COMMON_MODE_WEIGHT` without): the residual plan
takes up the error the main plan gives up for a smaller ``G+ + G-``, and a smaller common mode lets
the rows rise where the total-current limit binds. Demo, three noise realizations (``crossbar demo
--noise-seed S``, S = the lab's, 1, 2): layer 0's enob 11.06 / 11.01 / 11.04 against 10.90 / 10.91 /
10.96 at 3e-5; layer 1's 11.57 / 11.52 / 11.61 against 11.52 / 11.48 / 11.55."""


def plan_options_for(options: ProgramOptions | None) -> PlanOptions:
    """The default plan options for a plan programmed with ``options``: the joint cost at
    :data:`RESIDUAL_COMMON_MODE_WEIGHT` with the residual plan, at its plain weight without."""
    residual = options is not None and options.residual
    return PlanOptions(common_mode_weight=RESIDUAL_COMMON_MODE_WEIGHT if residual else COMMON_MODE_WEIGHT)


def residual_network(plan: SwitchPlan) -> Network:
    """The programmed plan's measured residual, target less measured pair transfer, as a network of
    the plan's shapes (weight units; the bias row's residual as a bias). A layer of zeros has none:
    it closes nothing and is exact, and its measurement is only read noise.

    Raises
    ------
    EngineError
        The plan was not programmed (no measured transfers).
    """
    network = plan.network()
    weights, biases = [], []
    for layer, lp in zip(network.layers, plan.header.layers):
        augmented = np.zeros((layer.matrix.shape[1] + 1, layer.matrix.shape[0]))
        exact = not (np.any(layer.matrix) or np.any(layer.bias))
        for t in () if exact else lp.tiles:
            if f"tile{t}.measured_s" not in plan.arrays:
                raise EngineError("the residual plan needs a programmed plan (its measured transfers); "
                                  "program the plan first")
            tile = plan.header.tiles[t].tile
            measured = pair_transfer(plan.tile(t, "measured_s"))
            augmented[tile.inputs, tile.outputs] = (plan.tile(t, "target_s") - measured) / lp.conductance_per_weight_s
        weights.append(augmented[:-1].T.reshape(layer.weight.shape))
        biases.append(augmented[-1] * lp.bias_input)
    return plan.network(weights, biases, name=f"{network.name} residual")


def program_residual(labs: Sequence[Lab], plan: SwitchPlan, models: Sequence[ArrayModel], options: ProgramOptions,
                     solver: Solver | None = None) -> SwitchPlan:
    """Map, solve and program the residual of a programmed plan (:func:`residual_network`) on the
    same tiles; the residual plan, programmed with ``options`` less the refinement, its own affine
    correction measured.

    Raises
    ------
    EngineError
        The plan was not programmed, or the residual's tiles would not be the plan's.
    """
    from crossbar_ctl.engine._program import program_plan

    network = residual_network(plan)
    plan_options = plan.header.options.model_copy(update={"conductance_per_weight_s": None})
    residual = make_plan(network, list(models), options=plan_options, solver=solver)
    if residual.tiles() != plan.tiles():
        raise EngineError("the residual plan's tiles differ from the plan's; program the plan again")
    residual_options = options.model_copy(update={"residual": False, "refine_rounds": 0, "refine_tail_rounds": 0})
    return program_plan(list(labs), residual, list(models), options=residual_options, solver=solver, guard_budget=False)
