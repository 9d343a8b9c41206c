"""The per-cloud circuit breaker: open, half-open, closed."""

from __future__ import annotations

from typing import Any

from router.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, CircuitBreaker


def _breaker(**overrides: Any) -> CircuitBreaker:
    settings = {
        "consecutive_failures": 3,
        "error_rate": 0.5,
        "window_s": 10.0,
        "min_requests": 10,
        "cooldown_s": 5.0,
        "half_open_trials": 1,
        **overrides,
    }
    return CircuitBreaker("a", BreakerSettings(**settings))


def test_opens_after_n_consecutive_failures_and_not_before() -> None:
    breaker = _breaker()
    breaker.on_complete(0.0, ok=False)
    breaker.on_complete(0.0, ok=False)
    assert breaker.state(0.0) == CLOSED

    breaker.on_complete(0.0, ok=False)
    assert breaker.state(0.0) == OPEN
    assert not breaker.allows(0.0)


def test_a_success_resets_the_consecutive_failure_count() -> None:
    # error_rate=1.0 keeps the window rule out of the way: only the streak counts.
    breaker = _breaker(error_rate=1.0)
    for _ in range(5):
        breaker.on_complete(0.0, ok=False)
        breaker.on_complete(0.0, ok=False)
        breaker.on_complete(0.0, ok=True)

    # 10 of 15 failed, but never 3 in a row.
    assert breaker.state(0.0) == CLOSED


def test_opens_when_window_error_rate_reaches_threshold_with_enough_requests() -> None:
    breaker = _breaker(consecutive_failures=100)
    for i in range(9):
        breaker.on_complete(float(i) * 0.1, ok=i % 2 == 1)
    # 9 requests (5 failed): under min_requests=10, so still closed.
    assert breaker.state(1.0) == CLOSED

    breaker.on_complete(1.0, ok=True)
    # 10 requests, 5 failed: 5 / 10 = 50 % >= 50 %.
    assert breaker.state(1.0) == OPEN


def test_failures_older_than_the_window_are_forgotten() -> None:
    breaker = _breaker(consecutive_failures=100)
    for _ in range(5):
        breaker.on_complete(0.0, ok=False)
    for i in range(10):
        breaker.on_complete(20.0 + i * 0.1, ok=True)
    breaker.on_complete(21.0, ok=False)

    # The 5 failures at t=0 fell out of the 10 s window: 1 / 11 = 9 % < 50 %.
    assert breaker.state(21.0) == CLOSED


def test_half_opens_after_cooldown_lets_one_trial_through_and_closes_on_success() -> (
    None
):
    breaker = _breaker()
    for _ in range(3):
        breaker.on_complete(0.0, ok=False)

    assert breaker.state(4.9) == OPEN
    assert breaker.state(5.0) == HALF_OPEN
    assert breaker.allows(5.0)

    breaker.on_dispatch(5.0)
    # One trial in flight uses the single trial slot.
    assert not breaker.allows(5.1)

    breaker.on_complete(5.2, ok=True)
    assert breaker.state(5.2) == CLOSED
    assert breaker.allows(5.2)


def test_a_failed_trial_reopens_for_another_cooldown() -> None:
    breaker = _breaker()
    for _ in range(3):
        breaker.on_complete(0.0, ok=False)
    breaker.on_dispatch(5.0)
    breaker.on_complete(6.0, ok=False)

    # Reopened at t=6: half-open again at 6 + 5 = 11, not before.
    assert breaker.state(10.9) == OPEN
    assert breaker.state(11.0) == HALF_OPEN


def test_late_answers_while_open_do_not_change_the_state() -> None:
    breaker = _breaker()
    for _ in range(3):
        breaker.on_complete(0.0, ok=False)
    breaker.on_complete(1.0, ok=True)

    assert breaker.state(1.0) == OPEN
