"""Forecaster: beats last-value on seasonal series and random walks; bounds, slots."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from router.clock import ManualClock
from router.forecast import Forecaster, ForecasterSettings
from router.forecast_holt_winters import fit_params

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


WALK_SLOT_S = 30.0
WALK_HORIZON_SLOTS = 10
WALK_SETTINGS = ForecasterSettings(
    slot_s=WALK_SLOT_S, season_s=None, fit_horizon_s=WALK_HORIZON_SLOTS * WALK_SLOT_S
)


def _random_walk(seed: int, slots: int, drift: float) -> list[float]:
    """Log-rate random walk near 5 req/s with Poisson counts in 30 s slots.

    A non-zero `drift` adds a trend whose sign flips every 40 slots: trends that
    do not last, which a fitted trend extrapolates past their end.
    """
    rng = random.Random(seed)
    log_rps = math.log(5.0)
    rates = []
    for i in range(slots):
        log_rps += rng.gauss(0, 0.03) + (drift if (i // 40) % 2 == 0 else -drift)
        rates.append(_poisson(rng, math.exp(log_rps) * WALK_SLOT_S) / WALK_SLOT_S)
    return rates


def _walk_errors(rates: list[float], warmup: int = 30) -> tuple[float, float]:
    """Summed h-step absolute percentage errors of the forecaster and last-value."""
    clock = ManualClock()
    forecaster = Forecaster(WALK_SETTINGS, clock)
    horizon_s = WALK_HORIZON_SLOTS * WALK_SLOT_S
    ours: dict[int, float] = {}
    naive: dict[int, float] = {}
    error = naive_error = 0.0
    for i, rate in enumerate(rates):
        if i in ours and i >= warmup:
            error += abs(rate - ours[i]) / rate
            naive_error += abs(rate - naive[i]) / rate
        forecaster.observe(i * WALK_SLOT_S, rate)
        clock.set((i + 1) * WALK_SLOT_S)
        ours[i + WALK_HORIZON_SLOTS] = forecaster.forecast(horizon_s).mean_rps
        naive[i + WALK_HORIZON_SLOTS] = rate
    return error, naive_error


@pytest.mark.parametrize("drift", [0.0, 0.01])
def test_on_short_random_walks_it_is_no_worse_than_last_value(drift: float) -> None:
    # One hour of 30 s slots, scored 10 slots ahead after 15 minutes: 80 errors a
    # walk, only ~8 of them independent, so a single walk's MAPE ratio is noisy
    # (+-10 %); pooled over 10 walks the ratio is steady. Last value is the best
    # forecast of a pure random walk up to the Poisson noise (~ 1/sqrt(150) ~ 8 %
    # a slot), which smoothing the level can shave; a fitted trend or a smoothing
    # fitted to a few noisy errors makes it worse. Measured when written: pooled
    # ratio 0.94 (pure walk, worst walk 1.02) and 1.00 (flipping trends); the
    # forecaster before the one-standard-error rule and the combination with the
    # last value gave 0.96 (worst walk 1.10) and 1.06.
    pairs = [_walk_errors(_random_walk(seed, 120, drift)) for seed in range(10)]
    pooled_ratio = sum(e for e, _ in pairs) / sum(n for _, n in pairs)
    assert pooled_ratio <= 1.02
    if drift == 0.0:
        assert max(e / n for e, n in pairs) <= 1.05


def test_short_noisy_history_fits_no_trend_but_a_clear_ramp_keeps_one() -> None:
    # 40 slots of a log random walk (steps 0.03) plus noise (0.08), 10 slots ahead:
    # ~3 independent errors cannot show a trend; the one-standard-error rule keeps
    # the level model. Before the rule 7 of these 10 fits chose beta > 0.
    # A ramp of 0.05 a slot with noise 0.02 moves 0.5 over the horizon, 25 times
    # the noise: the trend clearly pays.
    for seed in range(10):
        rng = random.Random(seed)
        level, walk = 0.0, []
        for _ in range(40):
            level += rng.gauss(0, 0.03)
            walk.append(level + rng.gauss(0, 0.08))
        assert fit_params(walk, 0, None, 10, None, 0.98).beta == 0.0
        ramp = [0.05 * i + rng.gauss(0, 0.02) for i in range(40)]
        assert fit_params(ramp, 0, None, 10, None, 0.98).beta > 0.0


def test_combination_weight_goes_to_holt_winters_where_it_is_clearly_better() -> None:
    clock = ManualClock()
    forecaster = Forecaster(SETTINGS, clock)
    assert forecaster.holt_winters_weight == 0.0  # not fitted: the last value
    rates = _seasonal_series(seasons=6)
    for i, rate in enumerate(rates):
        forecaster.observe(i * SLOT_S, rate)
        if i == SETTINGS.min_fit_slots:
            # Fitted, but fewer than 20 of its forecasts scored: equal weights.
            assert forecaster.holt_winters_weight == 0.5
    # Five slots ahead on a 48-slot sine the last value is off by up to ~6.5 req/s
    # (~25 % of the rate) against ~3 % of Poisson noise for the seasonal model:
    # with e_l >> e_h, w = sum(e_l^2 - e_h e_l) / sum((e_h - e_l)^2) ~ 1.
    assert forecaster.holt_winters_weight > 0.99
    plain = Forecaster(replace(SETTINGS, combine_with_last_value=False), clock)
    for i, rate in enumerate(rates[:60]):
        plain.observe(i * SLOT_S, rate)
    assert plain.holt_winters_weight == 1.0
