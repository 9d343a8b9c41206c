"""The hindsight schedule of benchmarks/simulation_gap.py: what the lead costs."""

from __future__ import annotations

import numpy as np

from benchmarks.simulation_gap import STEP_S, billed_replica_s


def test_each_replica_pays_the_lead_once_per_run():
    # Two replicas for 4 steps, then one for 2: the second replica's run is
    # 4 steps and the first's 6, each launched one lead earlier.
    count = np.array([2, 2, 2, 2, 1, 1])
    assert billed_replica_s(count, lead_s=30.0) == (6 + 4) * STEP_S + 2 * 30.0
    assert billed_replica_s(count, lead_s=0.0) == 10 * STEP_S


def test_a_gap_shorter_than_the_lead_is_kept_billed():
    # One replica, idle for two steps between runs: with a 3-step lead keeping
    # it (2 idle steps) is cheaper than a second launch (another lead).
    count = np.array([1, 0, 0, 1])
    assert billed_replica_s(count, lead_s=3 * STEP_S) == 4 * STEP_S + 3 * STEP_S
    # With a 1-step lead, leaving and coming back is cheaper.
    assert billed_replica_s(count, lead_s=STEP_S) == 2 * STEP_S + 2 * STEP_S
    assert billed_replica_s(np.zeros(3, dtype=int), lead_s=60.0) == 0.0
