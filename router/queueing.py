"""Waiting-time model of c servers with Poisson arrivals: how many keep waits in budget.

Standalone and pure, so both the autoscaler (replicas a forecast rate needs) and the
router (expected queueing delay at a cloud) can use it. A server is one replica, its
service rate is the replica's throughput; arrivals are Poisson. With `c` servers,
offered load `a = arrival_rps / service_rate_per_s` and `c * service_rate_per_s >
arrival_rps`, for exponential service times (M/M/c, exact):

    P(wait > 0) = C(c, a)                       (Erlang C)
    P(wait > t) = C(c, a) * exp(-(c * mu - lambda) * t)
    E[wait]     = C(c, a) / (c * mu - lambda)

Service times of a BERT replica are nearly constant (a batch of a given size and
length takes the same time), and exponential service overstates the tail many times
over. `service_scv`, the squared coefficient of variation of service times (1 for
exponential, 0 for constant), scales the conditional wait by (1 + scv) / 2, the
two-moment (Kingman) heavy-traffic form for M/G/c:

    P(wait > t) ~ C(c, a) * exp(-2 (c * mu - lambda) t / (1 + scv))
    E[wait]     ~ C(c, a) / (c * mu - lambda) * (1 + scv) / 2

One server with constant service (M/D/1) has an exact answer, Erlang's:

    P(wait <= t) = (1 - rho) sum_{k=0}^{floor(t/D)} (lambda (kD - t))^k / k!
                   * exp(-lambda (kD - t))

used while lambda t <= 10 (beyond, the alternating sum loses its digits, and the
two-moment form is close there). The heavy-traffic form is worst exactly at one
server and a budget of one or two service times, the case of a small deployment
(4 requests/s of 50 ms each with a 77 ms budget: 0.017 against the exact 0.0077).

For constant service on several servers (M/D/c) at the tails the autoscaler plans
for (P around 0.01) the two-moment form is within 0.9-2x of simulated M/D/c (a
little below it only at heavy load on many servers), where the M/M/c form is 5-50x
above (tests/unit/test_queueing.py checks both against a simulation).

C(c, a) is computed from the Erlang B recursion B(0) = 1, B(k) = a B(k-1) / (k + a
B(k-1)) and C = c B / (c - a (1 - B)), which stays finite for hundreds of servers
where the factorial form overflows.
"""

from __future__ import annotations

import math
from functools import lru_cache

_BISECT_STEPS = 60
# Erlang's M/D/1 sum alternates in sign; past this lambda * t it cancels too much.
_EXACT_MD1_MAX_LAMBDA_T = 10.0


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
    servers: int,
    arrival_rps: float,
    service_rate_per_s: float,
    wait_s: float,
    service_scv: float = 1.0,
) -> float:
    """P(wait > wait_s) for an arrival to c servers (M/M/c when service_scv is 1)."""
    _check_rate(service_rate_per_s)
    _check_scv(service_scv)
    if arrival_rps <= 0:
        return 0.0
    if servers * service_rate_per_s <= arrival_rps:
        return 1.0
    if (
        servers == 1
        and service_scv == 0
        and arrival_rps * wait_s <= _EXACT_MD1_MAX_LAMBDA_T
    ):
        return _md1_wait_exceeds(arrival_rps, 1.0 / service_rate_per_s, wait_s)
    p_wait = erlang_c(servers, arrival_rps / service_rate_per_s)
    decay_per_s = 2.0 * (servers * service_rate_per_s - arrival_rps) / (1 + service_scv)
    return p_wait * math.exp(-decay_per_s * wait_s)


def _md1_wait_exceeds(arrival_rps: float, service_s: float, wait_s: float) -> float:
    """Erlang's exact P(wait > wait_s) for one server of constant service time."""
    if wait_s < 0:
        return 1.0
    below = 0.0
    for k in range(int(wait_s / service_s) + 1):
        x = arrival_rps * (k * service_s - wait_s)  # <= 0
        below += x**k / math.factorial(k) * math.exp(-x)
    below *= 1.0 - arrival_rps * service_s
    return min(1.0, max(0.0, 1.0 - below))


def mean_wait_s(
    servers: int,
    arrival_rps: float,
    service_rate_per_s: float,
    service_scv: float = 1.0,
) -> float:
    """Expected time in queue; infinite when the queue is unstable."""
    _check_rate(service_rate_per_s)
    _check_scv(service_scv)
    if arrival_rps <= 0:
        return 0.0
    spare_rps = servers * service_rate_per_s - arrival_rps
    if spare_rps <= 0:
        return math.inf
    p_wait = erlang_c(servers, arrival_rps / service_rate_per_s)
    return p_wait / spare_rps * (1 + service_scv) / 2.0


def min_servers(
    arrival_rps: float,
    service_rate_per_s: float,
    wait_budget_s: float,
    max_exceed_probability: float,
    max_servers: int = 10_000,
    service_scv: float = 1.0,
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
            servers, arrival_rps, service_rate_per_s, wait_budget_s, service_scv
        )
        if p <= max_exceed_probability:
            return servers
    return None


def max_arrival_rps(
    servers: int,
    service_rate_per_s: float,
    wait_budget_s: float,
    max_exceed_probability: float,
    service_scv: float = 1.0,
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
        servers,
        round(service_rate_per_s * wait_budget_s, 9),
        max_exceed_probability,
        service_scv,
    )
    return load_erlangs * service_rate_per_s


@lru_cache(maxsize=65_536)
def _max_load_erlangs(
    servers: int,
    budget_in_service_times: float,
    max_exceed_probability: float,
    service_scv: float,
) -> float:
    """max_arrival_rps for a unit service rate (arrival rate equals offered load)."""
    lo, hi = 0.0, float(servers)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        p = wait_exceeds_probability(
            servers, mid, 1.0, budget_in_service_times, service_scv
        )
        if p <= max_exceed_probability:
            lo = mid
        else:
            hi = mid
    return lo


def _check_scv(service_scv: float) -> None:
    if service_scv < 0:
        raise ValueError(f"service_scv must be >= 0, got {service_scv}")


def _check_rate(service_rate_per_s: float) -> None:
    if service_rate_per_s <= 0:
        raise ValueError(f"service_rate_per_s must be > 0, got {service_rate_per_s}")
