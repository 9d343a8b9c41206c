"""An outage under our autoscaler: the simulator reports it and capacity moves."""

from __future__ import annotations

from dataclasses import replace

from loadtest.sim.engine import EngineSettings, run
from loadtest.sim.scenario import Outage
from loadtest.sim.setups import SETUPS
from tests.unit.sim_world import METRO, constant_trace, world


def test_ours_replaces_a_downed_regions_capacity_in_another_region():
    # Pool "near" (cheap) in r1, pool "far" (dearer) moved to r2; r1 is down from
    # 300 s to 900 s of a 1,200 s window at a constant 150 requests/s.
    scenario = world(
        {"near": (0.2, False), "far": (0.5, False)},
        outages=(Outage("r1", 300.0, 900.0),),
    )
    far = f"{METRO}/far"
    pools = tuple(
        replace(p, region="r2") if p.name == far else p
        for p in scenario.deployments[METRO]
    )
    scenario = replace(scenario, deployments={METRO: pools})

    result = run(
        scenario,
        constant_trace(150.0, 1200, warmup_s=600),
        SETUPS["ours"],
        EngineSettings(dt_s=1, burn_in_s=300),
    )

    # Before the outage everything runs on "near"; during it, "far" is ordered at
    # the first decision (<= 30 s) and ready 60 s (provisioning) later, so at most
    # ~90 s x 150/s = 13,500 of the 600 s x 150/s = 90,000 outage-time requests
    # fail, against all 90,000 if nothing were ordered elsewhere.
    assert result.served_by_pool.get(far, 0.0) > 0.5 * 150.0 * 600
    assert result.outcome.failed < 15_000
    assert result.arrivals == 150.0 * 1200
