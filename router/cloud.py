"""What the decision code knows about a cloud: a plain, frozen description.

The gateway builds these from its YAML config and the simulator from the price and
latency catalogues, so routing and scaling see the same shape in both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloudSpec:
    """One cloud's replica pool: where it is, what a replica costs, how far it scales.

    `use_spot` says which price the pool pays; spot capacity can be preempted, so the
    autoscaler keeps an on-demand floor beside it.
    """

    name: str
    provider: str
    region: str
    accelerator: str
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None = None
    min_replicas: int = 0
    max_replicas: int = 1
    use_spot: bool = False

    def __post_init__(self) -> None:
        if self.on_demand_usd_per_hour < 0:
            raise ValueError(
                f"cloud {self.name}: on_demand_usd_per_hour must be >= 0, "
                f"got {self.on_demand_usd_per_hour}"
            )
        if self.use_spot and self.spot_usd_per_hour is None:
            raise ValueError(f"cloud {self.name}: use_spot needs spot_usd_per_hour")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"cloud {self.name}: need 0 <= min_replicas <= max_replicas, got "
                f"{self.min_replicas} and {self.max_replicas}"
            )

    @property
    def replica_usd_per_hour(self) -> float:
        """The hourly price this pool pays per replica."""
        if self.use_spot and self.spot_usd_per_hour is not None:
            return self.spot_usd_per_hour
        return self.on_demand_usd_per_hour
