"""The measured refinement moves every branch of a cell where the tile's subset tables fit
(``_predistort.WINDOW_SUMS``), not a 12-branch window: above 12 branches a window left the closed
loop short of the full search (issue 12, "no cliff")."""

import crossbar_ctl.engine._predistort as predistort
import crossbar_ctl.engine._solve as solve
from crossbar_ctl.engine._predistort import WINDOW_BRANCHES, WINDOW_SUMS, window
from tests.crossbar_ctl.engine.test_refine import _program


def test_window_size_follows_the_tables_budget():
    assert len(window(16, 0, pairs=120)) == 16  # a 16x16 array's pairs: every branch
    assert len(window(16, 0, pairs=2016)) == WINDOW_BRANCHES  # the demo's 64x64 tile: a window
    assert len(window(16, 0, pairs=2016 // 4)) == 14
    assert len(window(16, 0, pairs=1, sums=0)) == WINDOW_BRANCHES  # pre-distortion's rounds
    assert WINDOW_SUMS == 2**23


def test_every_branch_moved_beats_a_window(monkeypatch):
    """10 branches a cell on the fake lab of ``test_refine`` (planned without the joint cost, as
    there), every branch moved against a 6-branch window: the 12-of-16 case in small (with the joint
    cost at 16 branches the true error was 3.3e-8 against 9.0e-8 S rms, at 3 min of a test)."""
    full, _, _ = _program(10, None, 6)
    narrow = solve.window
    monkeypatch.setattr(predistort, "WINDOW_BRANCHES", 6)
    monkeypatch.setattr(solve, "window", lambda n, r, pairs=1, sums=0: narrow(n, r, pairs, 0))
    windowed, _, _ = _program(10, None, 6)
    assert full < 0.65 * windowed  # measured 8.2e-8 against 1.57e-7 S rms (0.52)
