"""A small simulated world for the simulator's unit tests: no shared data needed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from loadtest.sim.baselines import StaticScaler
from loadtest.sim.scenario import Outage, Scenario
from loadtest.sim.service import ServiceCurve
from loadtest.sim.setups import Setup
from loadtest.sim.traces import RateTrace
from router.cloud import CloudSpec
from router.demand import AcceleratorSpec, DemandModel, LengthMix, ModelShape

METRO = "here"
MINILM = ModelShape(
    layers=6, hidden=384, intermediate=1536, heads=12, vocab=30522, max_positions=512
)


def world(
    pools: Mapping[str, tuple[float, bool]],
    *,
    batch_latency_s: tuple[float, ...] = (0.010,),
    rtt_s: float = 0.0,
    slo_s: float = 0.2,
    preemptions_per_replica_hour: float = 0.0,
    outages: tuple[Outage, ...] = (),
    provisioning_s: float = 60.0,
) -> Scenario:
    """One metro; each pool is `name: (usd_per_hour, spot)`, all in region r1.

    Every replica serves by `batch_latency_s` (index = batch size - 1).
    """
    clouds = tuple(
        CloudSpec(
            name=name,
            provider="aws",
            region="r1",
            accelerator="T4",
            on_demand_usd_per_hour=price,
            spot_usd_per_hour=price if spot else None,
            max_replicas=8,
            use_spot=spot,
        )
        for name, (price, spot) in pools.items()
    )
    deployed = tuple(
        CloudSpec(**{**vars(c), "name": f"{METRO}/{c.name}"}) for c in clouds
    )
    curve = ServiceCurve(batch_latency_s, 128.0)
    demand = DemandModel(
        MINILM,
        {"T4": AcceleratorSpec("T4", 65e12, 0.3)},
        length_mix=LengthMix.single(128),
    )
    return Scenario(
        clouds=clouds,
        clients={METRO: 1.0},
        deployments={METRO: deployed},
        base_of={d.name: c.name for d, c in zip(deployed, clouds, strict=True)},
        rtt_s={d.name: rtt_s for d in deployed},
        curves={c.name: curve for c in clouds},
        capacity_seq_per_s={c.name: curve.peak_seq_per_s for c in clouds},
        demand=demand,
        slo_s=slo_s,
        quantile=0.99,
        provisioning_s=provisioning_s,
        preemptions_per_replica_hour=preemptions_per_replica_hour,
        outages=outages,
    )


def constant_trace(rate_rps: float, sim_s: int, warmup_s: int = 60) -> RateTrace:
    return RateTrace(
        "constant", 1.0, np.full(warmup_s + sim_s, rate_rps), warmup_s, 1.0, "t0"
    )


def static_setup(counts: Mapping[str, int], policy: str = "slo_cost") -> Setup:
    """A fixed deployment: `counts` per pool name (without the metro prefix)."""
    full = {f"{METRO}/{name}": n for name, n in counts.items()}
    return Setup("static", policy, lambda s, p, c: StaticScaler(full), 10.0)
