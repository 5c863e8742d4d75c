"""Property tests: every invalid value raises LimitError and sends nothing; valid ones pass through
exactly (no clipping); ramps never step further than ramp_step_v."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crossbar_ctl.core.config import Limits
from crossbar_ctl.core.errors import LimitError
from drivers import SafetyGuard, ramp_steps_v
from tests.drivers.scripted import NO_ERROR, connect_2400, connect_2450
from tests.drivers.test_board_replay import connect_board, connect_matrix

LIMITS = Limits(max_voltage_v=1.0, max_current_a=1e-3, max_power_w=0.01, ramp_step_v=0.5)
GUARD = SafetyGuard(LIMITS, min_resistance_ohm=1e3)   # 1 V^2 / 1 kohm = 1 mW < 10 mW
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                     st.text(max_size=3), st.none(), st.booleans())


def _refused(call, transport):
    sent = len(transport.sent)
    try:
        call()
    except LimitError:
        assert len(transport.sent) == sent, "a refused value sent bytes"
        return True
    return False


@settings(max_examples=150, deadline=None)
@given(value=anything)
def test_source_voltage_is_valid_or_refused_silently(value):
    smu, t = connect_2450()
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and abs(value) <= 1.0
    if valid:
        t.extend([(f":SOUR:VOLT {format(float(value), '.10g')}", None), NO_ERROR])
        smu.set_source_voltage_v(value)
        assert smu.level_v == float(value)           # exactly what was asked: never clipped
        t.assert_done()
    else:
        assert _refused(lambda: smu.set_source_voltage_v(value), t)


@settings(max_examples=100, deadline=None)
@given(value=anything)
def test_compliance_is_valid_or_refused_silently(value):
    smu, t = connect_2400()
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 1e-9 <= value <= 1e-3
    if valid:
        t.extend([(f":SENS:CURR:PROT {format(float(value), '.10g')}", None), NO_ERROR])
        smu.set_compliance_current_a(value)
        t.assert_done()
    else:
        assert _refused(lambda: smu.set_compliance_current_a(value), t)


@settings(max_examples=100, deadline=None)
@given(value=anything)
def test_nplc_is_valid_or_refused_silently(value):
    smu, t = connect_2450()
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.01 <= value <= 10
    if valid:
        t.extend([(f":SENS:CURR:NPLC {format(float(value), '.10g')}", None), NO_ERROR])
        smu.set_nplc(value)
        t.assert_done()
    else:
        assert _refused(lambda: smu.set_nplc(value), t)


@settings(max_examples=100, deadline=None)
@given(voltages=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_any_bad_point_refuses_the_whole_sweep(voltages):
    array = np.asarray(voltages)
    assume(not (np.all(np.isfinite(array)) and np.all(np.abs(array) <= 1.0)))
    smu, t = connect_2450()
    assert _refused(lambda: smu.sweep_voltages_v(voltages), t)


@settings(max_examples=150, deadline=None)
@given(row=st.integers(-5, 10), col=st.integers(-5, 10), mask=st.integers(-5, 40))
def test_board_cell_values_are_valid_or_refused_silently(row, col, mask):
    board, t = connect_board()                      # 2 x 3 cells, 4 branches
    if 0 <= row < 2 and 0 <= col < 3 and 0 <= mask < 16:
        t.extend([(f"SET {row} {col} {mask:x}", "OK")])
        board.set_mask(row, col, mask)
        t.assert_done()
    else:
        assert _refused(lambda: board.set_mask(row, col, mask), t)


@settings(max_examples=100, deadline=None)
@given(inp=st.integers(-2, 13), out=st.integers(-2, 25))
def test_matrix_channels_are_valid_or_refused_silently(inp, out):
    matrix, t = connect_matrix()                    # 10 inputs, 20 outputs
    if 1 <= inp <= 10 and 1 <= out <= 20:
        t.extend([(f":ROUT:CLOS (@0{inp:02d}{out:02d})", None), NO_ERROR])
        matrix.close_channels([(inp, out)])
        t.assert_done()
    else:
        assert _refused(lambda: matrix.close_channels([(inp, out)]), t)


@settings(deadline=None)  # up to 400,000 steps: over hypothesis's 200 ms at load 6
@given(start=st.floats(-200, 200), stop=st.floats(-200, 200), step=st.floats(1e-3, 50))
def test_ramps_reach_the_target_in_bounded_steps(start, stop, step):
    levels = ramp_steps_v(start, stop, step)
    assert levels[-1] == stop or math.isclose(levels[-1], stop, abs_tol=1e-9)
    previous = start
    for level in levels:
        assert abs(level - previous) <= step * (1 + 1e-9)
        previous = level


@given(voltage=st.floats(-1.0, 1.0), resistance=st.floats(1.0, 1e6))
def test_power_limit(voltage, resistance):
    guard = SafetyGuard(LIMITS, min_resistance_ohm=resistance)
    if voltage * voltage / resistance > LIMITS.max_power_w:
        try:
            guard.voltage_v(voltage)
        except LimitError as exc:
            assert exc.limit == "max_power_w"
        else:
            raise AssertionError("power limit not enforced")
    else:
        assert guard.voltage_v(voltage) == voltage


@settings(max_examples=200, deadline=None)
@given(requested=st.lists(st.floats(-1, 1), min_size=1, max_size=60), start=st.floats(-1, 1),
       step=st.floats(0.1, 2.5), max_points=st.integers(50, 120))  # a ramp fits in 50
def test_sweep_plans_ramp_fit_and_keep_every_requested_point(requested, start, step, max_points):
    from drivers._smu import _plan_sweep

    plan = _plan_sweep(np.asarray(requested), start, step, max_points)
    kept = []
    for points, keep in plan:
        assert len(points) <= max_points
        assert points[0] == start and points[-1] == pytest.approx(start)
        assert np.all(np.abs(np.diff(points)) <= step * (1 + 1e-9))
        kept.extend(points[keep])
    np.testing.assert_array_equal(kept, requested)
