"""The paired test of benchmarks/forecast_accuracy.py: chance against a real gap."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.forecast_accuracy import paired_test


def test_a_steady_gap_is_told_apart_from_chance():
    rng = np.random.default_rng(3)
    naive = list(rng.uniform(0.1, 0.5, 400))
    ours = [e - 0.05 + rng.normal(0, 0.05) for e in naive]

    result = paired_test(ours, naive, horizon=5)

    assert result["dm_statistic"] < 0  # ours better
    assert result["dm_p_value"] < 0.001


def test_two_equally_good_forecasts_are_not():
    rng = np.random.default_rng(4)
    naive = list(rng.uniform(0.1, 0.5, 400))
    ours = [e + rng.normal(0, 0.05) for e in naive]

    assert paired_test(ours, naive, horizon=5)["dm_p_value"] > 0.05


def test_the_statistic_matches_a_hand_computation_at_a_two_slot_horizon():
    # d = [-0.1, 0.1, -0.3, -0.1]: mean -0.1; centred [0, 0.2, -0.2, 0];
    # gamma0 = 0.08 / 4 = 0.02, gamma1 = (0 - 0.04 + 0) / 4 = -0.01; the long-run
    # variance 0.02 + 2 x -0.01 = 0 falls back to gamma0: DM = -0.1 / sqrt(0.02/4)
    # and the small-sample factor sqrt((4 + 1 - 4 + 2/4) / 4).
    naive = [0.3, 0.2, 0.5, 0.4]
    ours = [0.2, 0.3, 0.2, 0.3]

    result = paired_test(ours, naive, horizon=2)

    expected = -0.1 / (0.02 / 4) ** 0.5 * (1.5 / 4) ** 0.5
    assert result["dm_statistic"] == pytest.approx(expected)
    assert 0 < result["dm_p_value"] < 1


def test_identical_errors_give_no_evidence_and_no_division_by_zero():
    errors = [0.2, 0.3, 0.1]

    result = paired_test(errors, errors, horizon=2)

    assert result["dm_statistic"] == 0.0
    assert result["dm_p_value"] == pytest.approx(1.0)


def test_too_few_or_unvarying_differences_give_no_verdict():
    assert paired_test([0.2], [0.3], horizon=1)["dm_p_value"] is None
    steady = paired_test([0.1, 0.2, 0.3], [0.2, 0.3, 0.4], horizon=1)
    assert steady["dm_statistic"] is None
    assert steady["dm_p_value"] is None
