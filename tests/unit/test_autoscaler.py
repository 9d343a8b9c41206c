"""Autoscaler and its queueing model, driven by a ManualClock and fake clouds."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from gateway.errors import ConfigError
from router import queueing
from router.autoscaler import Autoscaler, AutoscalerSettings, forecaster_settings
from router.autoscaler_solve import cheapest_counts
from router.capacity import CapacityPoint, CapacityProfile
from router.clock import ManualClock
from router.cloud import CloudSpec
from router.demand import DemandModel, LengthMix, ModelShape
from router.forecast import Forecaster

SHAPE = ModelShape(6, 384, 1536, 12, 30522, 512)
SLOT_S = 60.0
SEASON_S = 3600.0  # an "hour-long day" keeps the tests short

# One replica: batches of 1 at 32 tokens, 20 seq/s, 50 ms each. With SLO 200 ms the
# wait budget is 150 ms (a batch holds one request: the queue's wait already holds
# the rest of the one in progress).
PROFILE = CapacityProfile(
    "test", "cpu", (CapacityPoint(1, 32, seq_per_s=20.0, batch_latency_s=0.05),)
)
SETTINGS = AutoscalerSettings(
    slo_ms=200.0,
    quantile=0.95,
    decision_interval_s=60.0,
    provisioning_lead_s=240.0,
    upscale_delay_s=0.0,
    downscale_delay_s=600.0,
    drain_s=30.0,
)


def _cloud(name: str, usd: float, **kw) -> CloudSpec:
    return CloudSpec(name, "test", f"region-{name}", "cpu", usd, max_replicas=8, **kw)


def _autoscaler(
    clouds: list[CloudSpec], settings: AutoscalerSettings = SETTINGS
) -> tuple[Autoscaler, ManualClock]:
    clock = ManualClock()
    # Exponential service times: the counts below are Erlang C's (router.queueing).
    demand = DemandModel(SHAPE, {"cpu": PROFILE}, LengthMix.single(32), service_scv=1.0)
    forecaster = Forecaster(
        forecaster_settings(settings, slot_s=SLOT_S, season_s=SEASON_S), clock
    )
    return Autoscaler(clouds, demand, forecaster, settings, clock), clock


def _feed_slot(autoscaler: Autoscaler, clock: ManualClock, rate_rps: float) -> None:
    """One slot of traffic at `rate_rps`, reported at its start, then time moves on."""
    count = round(rate_rps * SLOT_S)
    autoscaler.observe(count, count, 32 * count)
    clock.advance(SLOT_S)


# Erlang C and the capacity table.


def test_erlang_c_matches_a_hand_computed_case() -> None:
    # c = 2 servers, offered load a = lambda / mu = 1:
    # Erlang B: B(1) = 1 / (1 + 1) = 1/2; B(2) = 1 * 1/2 / (2 + 1/2) = 1/5.
    # Erlang C = c B / (c - a (1 - B)) = 2/5 / (2 - 4/5) = 1/3.
    assert queueing.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # The closed form agrees: (a^c / c!) (c / (c - a)) = 1/2 * 2 = 1, over
    # sum_{k<c} a^k / k! + 1 = 1 + 1 + 1 = 3, so C = 1/3.
    # With mu = 1/s and lambda = 1/s: P(wait > 1 s) = 1/3 * exp(-(2 - 1) * 1).
    p = queueing.wait_exceeds_probability(2, 1.0, 1.0, 1.0)
    assert p == pytest.approx(math.exp(-1) / 3)
    assert p == pytest.approx(0.122626, abs=1e-6)
    # E[wait] = C / (c mu - lambda) = (1/3) / 1.
    assert queueing.mean_wait_s(2, 1.0, 1.0) == pytest.approx(1 / 3)


def test_single_server_waits_like_m_m_1() -> None:
    # M/M/1: P(wait > 0) = rho; rho = 7 / 20 = 0.35.
    # P(wait > 0.15 s) = 0.35 * exp(-(20 - 7) * 0.15) = 0.35 * exp(-1.95) = 0.04979
    p = queueing.wait_exceeds_probability(1, 7.0, 20.0, 0.15)
    assert p == pytest.approx(0.35 * math.exp(-1.95))
    assert p < 0.05  # so one replica carries 7 req/s within the SLO...
    # ...and not 8: 0.4 * exp(-12 * 0.15) = 0.4 * 0.1653 = 0.0661 > 0.05.
    assert queueing.wait_exceeds_probability(1, 8.0, 20.0, 0.15) > 0.05
    assert 7.0 < queueing.max_arrival_rps(1, 20.0, 0.15, 0.05) < 8.0


def test_min_servers_and_max_arrival_agree_at_the_boundary() -> None:
    rate = queueing.max_arrival_rps(5, 20.0, 0.15, 0.05)
    p = queueing.wait_exceeds_probability(5, rate, 20.0, 0.15)
    assert p == pytest.approx(0.05, abs=1e-6)
    assert queueing.min_servers(rate * 0.999, 20.0, 0.15, 0.05) == 5
    assert queueing.min_servers(rate * 1.01, 20.0, 0.15, 0.05) == 6


def test_pooled_replicas_carry_more_each_than_one_alone() -> None:
    autoscaler, _ = _autoscaler([_cloud("a", 1.0)])
    one = autoscaler.capacity_rps("a", 1)
    eight = autoscaler.capacity_rps("a", 8)
    assert one == pytest.approx(queueing.max_arrival_rps(1, 20.0, 0.15, 0.05))
    assert 7.0 < one < 8.0
    # Erlang C economies of scale: 8 servers run nearer their 20 req/s each.
    assert eight / 8 > one
    assert eight < 8 * 20.0


def test_a_request_with_more_texts_than_a_batch_waits_for_all_its_batches() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    assert autoscaler.capacity_rps("a", 4) > 0  # one text per request: fits
    # Requests of 5 texts on batches of 1 at 50 ms: each request is 5 batches,
    # 250 ms of service, past the 200 ms SLO however short the wait, so a replica
    # of this cloud carries nothing within the SLO, fast as it runs in total.
    # (The texts per request are smoothed, 0.2 a slot: 30 slots take it to 4.995.)
    for _ in range(30):
        _feed_slot_of(autoscaler, clock, requests=60, texts_per_request=5)
    assert autoscaler.capacity_rps("a", 4) == 0.0


def _feed_slot_of(autoscaler, clock, requests: int, texts_per_request: int) -> None:
    texts = requests * texts_per_request
    autoscaler.observe(requests, texts, 32 * texts)
    clock.advance(SLOT_S)


# The choice of counts.


def _decide_at_flat_rate(autoscaler, clock, rate_rps: float, slots: int = 3):
    for _ in range(slots):
        _feed_slot(autoscaler, clock, rate_rps)
    return autoscaler.decide({})


def test_fills_the_cheapest_cloud_first() -> None:
    cheap, dear = _cloud("cheap", 1.0), _cloud("dear", 2.0)
    autoscaler, clock = _autoscaler([dear, cheap])
    decision = _decide_at_flat_rate(autoscaler, clock, 30.0)
    assert decision.targets["dear"] == 0
    assert decision.targets["cheap"] >= 2
    # Past the cheap cloud's 8 replicas the dearer one takes the rest.
    autoscaler, clock = _autoscaler([dear, cheap])
    decision = _decide_at_flat_rate(autoscaler, clock, 200.0)
    assert decision.targets["cheap"] == 8
    assert decision.targets["dear"] >= 2
    # The bill is the sum of price x count: 8 * 1.0 + dear * 2.0.
    assert decision.usd_per_hour == pytest.approx(8 + 2.0 * decision.targets["dear"])


def test_serves_the_upper_bound_with_the_fewest_dollars() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    decision = _decide_at_flat_rate(autoscaler, clock, 30.0)
    count = decision.targets["a"]
    assert autoscaler.capacity_rps("a", count) >= decision.upper_rps
    assert autoscaler.capacity_rps("a", count - 1) < decision.upper_rps


def test_respects_min_and_max_replicas() -> None:
    floor = replace(_cloud("floor", 2.0), min_replicas=2)
    capped = replace(_cloud("capped", 1.0), max_replicas=3)
    autoscaler, clock = _autoscaler([floor, capped])
    idle = _decide_at_flat_rate(autoscaler, clock, 0.0)
    assert idle.targets == {"floor": 2, "capped": 0}
    flood = _decide_at_flat_rate(autoscaler, clock, 1_000.0)
    assert flood.targets == {"floor": 8, "capped": 3}
    assert "demand_exceeds_max" in flood.reason


def test_a_flood_leaves_a_cloud_that_cannot_meet_the_slo_at_its_floor() -> None:
    near = _cloud("near", 2.0)
    far = replace(_cloud("far", 0.5), min_replicas=1)
    autoscaler, clock = _autoscaler([near, far])
    # 190 ms of network + 50 ms of service > the 200 ms SLO: "far" carries nothing.
    autoscaler.set_network_s("far", 0.19)
    flood = _decide_at_flat_rate(autoscaler, clock, 1_000.0)
    assert "demand_exceeds_max" in flood.reason
    assert flood.targets == {"near": 8, "far": 1}


def test_keeps_the_on_demand_floor_beside_cheaper_spot() -> None:
    spot = CloudSpec(
        "spot",
        "test",
        "r1",
        "cpu",
        1.0,
        spot_usd_per_hour=0.3,
        max_replicas=8,
        use_spot=True,
    )
    on_demand = _cloud("on-demand", 1.0)
    settings = replace(SETTINGS, on_demand_floor_fraction=0.5)
    autoscaler, clock = _autoscaler([spot, on_demand], settings)
    decision = _decide_at_flat_rate(autoscaler, clock, 40.0)
    on_demand_rps = autoscaler.capacity_rps("on-demand", decision.targets["on-demand"])
    assert on_demand_rps >= 0.5 * decision.upper_rps
    assert decision.targets["spot"] >= 1  # the rest goes to the cheaper spot pool

    # Without a floor, everything goes to spot.
    autoscaler, clock = _autoscaler([spot, on_demand])
    decision = _decide_at_flat_rate(autoscaler, clock, 40.0)
    assert decision.targets["on-demand"] == 0


def test_floor_in_replicas_is_kept_at_zero_load() -> None:
    spot = CloudSpec(
        "spot",
        "test",
        "r1",
        "cpu",
        1.0,
        spot_usd_per_hour=0.3,
        max_replicas=8,
        use_spot=True,
    )
    settings = replace(SETTINGS, on_demand_floor_replicas=1)
    autoscaler, clock = _autoscaler([spot, _cloud("od", 1.0)], settings)
    assert _decide_at_flat_rate(autoscaler, clock, 0.0).targets == {"spot": 0, "od": 1}


def test_unknown_accelerator_is_a_config_error() -> None:
    other = CloudSpec("x", "test", "r", "H100", 5.0)
    with pytest.raises(ConfigError, match="no capacity for accelerator"):
        _autoscaler([other])


# Time: ahead of a ramp, down after it, no flapping.


def _ramp_rate(minute_of_hour: int) -> float:
    """3 req/s, except 30 req/s during minutes 40-49 of every hour."""
    return 30.0 if 40 <= minute_of_hour < 50 else 3.0


def _run_hours(autoscaler, clock, hours: int, decide_from_minute: int | None = None):
    """Feed whole hours of the ramp; decide every slot from a minute of the last hour.

    Returns {minute of the run: decision made at the start of that minute}.
    """
    decisions = {}
    total = hours * 60
    for minute in range(total):
        if decide_from_minute is not None and minute >= decide_from_minute:
            decisions[minute] = autoscaler.decide({})
        _feed_slot(autoscaler, clock, _ramp_rate(minute % 60))
    return decisions


def test_scales_up_before_a_known_ramp_arrives() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    decisions = _run_hours(autoscaler, clock, hours=4, decide_from_minute=180)
    needed = queueing.min_servers(30.0, 20.0, 0.15, 0.05)  # 3 replicas for 30 req/s
    assert needed == 3
    # Minute 35 of hour 4 (run minute 215): slots 35-39 ahead, still quiet.
    assert decisions[215].targets["a"] < needed
    # Minute 36 (run minute 216): the 300 s horizon reaches minute 40, the ramp, so
    # replicas are ordered 4 minutes (the provisioning lead) before it arrives.
    assert decisions[216].targets["a"] >= needed
    assert decisions[216].reason.startswith("scale_up")
    # Nothing had been seen of this hour's ramp yet: the forecast did it.
    assert decisions[216].upper_rps == pytest.approx(30.0) and _ramp_rate(35) == 3.0


def test_scales_down_after_the_ramp_only_after_the_delay_and_a_drain() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    decisions = _run_hours(autoscaler, clock, hours=5, decide_from_minute=180)
    high = decisions[225].targets["a"]  # minute 45, inside the ramp
    quiet = decisions[215].targets["a"]
    # The ramp ends at minute 50 (run minute 230); the optimiser wants fewer
    # replicas soon after, but the count holds for the 600 s downscale delay.
    wants_less = min(m for m in range(230, 240) if decisions[m].desired["a"] < high)
    for minute in range(wants_less, wants_less + 10):
        assert decisions[minute].targets["a"] == high
        assert decisions[minute].draining["a"] == 0
    # Then the leaving replicas drain: still counted, no new traffic...
    draining = decisions[wants_less + 10]
    assert draining.reason.startswith("drain")
    assert draining.targets["a"] == high
    assert draining.draining["a"] == high - quiet
    # ...and go at the next decision, 60 s later (> drain_s = 30 s).
    after = decisions[wants_less + 11]
    assert (after.targets["a"], after.draining["a"]) == (quiet, 0)
    assert "scale_down" in after.reason


def test_draining_replicas_serve_again_when_demand_returns() -> None:
    settings = replace(SETTINGS, downscale_delay_s=0.0, drain_s=600.0)
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)], settings)
    first = _decide_at_flat_rate(autoscaler, clock, 40.0)
    busy = first.targets["a"]
    # Load falls away: the optimiser wants fewer, and with no delay they drain.
    for _ in range(6):
        _feed_slot(autoscaler, clock, 1.0)
    drained = autoscaler.decide({"a": busy})
    assert drained.draining["a"] > 0 and drained.targets["a"] == busy
    # Load comes back before drain_s: the draining replicas are taken back first.
    for _ in range(2):
        _feed_slot(autoscaler, clock, 40.0)
    back = autoscaler.decide({"a": busy})
    assert back.draining["a"] == 0
    assert back.targets["a"] == busy


def test_does_not_oscillate_under_flat_noisy_load() -> None:
    rng = random.Random(3)
    settings = replace(SETTINGS, decision_interval_s=30.0, provisioning_lead_s=270.0)
    autoscaler, clock = _autoscaler([_cloud("a", 1.0), _cloud("b", 1.5)], settings)
    targets_seen = []
    for minute in range(6 * 60):
        # Poisson arrivals around 25 req/s, counted per slot (sd ~ sqrt(1500) ~ 39).
        count = max(0, round(rng.gauss(1500, math.sqrt(1500))))
        autoscaler.observe(count, count, 32 * count)
        for _ in range(2):  # two decisions a minute
            clock.advance(SLOT_S / 2)
            if minute >= 120:  # past the forecaster's first two "days"
                decision = autoscaler.decide({})
                targets_seen.append(tuple(sorted(decision.targets.items())))
    changes = sum(a != b for a, b in zip(targets_seen, targets_seen[1:], strict=False))
    # 480 decisions over 4 hours of flat load: the count settles and stays.
    assert len(targets_seen) == 480
    assert changes <= 2


# Availability, the bounded upper forecast, short bursts, the pruned MILP.


def test_a_cloud_marked_down_loses_its_replicas_to_the_next_cheapest_at_once() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0), _cloud("b", 2.0)])
    before = _decide_at_flat_rate(autoscaler, clock, 30.0)
    # 30 req/s needs 3 replicas (see the ramp tests), all in the cheaper cloud a.
    assert before.targets == {"a": 3, "b": 0}

    autoscaler.set_available("a", False)
    during = autoscaler.decide({"a": 0, "b": 0})
    # No upscale delay: b takes all 3 in the same decision; a keeps nothing.
    assert during.targets == {"a": 0, "b": 3}
    assert during.reason.startswith("scale_up")

    autoscaler.set_available("a", True)
    after = autoscaler.decide({"a": 0, "b": 3})
    # a is wanted again at once; b only drains after its 600 s downscale delay.
    assert after.targets == {"a": 3, "b": 3}


def test_noise_cannot_blow_up_the_upper_bound() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    rng = random.Random(7)
    # Near-zero slots between spikes: relative residuals reach ~50 / 0.02 = 2,500x.
    for _ in range(4 * 60):
        _feed_slot(autoscaler, clock, 50.0 if rng.random() < 0.1 else 0.02)
    decision = autoscaler.decide({})
    # Capped at upper_cap_multiple (2) x the day's highest slot rate (50) = 100 req/s,
    # or at 3x the forecast mean (plus the tracker's offset), whichever is lower.
    assert decision.upper_rps <= 2 * 50.0 + 1e-9
    assert decision.upper_rps <= max(
        3 * (decision.forecast_rps + autoscaler._upper.eps_rps),
        autoscaler._upper.recent_peak_rps(clock()),
    )


def test_a_burst_shorter_than_a_slot_is_sized_for() -> None:
    autoscaler, clock = _autoscaler([_cloud("a", 1.0)])
    for _ in range(3 * 60):
        _feed_slot(autoscaler, clock, 3.0)
    # Reports every 5 s: 3 req/s (15 per report), but 30 req/s (150) for 10 s.
    for step in range(12):
        count = 150 if step in (4, 5) else 15
        clock.advance(5.0)
        autoscaler.observe(count, count, 32 * count)
    decision = autoscaler.decide({})
    # The 10 s window holding both burst reports ran at 300 / 10 s = 30 req/s,
    # while the slot mean is (10 x 15 + 2 x 150) / 60 s = 7.5 req/s.
    assert decision.upper_rps == pytest.approx(30.0)
    assert decision.targets["a"] >= 3  # 30 req/s needs 3 replicas
    # peak_memory_s (300 s) of calm later the burst no longer counts.
    for _ in range(62):
        clock.advance(5.0)
        autoscaler.observe(15, 15, 32 * 15)
    assert autoscaler.decide({}).upper_rps < 30.0 / 2


def test_pruned_milp_finds_the_same_cost_as_the_full_one() -> None:
    rng = random.Random(3)
    for _ in range(40):
        names = [f"c{i}" for i in range(rng.randint(2, 5))]
        tables = {}
        for n in names:
            per = rng.uniform(5.0, 30.0)
            # Pooled capacity grows a little faster than linearly, like Erlang C.
            tables[n] = [per * c * (1 + 0.02 * c) for c in range(9)]
        bounds = {n: (rng.choice([0, 0, 1]), 8) for n in names}
        prices = {n: rng.uniform(0.1, 3.0) for n in names}
        on_demand = {n: rng.random() < 0.5 for n in names}
        current = {n: rng.randint(0, 8) for n in names}
        rate = rng.uniform(1.0, 200.0)
        kwargs = dict(
            floor_fraction=rng.choice([0.0, 0.3]),
            floor_replicas=rng.choice([0, 2]),
            reserve_rps=rng.choice([0.0, 0.8 * rate, 1.5 * rate]),
            change_penalty_usd_per_hour=1e-3,
        )
        args = (rate, tables, bounds, prices, on_demand, current)
        full = cheapest_counts(*args, prune=False, **kwargs)
        pruned = cheapest_counts(*args, prune=True, **kwargs)
        assert (full is None) == (pruned is None)
        if full is None or pruned is None:
            continue
        assert _cost(pruned, prices, current) == pytest.approx(
            _cost(full, prices, current), abs=1e-6
        )


def test_spot_reserve_keeps_a_spare_where_one_preemption_would_fall_short() -> None:
    # Spot "a" at $1 carries 10 req/s a replica; on-demand "c" at $4.5 carries 30.
    tables = {"a": [10.0 * n for n in range(9)], "c": [30.0 * n for n in range(9)]}
    bounds = {"a": (0, 8), "c": (0, 8)}
    prices = {"a": 1.0, "c": 4.5}
    on_demand = {"a": False, "c": True}
    args = (25.0, tables, bounds, prices, on_demand, {})
    # Without a reserve: three spot replicas, $3.
    assert cheapest_counts(*args) == {"a": 3, "c": 0}
    # 15 req/s must survive a preemption: two of the three still carry 20.
    assert cheapest_counts(*args, reserve_rps=15.0) == {"a": 3, "c": 0}
    # 25 req/s must: four spot replicas ($4) beat one on-demand ($4.5)...
    assert cheapest_counts(*args, reserve_rps=25.0) == {"a": 4, "c": 0}
    # ...and a cheaper on-demand replica, never preempted, beats them both.
    prices["c"] = 3.0
    assert cheapest_counts(*args, reserve_rps=25.0) == {"a": 0, "c": 1}


def test_spot_reserve_is_relaxed_when_the_maximum_cannot_hold_it() -> None:
    cloud = _cloud("a", 1.0, use_spot=True, spot_usd_per_hour=1.0)
    settings = replace(SETTINGS, spot_reserve_fraction=1.0)
    autoscaler, clock = _autoscaler([replace(cloud, max_replicas=2)], settings)
    for _ in range(3):
        _feed_slot(autoscaler, clock, 8.0)
    decision = autoscaler.decide({})
    # Two replicas carry 8 req/s; with one preempted, one cannot, and there is
    # no third: the rate is still served, the reserve given up and said so.
    assert decision.targets == {"a": 2}
    assert "spot_reserve_relaxed" in decision.reason
    with pytest.raises(ConfigError, match="spot_reserve_fraction"):
        AutoscalerSettings(spot_reserve_fraction=1.5)


def _cost(counts, prices, current) -> float:
    """USD/hour plus the 1e-3 per replica changed that breaks ties."""
    return sum(c * prices[n] + 1e-3 * abs(c - current[n]) for n, c in counts.items())
