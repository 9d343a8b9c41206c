"""The baseline policies behave as named, behind the same Router interface."""

from __future__ import annotations

from collections import Counter

from router.clock import ManualClock
from router.cloud import CloudSpec
from router.routing import Router, RouteRequest, RouterSettings

CLOUDS = (
    CloudSpec("a", "aws", "us-east-1", "T4", on_demand_usd_per_hour=1.0),
    CloudSpec("b", "gcp", "us-central1", "L4", on_demand_usd_per_hour=2.0),
    CloudSpec("c", "azure", "eastus", "A10", on_demand_usd_per_hour=3.0),
)


def _router(policy: str, clock: ManualClock | None = None) -> Router:
    return Router(
        CLOUDS, RouterSettings(random_seed=11), clock or ManualClock(), policy
    )


def _observe(router: Router, cloud: str, service_s: float) -> None:
    for _ in range(5):
        router.on_dispatch(cloud, 1)
        router.on_complete(cloud, num_texts=1, rtt_s=0.01, service_s=service_s, ok=True)


def test_round_robin_takes_each_cloud_in_turn() -> None:
    router = _router("round_robin")
    picks = [router.choose(RouteRequest()) for _ in range(6)]

    assert [d.cloud for d in picks] == ["a", "b", "c", "a", "b", "c"]
    assert {d.reason for d in picks} == {"round_robin"}


def test_round_robin_skips_clouds_a_request_may_not_use() -> None:
    router = _router("round_robin")
    picks = [router.choose(RouteRequest(), exclude={"b"}).cloud for _ in range(4)]

    assert picks == ["a", "c", "a", "c"]


def test_least_latency_picks_the_fastest_whatever_it_costs() -> None:
    router = _router("least_latency")
    _observe(router, "a", 0.08)
    _observe(router, "b", 0.05)
    _observe(router, "c", 0.02)

    decision = router.choose(RouteRequest())

    assert (decision.cloud, decision.reason) == ("c", "least_latency")


def test_cheapest_first_ignores_a_broken_slo() -> None:
    router = _router("cheapest_first")
    for cloud in ("a", "b", "c"):
        router.set_capacity(cloud, 100.0)
    _observe(router, "a", 5.0)  # far past the 200 ms default SLO

    decision = router.choose(RouteRequest())

    assert (decision.cloud, decision.reason) == ("a", "cheapest_first")


def test_p2c_never_picks_the_longest_queue_and_favours_the_shortest() -> None:
    router = _router("p2c_queue")
    for cloud, in_flight in (("a", 10), ("b", 0), ("c", 5)):
        for _ in range(in_flight):
            router.on_dispatch(cloud, 1)

    picks = Counter(router.choose(RouteRequest()).cloud for _ in range(3000))

    # Pairs are uniform over {ab, ac, bc}: b wins ab and bc (2/3), c wins ac (1/3),
    # a (the longest queue) never wins.
    assert picks["a"] == 0
    assert 0.62 < picks["b"] / 3000 < 0.71
    assert 0.29 < picks["c"] / 3000 < 0.38


def test_baselines_respect_open_breakers() -> None:
    for policy in ("round_robin", "least_latency", "cheapest_first", "p2c_queue"):
        router = _router(policy)
        for _ in range(5):  # default: 5 consecutive failures open the breaker
            router.on_dispatch("a", 1)
            router.on_complete("a", num_texts=1, rtt_s=None, service_s=0.0, ok=False)

        picks = {router.choose(RouteRequest()).cloud for _ in range(30)}

        assert "a" not in picks, policy
