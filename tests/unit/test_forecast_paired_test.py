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


def test_identical_errors_give_no_evidence_and_no_division_by_zero():
    errors = [0.2, 0.3, 0.1]

    assert paired_test(errors, errors, horizon=2) == {
        "dm_statistic": 0.0,
        "dm_p_value": pytest.approx(1.0),
    }
