"""PhysicalArray.column_current_a: the kept solutions and unit responses give what solve gives."""

import numpy as np
import pytest

from sim._array import _UNITS_AFTER, PhysicalArray


def _array(profile: str = "pcb") -> PhysicalArray:
    array = PhysicalArray({"rows": 12, "cols": 10, "branches": 4, "seed": 3, "profile": profile})
    array.set_masks(np.random.default_rng(1).integers(0, 16, (12, 10)).astype(np.uint64))
    return array


def _reference(array: PhysicalArray, vr, start_s=None) -> np.ndarray:
    circuit = array.circuit()
    return array.solve(circuit, vr[None], start_s=start_s, duration_s=1 / 60).col_current_a[0]


@pytest.mark.parametrize("profile", ["pcb", "ideal"])
def test_kept_and_unit_responses_match_solve(profile):
    array = _array(profile)
    drives = np.random.default_rng(2).uniform(-0.2, 0.2, (_UNITS_AFTER + 6, array.rows))
    # Repeated vectors (kept), then enough new ones that the unit responses answer; while the
    # switches still settle (just written) and after.
    for start_s in (array.now_s(), array.settled_s() + 1.0):
        for vr in np.concatenate([drives[:3], drives[:3], drives]):
            got = array.column_current_a(array.circuit(), vr, start_s=start_s, duration_s=1 / 60)
            want = _reference(array, vr, start_s)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    assert array._responses[array.circuit()].units is not None


def test_state_changes_drop_what_was_kept():
    array = _array()
    drives = np.random.default_rng(4).uniform(-0.2, 0.2, (_UNITS_AFTER + 2, array.rows))
    for vr in drives:
        array.column_current_a(array.circuit(), vr)
    vr = drives[0]
    for change in (lambda: array.set_mask(0, 0, 15), lambda: array.advance_time(3600.0),
                   lambda: setattr(array, "temperature_c", array.temperature_c + 10.0)):
        before = array.column_current_a(array.circuit(), vr)
        change()
        after = array.column_current_a(array.circuit(), vr)
        assert not np.allclose(after, before, rtol=1e-9, atol=0)
        np.testing.assert_allclose(after, _reference(array, vr), rtol=1e-9)
