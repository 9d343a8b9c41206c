"""Forecaster: beats last-value on a seasonal series; bounds, clock and slots."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from router.clock import ManualClock
from router.forecast import Forecaster, ForecasterSettings

SLOT_S = 60.0
SEASON_SLOTS = 48
HORIZON_SLOTS = 5
SETTINGS = ForecasterSettings(
    slot_s=SLOT_S,
    season_s=SEASON_SLOTS * SLOT_S,
    fit_horizon_s=HORIZON_SLOTS * SLOT_S,
    confidence=0.95,
)


def _seasonal_series(seasons: int, seed: int = 7) -> list[float]:
    """A daily-like cycle between 5 and 45 req/s with Poisson counts per slot."""
    rng = random.Random(seed)
    rates = []
    for i in range(seasons * SEASON_SLOTS):
        phase = 2 * math.pi * (i % SEASON_SLOTS) / SEASON_SLOTS
        expected_rps = 25 + 20 * math.sin(phase)
        count = _poisson(rng, expected_rps * SLOT_S)
        rates.append(count / SLOT_S)
    return rates


def _poisson(rng: random.Random, mean: float) -> int:
    # Normal approximation is fine for means in the hundreds and above.
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def _score(settings: ForecasterSettings, rates: list[float], warmup: int):
    """Online h-step MAPE of the forecaster and of last-value, and bound coverage."""
    clock = ManualClock()
    forecaster = Forecaster(settings, clock)
    ours: dict[int, tuple[float, float]] = {}
    naive: dict[int, float] = {}
    errors, naive_errors, covered = [], [], 0
    for i, rate in enumerate(rates):
        if i in ours and i >= warmup:
            mean, upper = ours[i]
            errors.append(abs(rate - mean) / rate)
            naive_errors.append(abs(rate - naive[i]) / rate)
            covered += rate <= upper
        forecaster.observe(i * SLOT_S, rate)
        clock.set((i + 1) * SLOT_S)
        forecast = forecaster.forecast(HORIZON_SLOTS * SLOT_S)
        ours[i + HORIZON_SLOTS] = (forecast.mean_rps, forecast.upper_rps)
        naive[i + HORIZON_SLOTS] = rate
    n = len(errors)
    return sum(errors) / n, sum(naive_errors) / n, covered / n


@pytest.mark.parametrize("log_scale", [True, False])
def test_beats_last_value_on_a_seasonal_series(log_scale: bool) -> None:
    rates = _seasonal_series(seasons=8)
    settings = replace(SETTINGS, log_scale=log_scale)
    mape, naive_mape, _ = _score(settings, rates, warmup=2 * SEASON_SLOTS)
    # Five slots ahead on a 48-slot sine, last-value lags by 5/48 of a cycle, an
    # error of up to 20 * 2 sin(pi * 5 / 48) ~ 6.5 req/s; the seasonal model tracks
    # the cycle and is left with the Poisson noise (~ 1/sqrt(60 * 25) ~ 3 %).
    assert mape < 0.7 * naive_mape


def test_upper_bound_covers_about_the_confidence() -> None:
    rates = _seasonal_series(seasons=8, seed=11)
    _, _, coverage = _score(SETTINGS, rates, warmup=3 * SEASON_SLOTS)
    assert 0.88 <= coverage <= 1.0


def test_uses_the_season_once_two_seasons_are_seen() -> None:
    clock = ManualClock()
    forecaster = Forecaster(SETTINGS, clock)
    rates = _seasonal_series(seasons=3)
    for i, rate in enumerate(rates[: 2 * SEASON_SLOTS - 1]):
        forecaster.observe(i * SLOT_S, rate)
    assert forecaster.params is not None and forecaster.params.gamma is None
    for i in range(2 * SEASON_SLOTS - 1, len(rates)):
        forecaster.observe(i * SLOT_S, rates[i])
    assert forecaster.params is not None and forecaster.params.gamma is not None


def test_before_fitting_it_returns_last_value_bounded_by_the_recent_peak() -> None:
    forecaster = Forecaster(SETTINGS, ManualClock())
    assert forecaster.forecast(300.0).mean_rps == 0.0
    for i, rate in enumerate([4.0, 9.0, 6.0]):
        forecaster.observe(i * SLOT_S, rate)
    forecast = forecaster.forecast_steps(2)
    assert (forecast.mean_rps, forecast.upper_rps) == (6.0, 9.0)


def test_horizon_in_seconds_maps_to_the_slot_that_contains_it() -> None:
    clock = ManualClock()
    forecaster = Forecaster(SETTINGS, clock)
    rates = _seasonal_series(seasons=3)
    for i, rate in enumerate(rates):
        forecaster.observe(i * SLOT_S, rate)
    last = len(rates) - 1
    # At the end of the last slot, 300 s ahead ends 5 slots on: step 5.
    clock.set((last + 1) * SLOT_S)
    assert forecaster.forecast(300.0) == forecaster.forecast_steps(5)
    # Half a slot later, now + 300 s falls inside the sixth slot.
    clock.set((last + 1.5) * SLOT_S)
    assert forecaster.forecast(300.0).mean_rps == forecaster.forecast_steps(6).mean_rps


def test_missing_slots_are_filled_and_time_cannot_go_back() -> None:
    forecaster = Forecaster(SETTINGS, ManualClock())
    rates = _seasonal_series(seasons=3)
    for i, rate in enumerate(rates[:100]):
        forecaster.observe(i * SLOT_S, rate)
    # Slots 100..102 are missing; 103 still lands at its place in the season.
    forecaster.observe(103 * SLOT_S, rates[103])
    assert forecaster.last_slot_start_s == 103 * SLOT_S
    with pytest.raises(ValueError, match="not after the last observed slot"):
        forecaster.observe(103 * SLOT_S, 1.0)
    with pytest.raises(ValueError, match="rate_rps"):
        forecaster.observe(104 * SLOT_S, -1.0)


def test_empty_slots_keep_the_log_model_finite() -> None:
    forecaster = Forecaster(SETTINGS, ManualClock())
    for i in range(60):
        forecaster.observe(i * SLOT_S, 0.0 if i % 3 else 2.0)
    forecast = forecaster.forecast_steps(HORIZON_SLOTS)
    assert math.isfinite(forecast.upper_rps)
    assert 0.0 <= forecast.mean_rps <= forecast.upper_rps
