"""The forecast margin sized by an overload budget (router.autoscaler_bound)."""

from __future__ import annotations

import math
import random

import pytest

from router import autoscaler_bound
from router.autoscaler_bound import UpperTracker, overload_margin


def _share(errors: list[float], margin: float) -> float:
    return sum(1 - math.exp(margin - e) for e in errors if e > margin) / len(errors)


def test_one_large_error_costs_only_its_excess():
    # 99 perfect forecasts and one peak twice the forecast (log error ln 2).
    # Budget 0.002 over 100 horizons allows 0.2 of one horizon's requests above
    # capacity: 1 - e^(m - ln 2) = 0.2 gives e^m = 2 x 0.8 = 1.6, m = ln 1.6.
    errors = [0.0] * 99 + [math.log(2.0)]
    margin = overload_margin(errors, 0.002, 3.0)
    assert margin == pytest.approx(math.log(1.6))
    # A 0.99 quantile of the same errors would be the whole ln 2.
    assert margin < math.log(2.0)


def test_the_margin_meets_the_budget_exactly_when_it_binds():
    errors = [0.05 * (i % 7) - 0.1 for i in range(300)] + [0.5, 0.6, 0.9]
    for budget in (0.01, 0.001, 0.0003):
        margin = overload_margin(errors, budget, 3.0)
        assert _share(errors, margin) == pytest.approx(budget, rel=1e-9)
        # A hair less margin breaks the budget.
        assert _share(errors, margin - 1e-6) > budget


def test_no_positive_error_needs_no_margin_and_the_cap_holds():
    assert overload_margin([-0.2, -0.1, 0.0], 0.001, 3.0) == 0.0
    assert overload_margin([], 0.001, 3.0) == pytest.approx(math.log(3.0))
    # One error of e^2 (7.4x) in one horizon: 1 - e^(m - 2) <= 1e-6 needs m ~ 2,
    # past the cap of 3x.
    assert overload_margin([2.0], 1e-6, 3.0) == pytest.approx(math.log(3.0))


def _tracker(**changes) -> UpperTracker:
    """One-minute slots, horizon 1, a 0.99 quantile; no cap and no peak memory in
    the way, so upper_rps shows the margin alone."""
    settings = {
        "slot_s": 60.0,
        "horizon_slots": 1,
        "confidence": 0.99,
        "max_multiple": 3.0,
        "cap_multiple": 10.0,
        "peak_window_s": 10.0,
        "peak_memory_s": 0.0,
    }
    return UpperTracker(**{**settings, **changes})


def test_tracker_uses_the_budget_in_place_of_the_quantile():
    by_quantile, by_budget = _tracker(), _tracker(overload_budget=0.002)
    # Forecast 100 req/s every slot; 99 slots come in at 100, one at 200.
    rates = [100.0] * 50 + [200.0] + [100.0] * 50
    for t in (by_quantile, by_budget):
        for rate in rates:
            t.close_slot(rate, 100.0)
    # Errors are log((rate + 1/60) / (100 + 1/60)); the quantile takes the
    # largest (about 2x), the budget about 1.6x (see the first test).
    assert by_quantile.upper_rps(0.0, 100.0, 0.0) == pytest.approx(200.0, rel=1e-3)
    assert by_budget.upper_rps(0.0, 100.0, 0.0) == pytest.approx(160.0, rel=1e-2)


def test_the_margin_window_takes_the_errors_of_this_time_of_day():
    # A "day" of 100 slots, horizon 1: the forecast is 100 req/s every slot and
    # traffic comes in at 100, except a ramp to 300 in slots 40-49 of each day.
    def tracker(window):
        return _tracker(max_multiple=5.0, season_slots=100, margin_window_slots=window)

    def day():
        return [300.0 if 40 <= i < 50 else 100.0 for i in range(100)]

    whole, windowed = tracker(None), tracker(15)
    for t in (whole, windowed):
        for rate in day() + day() + day()[:10]:
            t.close_slot(rate, 100.0)
    # 210 slots closed: the next horizon is slot 211, position 11 of the day. Its
    # window (positions 96-26) holds no ramp, so no margin; the whole day's
    # errors hold 20 ramp slots of 209 (about 10 %), so the 0.99 quantile is 3x.
    assert windowed.upper_rps(0.0, 100.0, 0.0) == pytest.approx(100.0, rel=1e-3)
    assert whole.upper_rps(0.0, 100.0, 0.0) == pytest.approx(300.0, rel=1e-3)
    # Nearer the ramp (position 36: window 21-51) the ramp counts again.
    for rate in day()[10:35]:
        windowed.close_slot(rate, 100.0)
    assert windowed.upper_rps(0.0, 100.0, 0.0) == pytest.approx(300.0, rel=1e-3)


