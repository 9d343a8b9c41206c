"""The "slo_cost" router: SLO, price, spill-over, constraints, failover, probes."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from gateway.errors import ConfigError, NoCloudAvailable
from router.clock import ManualClock
from router.cloud import CloudSpec
from router.routing import (
    POLICY_NAMES,
    RouteDecision,
    Router,
    RouteRequest,
    RouterSettings,
)

CHEAP = CloudSpec("cheap", "aws", "us-east-1", "T4", on_demand_usd_per_hour=1.0)
DEAR = CloudSpec("dear", "gcp", "europe-west4", "L4", on_demand_usd_per_hour=2.0)


def _router(
    clock: ManualClock,
    clouds: tuple[CloudSpec, ...] = (CHEAP, DEAR),
    policy: str = "slo_cost",
    **settings: Any,
) -> Router:
    return Router(clouds, RouterSettings(**settings), clock, policy)


def _observe(
    router: Router, cloud: str, count: int, rtt_s: float, service_s: float
) -> None:
    for _ in range(count):
        router.on_dispatch(cloud, 1)
        router.on_complete(
            cloud, num_texts=1, rtt_s=rtt_s, service_s=service_s, ok=True
        )


def _fail(router: Router, cloud: str, count: int) -> None:
    for _ in range(count):
        router.on_dispatch(cloud, 1)
        router.on_complete(cloud, num_texts=1, rtt_s=None, service_s=0.0, ok=False)


def test_picks_the_cheapest_cloud_that_meets_the_slo() -> None:
    clock = ManualClock()
    router = _router(clock)
    _observe(router, "cheap", 10, rtt_s=0.02, service_s=0.03)
    _observe(router, "dear", 10, rtt_s=0.02, service_s=0.03)

    decision = router.choose(RouteRequest())

    assert (decision.cloud, decision.reason) == ("cheap", "cheapest_in_slo")
    assert [c.cloud for c in decision.candidates] == ["cheap", "dear"]


def test_the_tail_is_that_of_whole_requests_not_a_sum_of_tails() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=150.0, quantile=0.9)
    router.set_capacity("cheap", 100.0)
    # Half the requests have a slow network and a quick replica, half the reverse:
    #   RTT 0.10 + service 0.02 = 0.12 s,   RTT 0.02 + service 0.10 = 0.12 s.
    # Every request took 0.12 s, so the 90th percentile is 0.12 s and "cheap" meets
    # a 0.15 s SLO; adding the RTT and service tails (0.10 + 0.10 = 0.20 s) would
    # have sent the request to the dearer cloud.
    for _ in range(10):
        _observe(router, "cheap", 1, rtt_s=0.10, service_s=0.02)
        _observe(router, "cheap", 1, rtt_s=0.02, service_s=0.10)
    _observe(router, "dear", 20, rtt_s=0.02, service_s=0.03)

    decision = router.choose(RouteRequest())

    cheap = next(c for c in decision.candidates if c.cloud == "cheap")
    assert cheap.predicted_latency_s == pytest.approx(0.12, rel=0.1)
    assert (decision.cloud, decision.reason) == ("cheap", "cheapest_in_slo")


def test_spill_starts_exactly_when_the_cheap_queue_would_break_the_slo() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=250.0)
    for cloud in ("cheap", "dear"):
        router.set_replicas(cloud, 2)
        router.set_capacity(cloud, 64.0)
        _observe(router, cloud, 5, rtt_s=1 / 16, service_s=1 / 16)

    # Predicted latency with n texts in flight on a cloud:
    #   RTT 1/16 + wait n / (2 replicas * 64 texts/s) + service max(1/16, 1/64)
    #   = 0.125 + n / 128  <=  0.25 s  <=>  n <= 16.
    # So the first 17 requests (n = 0 .. 16 when each is routed) stay on "cheap".
    for in_flight in range(17):
        decision = router.choose(RouteRequest())
        assert (decision.cloud, decision.reason) == ("cheap", "cheapest_in_slo"), (
            in_flight
        )
        router.on_dispatch(decision.cloud, 1)

    # n = 17: 0.125 + 17 / 128 = 0.2578 s > 0.25 s, so it spills to "dear".
    decision = router.choose(RouteRequest())
    assert (decision.cloud, decision.reason) == ("dear", "spill")
    cheap = decision.candidates[0]
    assert cheap.predicted_latency_s == pytest.approx(0.125 + 17 / 128)

    # One completion brings "cheap" back to n = 16, inside the SLO again.
    router.on_complete("cheap", num_texts=1, rtt_s=1 / 16, service_s=1 / 16, ok=True)
    assert router.choose(RouteRequest()).cloud == "cheap"


def test_chooses_the_fastest_when_no_cloud_meets_the_slo() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=100.0)
    _observe(router, "cheap", 10, rtt_s=0.1, service_s=0.3)
    _observe(router, "dear", 10, rtt_s=0.1, service_s=0.2)

    decision = router.choose(RouteRequest())

    assert (decision.cloud, decision.reason) == ("dear", "fastest")


def test_a_tight_deadline_tightens_the_target_below_the_slo() -> None:
    clock = ManualClock(100.0)
    router = _router(clock, slo_ms=500.0)
    for cloud in ("cheap", "dear"):
        router.set_capacity(cloud, 100.0)
    _observe(router, "cheap", 10, rtt_s=0.05, service_s=0.2)
    _observe(router, "dear", 10, rtt_s=0.05, service_s=0.05)

    # "cheap" predicts 0.05 + 0.2 = 0.25 s: inside the 0.5 s SLO, but not inside
    # a deadline 0.2 s away, which "dear" (0.1 s) meets.
    assert router.choose(RouteRequest()).cloud == "cheap"
    decision = router.choose(RouteRequest(deadline_s=100.2))
    assert (decision.cloud, decision.reason) == ("dear", "spill")


def test_cost_is_replica_price_over_throughput_and_uses_the_spot_price() -> None:
    clock = ManualClock()
    spot = CloudSpec(
        "spot",
        "aws",
        "us-east-1",
        "T4",
        on_demand_usd_per_hour=1.0,
        spot_usd_per_hour=0.36,
        use_spot=True,
    )
    router = _router(clock, clouds=(spot,))
    router.set_capacity("spot", 100.0)

    decision = router.choose(RouteRequest(num_texts=4))

    # $0.36 an hour / (100 texts/s * 3600 s) = $1e-6 a text; 4 texts = $4e-6.
    assert decision.candidates[0].cost_usd_per_request == pytest.approx(4e-6)


def test_a_preference_penalty_moves_traffic_without_breaking_the_slo() -> None:
    clock = ManualClock()
    # At the default 50 texts/s: cheap $1/h -> $5.6e-6 a text, dear $1.1e-5.
    # A $1e-5 penalty makes cheap $1.56e-5, dearer than dear.
    router = _router(clock, penalty_usd_per_request={"cheap": 1e-5})

    decision = router.choose(RouteRequest())

    assert (decision.cloud, decision.reason) == ("dear", "cheapest_in_slo")


def test_load_leaves_a_slow_cloud_and_returns_when_it_recovers() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=200.0, half_life_s=5.0, probe_interval_s=2.0)
    for cloud in ("cheap", "dear"):
        router.set_replicas(cloud, 4)
        router.set_capacity(cloud, 1000.0)
    cheap_service_s = 0.05

    def run_until(end_s: float) -> list[tuple[float, RouteDecision]]:
        # 128 requests/s; each completes at once with the cloud's current latency.
        decisions = []
        while clock() < end_s:
            decision = router.choose(RouteRequest())
            service_s = cheap_service_s if decision.cloud == "cheap" else 0.05
            router.on_dispatch(decision.cloud, 1)
            router.on_complete(
                decision.cloud, num_texts=1, rtt_s=0.01, service_s=service_s, ok=True
            )
            decisions.append((clock(), decision))
            clock.advance(1 / 128)
        return decisions

    healthy = run_until(20.0)
    # Everything but the probes that keep "dear" fresh goes to "cheap".
    assert all(d.cloud == "cheap" for _, d in healthy if d.reason != "probe")

    cheap_service_s = 0.4  # "cheap" degrades: 0.01 + 0.4 s > 0.2 s SLO
    degraded = run_until(60.0)
    first_spill_s = next(t for t, d in degraded if d.cloud == "dear")
    # Slow samples pass 5 % of the weight (p95) within a fraction of a second.
    assert first_spill_s < 21.0
    late = [d for t, d in degraded if t >= 30.0]
    probes = [d for d in late if d.cloud == "cheap"]
    # Only probes reach "cheap", one per 2 s probe interval: 15 in the last 30 s.
    assert all(d.reason == "probe" for d in probes)
    assert len(probes) == 15
    assert all(d.reason == "spill" for d in late if d.cloud == "dear")

    cheap_service_s = 0.05  # recovered: probes see it while old slow samples decay
    recovered = run_until(120.0)
    back_s = next(t for t, d in recovered if d.cloud == "cheap" and d.reason != "probe")
    # The slow probes (every 2 s up to t=58.35) weigh, in fresh observations,
    #   S(t) = 2**((58.35 - t)/5) / (1 - 2**-0.4) = 4.13 * 2**((58.35 - t)/5),
    # plus about 0.1 from the slow requests "cheap" took at t=20 before the spill.
    # The p95 alone would wait until S is below 5 % of all weight (t ~ 80 s); the
    # tail must rest on at least 2 observations (tail_min_observations), so it turns
    # fast once S(t) + 0.1 <= 2: t = 58.35 + 5 * log2(4.13 / 1.9) = 63.95.
    assert 63.5 < back_s < 64.5
    assert all(
        d.cloud == "cheap" for t, d in recovered if t > back_s and d.reason != "probe"
    )


def test_probes_a_silent_cloud_once_per_interval_and_no_more() -> None:
    clock = ManualClock()
    # "cheap" is slow (300 ms > 200 ms SLO), so "dear" takes the traffic and
    # "cheap", which would win it back, is probed every probe_interval_s; "dear"
    # is known to be fast. The backup interval is not reached in this run.
    router = _router(clock, probe_interval_s=10.0, backup_probe_interval_s=100.0)
    for cloud in ("cheap", "dear"):
        router.set_capacity(cloud, 100.0)  # price per request from capacity
    for _ in range(5):
        router.on_dispatch("cheap", 1)
        router.on_complete("cheap", num_texts=1, rtt_s=0.01, service_s=0.3, ok=True)
    _observe(router, "dear", 5, rtt_s=0.01, service_s=0.01)
    probes = []
    # 128 requests/s for 60 s; none ever completes, so probes cannot refresh
    # "cheap" and only the interval bounds them.
    for step in range(128 * 60):
        clock.set(step / 128)
        router.set_replicas("dear", 1000)  # room for the growing backlog
        decision = router.choose(RouteRequest())
        router.on_dispatch(decision.cloud, 1)
        if decision.reason == "probe":
            probes.append((clock(), decision.cloud))

    # "cheap" was last heard from at t=0: probes at t = 10, 20, 30, 40, 50.
    assert probes == [
        (10.0, "cheap"),
        (20.0, "cheap"),
        (30.0, "cheap"),
        (40.0, "cheap"),
        (50.0, "cheap"),
    ]


def test_a_dearer_cloud_is_probed_only_at_the_backup_interval() -> None:
    clock = ManualClock()
    router = _router(clock, probe_interval_s=5.0, backup_probe_interval_s=60.0)
    probes = []
    # Two requests a second for 150 s, all answered at once within the SLO by
    # "cheap": "dear" could not win them, so it is probed at t = 60 and 120 only,
    # 2 of 300 requests where a 5 s interval would have spent 29.
    for step in range(2 * 150):
        clock.set(step / 2)
        decision = router.choose(RouteRequest())
        router.on_dispatch(decision.cloud, 1)
        router.on_complete(
            decision.cloud, num_texts=1, rtt_s=0.01, service_s=0.01, ok=True
        )
        if decision.reason == "probe":
            probes.append((clock(), decision.cloud))

    assert probes == [(60.0, "dear"), (120.0, "dear")]


def test_no_probe_when_the_deadline_cannot_absorb_it() -> None:
    clock = ManualClock()
    router = _router(clock, probe_interval_s=1.0, backup_probe_interval_s=1.0)
    _observe(router, "cheap", 5, rtt_s=0.01, service_s=0.01)
    clock.advance(5.0)
    _observe(router, "cheap", 5, rtt_s=0.01, service_s=0.01)

    # "dear" predicts the 20 ms default RTT + 1/50 s service = 40 ms > 30 ms left.
    tight = router.choose(RouteRequest(deadline_s=clock() + 0.03))
    assert (tight.cloud, tight.reason) == ("cheap", "cheapest_in_slo")
    loose = router.choose(RouteRequest(deadline_s=clock() + 1.0))
    assert (loose.cloud, loose.reason) == ("dear", "probe")


def test_no_probe_that_the_request_itself_would_make_miss_the_slo() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=150.0, probe_interval_s=1.0)
    # "cheap" is far and slow: 75 ms away, 40 texts/s. Four texts take at least
    # 75 + 4/40 s = 175 ms there, over the 150 ms SLO, whatever its estimate says;
    # one text takes at least 75 + 25 = 100 ms, so a one-text request may probe it.
    router.set_capacity("cheap", 40.0)
    router.set_capacity("dear", 30.0)
    _observe(router, "cheap", 5, rtt_s=0.075, service_s=0.1)
    _observe(router, "dear", 5, rtt_s=0.01, service_s=0.01)
    clock.advance(5.0)
    _observe(router, "dear", 5, rtt_s=0.01, service_s=0.01)

    four = router.choose(RouteRequest(num_texts=4))
    assert (four.cloud, four.reason) == ("dear", "spill")
    one = router.choose(RouteRequest(num_texts=1))
    assert (one.cloud, one.reason) == ("cheap", "probe")


def test_region_constraint_overrides_the_cheaper_choice() -> None:
    clock = ManualClock()
    router = _router(clock)

    decision = router.choose(RouteRequest(allowed_regions=frozenset({"europe-west4"})))
    assert (decision.cloud, decision.reason) == ("dear", "constraint")

    decision = router.choose(RouteRequest(allowed_regions=frozenset({"us-east-1"})))
    assert (decision.cloud, decision.reason) == ("cheap", "cheapest_in_slo")


def test_no_healthy_allowed_cloud_raises_no_cloud_available() -> None:
    clock = ManualClock()
    router = _router(clock, breaker_consecutive_failures=3)
    _fail(router, "cheap", 3)

    with pytest.raises(NoCloudAvailable) as err:
        router.choose(RouteRequest(allowed_regions=frozenset({"us-east-1"})))
    assert err.value.http_status == 503
    assert "us-east-1" in err.value.message
    # Without the constraint the healthy cloud still serves.
    assert router.choose(RouteRequest()).cloud == "dear"


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_allowed_regions_always_hold_over_random_requests(policy: str) -> None:
    rng = random.Random(7)
    clock = ManualClock()
    regions = ["us-east-1", "europe-west4", "eastus"]
    clouds = tuple(
        CloudSpec(
            f"c{i}",
            "aws",
            regions[i % 3],
            "T4",
            on_demand_usd_per_hour=0.5 + 0.25 * i,
        )
        for i in range(6)
    )
    router = _router(clock, clouds=clouds, policy=policy, random_seed=3)
    names = [c.name for c in clouds]
    region_of = {c.name: c.region for c in clouds}
    served = raised = 0

    for _ in range(3000):
        clock.advance(rng.uniform(0.0, 0.5))
        allowed = frozenset(rng.sample(regions, rng.randint(1, 3)))
        exclude = set(rng.sample(names, rng.randint(0, 2)))
        request = RouteRequest(num_texts=rng.randint(1, 8), allowed_regions=allowed)
        healthy = {e.cloud for e in router.estimates() if e.breaker_state != "open"}
        try:
            decision = router.choose(request, exclude=exclude)
        except NoCloudAvailable:
            raised += 1
            # Raised only when no allowed, usable cloud was left.
            assert not [
                n
                for n in names
                if region_of[n] in allowed and n not in exclude and n in healthy
            ]
            continue
        served += 1
        assert region_of[decision.cloud] in allowed
        assert decision.cloud not in exclude
        router.on_dispatch(decision.cloud, request.num_texts)
        router.on_complete(
            decision.cloud,
            num_texts=request.num_texts,
            rtt_s=rng.uniform(0.005, 0.1),
            service_s=rng.uniform(0.01, 0.3),
            ok=rng.random() > 0.3,  # frequent failures open breakers now and then
        )

    assert served > 2000 and raised > 0


def _send_with_retry(
    router: Router, request: RouteRequest, failing: set[str]
) -> list[RouteDecision]:
    """What the gateway does: try, and on failure retry once if the router allows."""
    attempts: list[RouteDecision] = []
    while True:
        decision = router.choose(
            request,
            exclude={d.cloud for d in attempts},
            failover=bool(attempts),
        )
        router.on_dispatch(decision.cloud, request.num_texts)
        attempts.append(decision)
        ok = decision.cloud not in failing
        router.on_complete(
            decision.cloud,
            num_texts=request.num_texts,
            rtt_s=0.01 if ok else None,
            service_s=0.02,
            ok=ok,
        )
        if ok or not router.retry_allowed(request, len(attempts)):
            return attempts


def test_a_failed_request_fails_over_to_the_next_best_cloud() -> None:
    clock = ManualClock()
    third = CloudSpec("third", "azure", "eastus", "A10", on_demand_usd_per_hour=3.0)
    router = _router(clock, clouds=(CHEAP, DEAR, third))

    attempts = _send_with_retry(router, RouteRequest(), failing={"cheap"})

    assert [(d.cloud, d.reason) for d in attempts] == [
        ("cheap", "cheapest_in_slo"),
        ("dear", "failover"),
    ]


def test_a_request_is_retried_once_and_only_once() -> None:
    clock = ManualClock()
    third = CloudSpec("third", "azure", "eastus", "A10", on_demand_usd_per_hour=3.0)
    router = _router(clock, clouds=(CHEAP, DEAR, third))

    attempts = _send_with_retry(router, RouteRequest(), failing={"cheap", "dear"})

    # Two attempts, though "third" would have worked.
    assert [d.cloud for d in attempts] == ["cheap", "dear"]
    assert not router.retry_allowed(RouteRequest(), 2)


def test_no_retry_when_the_deadline_does_not_allow_one() -> None:
    clock = ManualClock(10.0)
    router = _router(clock)
    _observe(router, "cheap", 5, rtt_s=0.05, service_s=0.075)
    _observe(router, "dear", 5, rtt_s=0.05, service_s=0.075)

    # The best cloud's mean latency is 0.05 + 0.075 = 0.125 s.
    assert not router.retry_allowed(RouteRequest(deadline_s=10.1), 1)
    assert router.retry_allowed(RouteRequest(deadline_s=10.2), 1)
    assert router.retry_allowed(RouteRequest(deadline_s=None), 1)
    tight = _send_with_retry(router, RouteRequest(deadline_s=10.1), failing={"cheap"})
    assert [d.cloud for d in tight] == ["cheap"]


def test_traffic_avoids_an_open_breaker_and_returns_after_a_good_trial() -> None:
    clock = ManualClock()
    router = _router(clock, breaker_consecutive_failures=3, breaker_cooldown_s=5.0)
    _fail(router, "cheap", 3)
    assert router.choose(RouteRequest()).cloud == "dear"

    clock.advance(5.0)
    trial = router.choose(RouteRequest())
    assert trial.cloud == "cheap"  # half-open: one trial allowed
    router.on_dispatch("cheap", 1)
    # While the trial is out, nothing else goes to "cheap".
    assert router.choose(RouteRequest()).cloud == "dear"

    router.on_complete("cheap", num_texts=1, rtt_s=0.01, service_s=0.02, ok=True)
    assert {e.cloud: e.breaker_state for e in router.estimates()}["cheap"] == "closed"
    assert router.choose(RouteRequest()).cloud == "cheap"


def test_a_cloud_without_running_replicas_is_never_chosen_while_another_is() -> None:
    clock = ManualClock()
    router = _router(clock)
    router.set_replicas("cheap", 0)

    assert router.choose(RouteRequest()).cloud == "dear"
    router.set_replicas("cheap", 1)
    assert router.choose(RouteRequest()).cloud == "cheap"


def test_estimates_report_live_state_per_cloud() -> None:
    clock = ManualClock()
    router = _router(clock)
    router.set_capacity("cheap", 100.0)
    _observe(router, "cheap", 4, rtt_s=0.02, service_s=0.04)
    router.on_dispatch("cheap", 3)
    clock.advance(2.0)

    cheap = {e.cloud: e for e in router.estimates()}["cheap"]

    assert cheap.in_flight_requests == 1 and cheap.in_flight_texts == 3
    assert cheap.rtt_mean_s == pytest.approx(0.02)
    assert cheap.service_quantile_s == pytest.approx(0.04)
    assert cheap.last_observation_age_s == 2.0
    # 0.02 RTT + 3 / (1 * 100) wait + max(0.04, 1 / 100) service = 0.09 s.
    assert cheap.predicted_latency_s == pytest.approx(0.09)
    # $1/h / (100 texts/s * 3600 s) = $2.78e-6.
    assert cheap.cost_usd_per_request == pytest.approx(1.0 / 360_000)


def test_invalid_settings_and_policies_are_config_errors() -> None:
    clock = ManualClock()
    with pytest.raises(ConfigError, match="quantile"):
        RouterSettings(quantile=1.5)
    with pytest.raises(ConfigError, match="slo_ms"):
        RouterSettings(slo_ms=0.0)
    with pytest.raises(ConfigError, match="unknown policy"):
        _router(clock, policy="fastest_ever")
    with pytest.raises(ConfigError, match="unknown clouds"):
        _router(clock, penalty_usd_per_request={"nowhere": 1.0})
    with pytest.raises(ValueError, match="unknown cloud"):
        _router(clock).set_replicas("nowhere", 1)


def test_each_decision_is_logged_at_debug_with_every_candidate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    router = _router(clock)
    router.set_capacity("cheap", 100.0)
    _observe(router, "cheap", 3, rtt_s=0.02, service_s=0.03)

    with caplog.at_level(logging.DEBUG, logger="router.routing"):
        router.choose(RouteRequest())

    (message,) = [r.getMessage() for r in caplog.records if r.name == "router.routing"]
    assert "event=route_decision cloud=cheap reason=cheapest_in_slo" in message
    # cheap: 20 ms + 0 wait + 30 ms = 50 ms; $1/h / (100/s * 3600 s) = $2.78e-06.
    assert "cheap:latency_ms=50.0:usd_per_request=2.78e-06" in message
    assert "dear:latency_ms=" in message


def test_one_slow_request_at_low_load_does_not_move_traffic() -> None:
    clock = ManualClock()
    router = _router(clock, slo_ms=150.0, quantile=0.99, half_life_s=3.0)
    for cloud in ("cheap", "dear"):
        router.set_capacity(cloud, 100.0)
    # Two requests a second for 10 s at 100 ms: about 2 x 3 / ln 2 = 8.7
    # observations' worth of weight, so one slow request is over 1 % of it and
    # would be the plain p99.
    for _ in range(20):
        _observe(router, "cheap", 1, rtt_s=0.075, service_s=0.025)
        clock.advance(0.5)
    _observe(router, "dear", 5, rtt_s=0.02, service_s=0.02)
    _observe(router, "cheap", 1, rtt_s=0.075, service_s=0.2)  # 275 ms

    assert router.choose(RouteRequest()).cloud == "cheap"
    # A second one is evidence of a slow tail: traffic spills.
    _observe(router, "cheap", 1, rtt_s=0.075, service_s=0.2)
    decision = router.choose(RouteRequest())
    assert (decision.cloud, decision.reason) == ("dear", "spill")
