"""The waiting-time model against a simulated queue with constant service times."""

from __future__ import annotations

import heapq
import random

import pytest

from router import queueing

SERVICE_S = 0.05


def _simulated_exceed(
    servers: int, arrival_rps: float, wait_s: float, arrivals: int = 200_000
) -> float:
    """P(wait > wait_s) in an M/D/c FIFO queue with SERVICE_S per request."""
    rng = random.Random(7)
    free_at = [0.0] * servers
    now_s, late = 0.0, 0
    for _ in range(arrivals):
        now_s += rng.expovariate(arrival_rps)
        start_s = max(now_s, heapq.heappop(free_at))
        late += start_s - now_s > wait_s
        heapq.heappush(free_at, start_s + SERVICE_S)
    return late / arrivals


@pytest.mark.parametrize(
    ("servers", "arrival_rps", "wait_s"),
    [(2, 20.0, 0.08), (3, 40.0, 0.1), (8, 140.0, 0.1)],
)
def test_constant_service_tail_is_above_the_simulated_one_but_close(
    servers: int, arrival_rps: float, wait_s: float
) -> None:
    simulated = _simulated_exceed(servers, arrival_rps, wait_s)
    constant = queueing.wait_exceeds_probability(
        servers, arrival_rps, 1 / SERVICE_S, wait_s, service_scv=0.0
    )
    exponential = queueing.wait_exceeds_probability(
        servers, arrival_rps, 1 / SERVICE_S, wait_s
    )
    # Tails the autoscaler plans for (about 0.01): from a little below the
    # simulated share (heavy load, many servers) to 2.5x it; the exponential form
    # is 6-12x it on these cases.
    assert 0.001 < simulated < 0.02
    assert 0.8 * simulated <= constant <= 2.5 * simulated
    assert exponential > 5 * simulated


@pytest.mark.parametrize(
    ("arrival_rps", "wait_s"), [(4.0, 0.077), (10.0, 0.05), (16.0, 0.1), (18.0, 0.5)]
)
def test_one_constant_server_is_exact(arrival_rps: float, wait_s: float) -> None:
    simulated = _simulated_exceed(1, arrival_rps, wait_s)
    exact = queueing.wait_exceeds_probability(
        1, arrival_rps, 1 / SERVICE_S, wait_s, service_scv=0.0
    )
    # Erlang's M/D/1 formula; the simulation's own noise is a few per cent.
    assert exact == pytest.approx(simulated, rel=0.06)


def test_constant_service_carries_more_within_the_same_budget() -> None:
    # One replica of 20 requests/s, 77 ms of wait budget, 1% may exceed it.
    exponential = queueing.max_arrival_rps(1, 20.0, 0.077, 0.01)
    constant = queueing.max_arrival_rps(1, 20.0, 0.077, 0.01, service_scv=0.0)
    assert exponential == pytest.approx(0.87, abs=0.01)
    assert constant == pytest.approx(4.43, abs=0.01)
    assert queueing.mean_wait_s(1, 10.0, 20.0, service_scv=0.0) == pytest.approx(
        queueing.mean_wait_s(1, 10.0, 20.0) / 2
    )


def test_a_negative_variability_is_refused() -> None:
    with pytest.raises(ValueError, match="service_scv must be >= 0"):
        queueing.wait_exceeds_probability(1, 1.0, 2.0, 0.1, service_scv=-0.5)
