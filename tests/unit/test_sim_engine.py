"""The simulator's engines: conservation, queueing theory, preemption, outages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from loadtest.sim.engine import EngineSettings, run
from loadtest.sim.events import RequestState
from loadtest.sim.scenario import Outage
from tests.unit.sim_world import METRO, constant_trace, static_setup, world


def test_fluid_engine_counts_every_request_once_through_preemption_and_outage():
    # Both pools sit in region r1, which is down from 200 s to 300 s; the spot pool
    # is preempted often. Whatever happens, each arrival gets exactly one fate.
    scenario = world(
        {"spot": (0.2, True), "od": (0.5, False)},
        preemptions_per_replica_hour=50.0,
        outages=(Outage("r1", 200.0, 300.0),),
    )
    result = run(
        scenario,
        constant_trace(150.0, 600),
        static_setup({"spot": 2, "od": 1}),
        EngineSettings(dt_s=1),
    )

    # 150 requests/s for 600 s = 90,000 arrivals.
    assert result.arrivals == pytest.approx(90_000)
    assert result.outcome.total == pytest.approx(result.arrivals, rel=1e-9)
    assert result.outcome.failed > 0  # the outage refused requests
    assert result.preemptions > 0


def test_per_request_engine_counts_every_request_once_through_an_outage():
    scenario = world(
        {"spot": (0.2, True), "od": (0.5, False)},
        preemptions_per_replica_hour=50.0,
        outages=(Outage("r1", 100.0, 150.0),),
    )
    result = run(
        scenario,
        constant_trace(50.0, 300),
        static_setup({"spot": 1, "od": 1}),
        EngineSettings(dt_s=1),
        RequestState,
    )

    outcome = result.outcome
    assert outcome.in_slo + outcome.late + outcome.dropped + outcome.failed == (
        result.arrivals
    )
    assert outcome.failed > 0
    assert result.arrivals == pytest.approx(50 * 300, rel=0.05)  # Poisson count


def test_single_replica_without_batching_matches_md1_mean_wait():
    # M/D/1: service D = 10 ms, arrivals 60/s, so rho = 0.6 and the mean wait is
    # rho * D / (2 * (1 - rho)) = 0.6 * 10 / 0.8 = 7.5 ms; with no network the mean
    # latency is D + 7.5 = 17.5 ms.
    scenario = world({"only": (1.0, False)}, batch_latency_s=(0.010,), slo_s=1.0)
    result = run(
        scenario,
        constant_trace(60.0, 900),
        static_setup({"only": 1}),
        EngineSettings(dt_s=1, seed=3),
        RequestState,
    )

    assert result.outcome.mean_latency_s == pytest.approx(0.0175, rel=0.10)


def test_fluid_engine_agrees_with_per_request_engine_on_a_batching_pool():
    # Batches of up to 4: 10, 12, 14, 16 ms, i.e. at most 250 sequences/s per
    # replica; 2 replicas at 300/s run at 60 % of that.
    scenario = world(
        {"only": (1.0, False)}, batch_latency_s=(0.010, 0.012, 0.014, 0.016)
    )
    setup = static_setup({"only": 2})
    trace = constant_trace(300.0, 600)
    fluid = run(scenario, trace, setup, EngineSettings(dt_s=1))
    exact = run(scenario, trace, setup, EngineSettings(dt_s=1), RequestState)

    assert fluid.usd == pytest.approx(exact.usd, rel=0.01)
    assert fluid.outcome.mean_latency_s == pytest.approx(
        exact.outcome.mean_latency_s, rel=0.25
    )


def test_preemption_moves_load_from_spot_to_on_demand():
    # slo_cost sends everything to the cheaper spot pool while it has replicas.
    pools = {"spot": (0.2, True), "od": (0.5, False)}
    setup = static_setup({"spot": 2, "od": 2})
    trace = constant_trace(200.0, 600)

    calm = run(world(pools), trace, setup, EngineSettings(dt_s=1))
    # 10,000 preemptions per replica-hour: a spot replica lasts well under a second.
    stormy = run(
        world(pools, preemptions_per_replica_hour=10_000.0),
        trace,
        setup,
        EngineSettings(dt_s=1),
    )

    def od_share(result):
        served = result.served_by_pool
        return served.get(f"{METRO}/od", 0.0) / sum(served.values())

    assert od_share(calm) < 0.05
    assert od_share(stormy) > 0.9
    assert stormy.slo_attainment > 0.99


@pytest.mark.parametrize("engine", [None, RequestState], ids=["fluid", "per_request"])
def test_admission_refuses_the_excess_and_keeps_the_rest_in_the_slo(engine):
    # One replica, batches of one at 10 ms: 100 requests/s. 150/s arrive, so a
    # third of them cannot be served at all. Queueing them all (a client waits up
    # to max_wait_s = 2 s) makes nearly every request late; refusing what would not
    # finish within 0.8 of the SLO (0.16 s - 10 ms of wait) refuses about that third and
    # serves the rest in time.
    scenario = world({"only": (1.0, False)}, batch_latency_s=(0.010,), slo_s=0.2)
    trace = constant_trace(150.0, 300)
    results = {}
    for admission in (False, True):
        fraction = 0.8 if admission else None
        setup = replace(static_setup({"only": 1}), admission_slo_fraction=fraction)
        results[admission] = run(scenario, trace, setup, EngineSettings(dt_s=1), engine)

    queued, admitted = results[False], results[True]
    assert queued.slo_attainment < 0.1
    assert admitted.outcome.dropped / admitted.arrivals == pytest.approx(
        1 / 3, abs=0.05
    )
    assert admitted.slo_attainment == pytest.approx(2 / 3, abs=0.05)
