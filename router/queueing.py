"""Erlang C (M/M/c) waiting-time model: how many servers keep waits within a budget.

Standalone and pure, so both the autoscaler (replicas a forecast rate needs) and the
router (expected queueing delay at a cloud) can use it. A server is one replica, its
service rate is the replica's throughput; arrivals are Poisson. With `c` servers,
offered load `a = arrival_rps / service_rate_per_s` and `c * service_rate_per_s >
arrival_rps`:

    P(wait > 0) = C(c, a)                       (Erlang C)
    P(wait > t) = C(c, a) * exp(-(c * mu - lambda) * t)
    E[wait]     = C(c, a) / (c * mu - lambda)

C(c, a) is computed from the Erlang B recursion B(0) = 1, B(k) = a B(k-1) / (k + a
B(k-1)) and C = c B / (c - a (1 - B)), which stays finite for hundreds of servers
where the factorial form overflows.
"""

from __future__ import annotations

import math
from functools import lru_cache

_BISECT_STEPS = 60


def erlang_c(servers: int, offered_load_erlangs: float) -> float:
    """Probability that an arrival waits at all; 1.0 when the queue is unstable."""
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    if offered_load_erlangs < 0:
        raise ValueError(
            f"offered_load_erlangs must be >= 0, got {offered_load_erlangs}"
        )
    if offered_load_erlangs == 0:
        return 0.0
    if servers == 0 or offered_load_erlangs >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = (
            offered_load_erlangs * blocking / (k + offered_load_erlangs * blocking)
        )
    return servers * blocking / (servers - offered_load_erlangs * (1.0 - blocking))


def wait_exceeds_probability(
    servers: int, arrival_rps: float, service_rate_per_s: float, wait_s: float
) -> float:
    """P(wait > wait_s) for an arrival to an M/M/c queue."""
    _check_rate(service_rate_per_s)
    if arrival_rps <= 0:
        return 0.0
    if servers * service_rate_per_s <= arrival_rps:
        return 1.0
    p_wait = erlang_c(servers, arrival_rps / service_rate_per_s)
    return p_wait * math.exp(-(servers * service_rate_per_s - arrival_rps) * wait_s)


def mean_wait_s(servers: int, arrival_rps: float, service_rate_per_s: float) -> float:
    """Expected time in queue; infinite when the queue is unstable."""
    _check_rate(service_rate_per_s)
    if arrival_rps <= 0:
        return 0.0
    spare_rps = servers * service_rate_per_s - arrival_rps
    if spare_rps <= 0:
        return math.inf
    return erlang_c(servers, arrival_rps / service_rate_per_s) / spare_rps


def min_servers(
    arrival_rps: float,
    service_rate_per_s: float,
    wait_budget_s: float,
    max_exceed_probability: float,
    max_servers: int = 10_000,
) -> int | None:
    """The smallest c with P(wait > wait_budget_s) <= max_exceed_probability.

    Returns None when even `max_servers` do not meet it (or the budget is negative).
    """
    _check_rate(service_rate_per_s)
    if arrival_rps <= 0:
        return 0
    if wait_budget_s < 0:
        return None
    # Stability needs c > a, so start just above the offered load.
    first = int(arrival_rps / service_rate_per_s) + 1
    for servers in range(first, max_servers + 1):
        p = wait_exceeds_probability(
            servers, arrival_rps, service_rate_per_s, wait_budget_s
        )
        if p <= max_exceed_probability:
            return servers
    return None


def max_arrival_rps(
    servers: int,
    service_rate_per_s: float,
    wait_budget_s: float,
    max_exceed_probability: float,
) -> float:
    """The highest arrival rate that c servers carry with P(wait > budget) <= p.

    P(wait > t) grows with the arrival rate, so the answer is found by bisection;
    it is 0 for no servers or a negative budget.
    """
    _check_rate(service_rate_per_s)
    if servers <= 0 or wait_budget_s < 0:
        return 0.0
    # The answer scales with mu for a fixed mu * t, so cache the unit-rate problem.
    load_erlangs = _max_load_erlangs(
        servers, round(service_rate_per_s * wait_budget_s, 9), max_exceed_probability
    )
    return load_erlangs * service_rate_per_s


@lru_cache(maxsize=65_536)
def _max_load_erlangs(
    servers: int, budget_in_service_times: float, max_exceed_probability: float
) -> float:
    """max_arrival_rps for a unit service rate (arrival rate equals offered load)."""
    lo, hi = 0.0, float(servers)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        p = wait_exceeds_probability(servers, mid, 1.0, budget_in_service_times)
        if p <= max_exceed_probability:
            lo = mid
        else:
            hi = mid
    return lo


def _check_rate(service_rate_per_s: float) -> None:
    if service_rate_per_s <= 0:
        raise ValueError(f"service_rate_per_s must be > 0, got {service_rate_per_s}")
