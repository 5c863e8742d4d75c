"""Plan options: the common-mode joint cost is the one common-mode mechanism, on by default."""

import pytest
from pydantic import ValidationError

from crossbar_ctl.engine._plan import COMMON_MODE_WEIGHT, PlanOptions


def test_plans_written_with_the_old_common_mode_window_load():
    """``common_mode_sigmas`` (the window the joint cost replaced) is dropped on load; the plan's
    own ``common_mode_weight`` is kept, and any other unknown key is still refused."""
    old = PlanOptions.model_validate({"common_mode_sigmas": 1.0, "common_mode_weight": 0.0})
    assert old == PlanOptions(common_mode_weight=0.0)
    assert PlanOptions.model_validate({"common_mode_sigmas": 0.0}).common_mode_weight == COMMON_MODE_WEIGHT > 0
    with pytest.raises(ValidationError, match="common_mode_sigma"):
        PlanOptions.model_validate({"common_mode_sigma": 1.0})
