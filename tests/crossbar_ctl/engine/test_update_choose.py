"""program --update's choice of pairs: a rewritten pair comes back to the fresh plan's error, not
below it, and the update's own reading of a pair it just rewrote does not count."""

from __future__ import annotations

import numpy as np

from crossbar_ctl.engine._update import choose_pairs


def test_a_rewritten_pair_counts_toward_the_median_as_often_as_fresh_pairs_were_within_its_goal():
    rng = np.random.default_rng(3)
    n, median = 100, 1.0
    threshold = median * 2.0**0.1  # the median's goal at goal_bits 0.1, no read noise
    error = np.concatenate([rng.uniform(0.0, 0.9 * threshold, 30), rng.uniform(1.5, 3.0, 70)])
    # fresh pairs: 60 % within the goal's threshold
    fresh = np.concatenate([np.full(60, 0.5 * threshold), np.full(40, 2.0 * threshold)])
    rms = float(np.sqrt(np.mean(error**2)))  # the rms is already within its goal: the median decides
    assert choose_pairs(error, median, rms, goal_bits=0.1).sum() == 20  # each rewritten pair assumed back within
    picked = choose_pairs(error, median, rms, goal_bits=0.1, fresh_s=fresh)
    assert picked.sum() == 34  # 30 + 0.6 k >= 50
    assert error[picked].min() >= error[~picked].max()  # worst first
    # the pairs already rewritten read low now, but count as rewritten pairs, not as within
    settled = np.zeros(n, bool)
    settled[np.argsort(-error)[:20]] = True
    read_low = np.where(settled, 0.1 * threshold, error)
    assert choose_pairs(read_low, median, rms, goal_bits=0.1, fresh_s=fresh).sum() == 0
    again = choose_pairs(read_low, median, rms, goal_bits=0.1, fresh_s=fresh, settled=settled)
    assert not (again & settled).any() and (again | settled).sum() == 34  # 14 more, the worst of the rest
    # fresh pairs never within half the time: every pair is rewritten, and it still cannot be reached
    assert choose_pairs(error, median, rms, goal_bits=0.1, fresh_s=np.full(100, 2.0)).all()