def test_a_handful_of_requests_a_slot_is_not_taken_for_a_peak(monkeypatch):
    # Two-second slots, a five-slot horizon, traffic at a constant 4 req/s: about
    # eight requests a slot, so single slots swing by a third around the mean.
    def upper_after_constant_traffic(mean_per_slot: float) -> float:
        rng = random.Random(7)
        tracker = _tracker(slot_s=2.0, horizon_slots=5, confidence=0.95)
        rate = mean_per_slot / 2.0
        for _ in range(400):
            tracker.close_slot(_poisson(rng, mean_per_slot) / 2.0, rate)
        return tracker.upper_rps(0.0, rate, 0.0) / rate

    # Windows of the whole horizon (~40 requests, fewer than MIN_PEAK_REQUESTS):
    # the margin is the spread of the rate's estimate, ~1.25x (1.42x when windows
    # needed only 25 requests).
    assert upper_after_constant_traffic(8.0) < 1.3
    # Hundreds of requests a slot: single slots, as before, and little noise.
    assert upper_after_constant_traffic(800.0) < 1.1
    # The highest single slot would have asked for ~1.75x.
    monkeypatch.setattr(autoscaler_bound, "MIN_PEAK_REQUESTS", 1e-9)
    assert upper_after_constant_traffic(8.0) > 1.7


def test_a_noisy_forecast_of_a_few_requests_is_not_taken_for_its_error():
    # One request a second in two-second slots, and a forecast that follows the
    # slots' noise (as a level fitted to them does): the realised rate over the
    # horizon (ten requests) and the forecast both swing by ~30%, at a constant
    # rate that the queueing model already sizes for. Errors at fewer than
    # MIN_PEAK_REQUESTS a horizon count as absolute: the upper bound stays below
    # 2x (it was 2.3x when they counted as ratios with a one-request offset).
    rng = random.Random(5)
    tracker = _tracker(slot_s=2.0, horizon_slots=5, confidence=0.95)
    level = 1.0
    for _ in range(300):
        rate = _poisson(rng, 2.0) / 2.0
        level += 0.5 * (rate - level)
        tracker.close_slot(rate, level)
    assert tracker.upper_rps(0.0, 1.0, 0.0) < 2.0


def test_a_real_peak_inside_the_horizon_still_counts_with_few_requests():
    tracker = _tracker(slot_s=2.0, horizon_slots=5, confidence=0.95)
    # Forecast 4 req/s; every fifth horizon a burst at 5x lasting four slots.
    for i in range(400):
        rate = 20.0 if i % 25 < 4 else 4.0
        tracker.close_slot(rate, 4.0)
    assert tracker.upper_rps(0.0, 4.0, 0.0) > 4.0 * 2.5


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method for small means, a normal approximation for large ones."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def test_before_the_margin_is_learnt_the_largest_error_stands_in():
    # Confidence 0.95: the largest of n errors stands for it once n / (n + 1) >=
    # 0.95, i.e. from 19 errors; with fewer, the forecaster's own bound is used.
    tracker = _tracker(confidence=0.95)
    forecaster_upper = 500.0
    # Horizon 1: the first slot closed has no forecast issued for it, so 18
    # slots give 17 errors, one of them log(110 / 100).
    for rate in [100.0, 110.0] + [100.0] * 16:
        tracker.close_slot(rate, 100.0)
    assert tracker.upper_rps(0.0, 100.0, forecaster_upper) == forecaster_upper
    tracker.close_slot(100.0, 100.0)
    tracker.close_slot(100.0, 100.0)
    # 19 errors (thousands of requests a minute slot: ratios), the largest 1.1x.
    assert tracker.upper_rps(0.0, 100.0, forecaster_upper) == pytest.approx(
        110.0, rel=1e-3
    )
