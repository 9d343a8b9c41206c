"""The offline lower bound: by hand on a constant load, and below every policy."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.bound import (
    BoundResult,
    lower_bound,
    per_replica_rps,
    with_provisioning_lead,
)
from loadtest.sim.engine import EngineSettings, run
from loadtest.sim.setups import SETUPS, Setup, _qps_scaler
from loadtest.sim.traces import RateTrace
from tests.unit.sim_world import METRO, constant_trace, static_setup, world


def test_bound_pays_exactly_the_replicas_a_constant_load_needs():
    # One pool at $1/h. The bound buys D / k replicas every slot, where k is what
    # one replica carries within the SLO, so one hour costs 1 * D / k dollars.
    scenario = world({"only": (1.0, False)})
    k = per_replica_rps(scenario, f"{METRO}/only", 8)
    result = lower_bound(scenario, constant_trace(50.0, 3600), slot_s=60.0)

    assert result.usd == pytest.approx(50.0 / k, rel=1e-6)
    assert result.replica_hours == pytest.approx(50.0 / k, rel=1e-6)


def test_bound_prefers_the_cheaper_pool_and_spills_at_its_cap():
    # Pools of 8 replicas at most: the cheap one is filled first, then the other.
    scenario = world({"cheap": (1.0, False), "dear": (3.0, False)})
    k = per_replica_rps(scenario, f"{METRO}/cheap", 8)
    demand_rps = 10 * k  # needs 10 replicas: 8 cheap + 2 dear
    result = lower_bound(scenario, constant_trace(demand_rps, 3600))

    # 8 * $1 + 2 * $3 = $14 for the hour.
    assert result.usd == pytest.approx(14.0, rel=1e-6)


def test_integer_bound_rounds_each_slot_up():
    scenario = world({"only": (1.0, False)})
    k = per_replica_rps(scenario, f"{METRO}/only", 8)
    result = lower_bound(scenario, constant_trace(1.5 * k, 600), integer=True)

    # 1.5 replicas of demand need 2 whole ones: 2 * $1 * 600 / 3600 h.
    assert result.usd == pytest.approx(2 * 600 / 3600, rel=1e-6)


def test_a_short_last_slot_is_billed_for_its_own_length():
    scenario = world({"only": (1.0, False)})
    k = per_replica_rps(scenario, f"{METRO}/only", 8)
    result = lower_bound(scenario, constant_trace(1.5 * k, 90), integer=True)

    # Two whole replicas for 90 s, not for two full minutes.
    assert result.usd == pytest.approx(2 * 90 / 3600, rel=1e-6)
    assert result.replica_hours == pytest.approx(2 * 90 / 3600, rel=1e-6)
    led = with_provisioning_lead(result, 60.0)
    assert led == pytest.approx(result.usd, rel=1e-6)


def test_the_lead_bills_each_slot_for_the_dearest_slot_it_must_launch_for():
    # $/h per 60 s slot; a 120 s lead reaches two slots ahead, so the spike of
    # slot 2 is billed from slot 0 on: [5, 5, 5, 1, 1] dollars per hour.
    bound = BoundResult(0.0, 1.0, 0.0, 60.0, True, (1.0, 1.0, 5.0, 1.0, 1.0))

    assert with_provisioning_lead(bound, 120.0) == pytest.approx(17 / 60)
    assert with_provisioning_lead(bound, 119.0) == pytest.approx(13 / 60)
    assert with_provisioning_lead(bound, 0.0) == pytest.approx(9 / 60)
    # The same slots over 270 s: the last one is half a slot.
    cut = BoundResult(0.0, 1.0, 0.0, 60.0, True, (1.0, 1.0, 5.0, 1.0, 1.0), 270.0)
    assert with_provisioning_lead(cut, 120.0) == pytest.approx(16.5 / 60)
    with pytest.raises(ValueError, match="lead_s"):
        with_provisioning_lead(bound, -1.0)


def test_bound_is_never_above_any_policy_that_meets_the_slo():
    # A day-like ramp compressed into two hours, served by a static peak
    # deployment, SkyServe-like scaling and our forecasting autoscaler.
    scenario = world(
        {"cheap": (1.0, True), "dear": (3.0, False)},
        batch_latency_s=(0.010, 0.012, 0.014, 0.016),
        slo_s=0.1,
        provisioning_s=185.0,  # billed 180 s ahead: three minute-slots
    )
    seconds = np.arange(2 * 3600 + 3600)
    rates = 300.0 + 250.0 * np.sin(2 * np.pi * seconds / 7200.0)
    trace = RateTrace("ramp", 1.0, rates, 3600, 1.0, "t0")
    setups = [
        static_setup({"cheap": 4, "dear": 2}),
        Setup("skyserve_like", "p2c_queue", _qps_scaler(0.7), 20.0),
        SETUPS["ours"],
    ]
    bound = lower_bound(scenario, trace)
    settings = EngineSettings(dt_s=5)
    # The engine bills a launch from the next step: the lead billed is one less.
    led = with_provisioning_lead(
        lower_bound(scenario, trace, integer=True),
        scenario.provisioning_s - settings.dt_s,
    )
    results = [run(scenario, trace, s, settings) for s in setups]

    meeting = [r for r in results if r.slo_attainment >= 0.99]
    assert meeting, [r.slo_attainment for r in results]
    assert bound.usd <= led
    for result in meeting:
        assert bound.usd <= result.usd, result.setup
        assert led <= result.usd, result.setup
