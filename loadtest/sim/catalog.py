"""Real prices and round-trip times read from the shared catalogues.

Prices come from `prices/gpu_prices.csv` (on-demand and minimum spot USD/hour per
cloud, region and instance type). Round-trip times come from three per-cloud
inter-region matrices in `latency/`; no public cross-cloud matrix exists, so a client
in a metro reaches a region of provider P with P's own measured RTT from P's region
in that metro (AWS us-east-1, GCP us-east4 and Azure eastus all sit in northern
Virginia, for example). The three matrices use different statistics (AWS P50 over a
year, GCP median over 4 h, Azure P95 over 30 days), so Azure paths read a little slow.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Each client metro and the region each provider has there (or nearest to it).
METRO_REGIONS: dict[str, dict[str, str]] = {
    "virginia": {"aws": "us-east-1", "gcp": "us-east4", "azure": "eastus"},
    "oregon": {"aws": "us-west-2", "gcp": "us-west1", "azure": "westus2"},
    "frankfurt": {
        "aws": "eu-central-1",
        "gcp": "europe-west3",
        "azure": "germanywestcentral",
    },
    "tokyo": {"aws": "ap-northeast-1", "gcp": "asia-northeast1", "azure": "japaneast"},
    "mumbai": {"aws": "ap-south-1", "gcp": "asia-south1", "azure": "centralindia"},
    "singapore": {
        "aws": "ap-southeast-1",
        "gcp": "asia-southeast1",
        "azure": "southeastasia",
    },
}


def default_data_dir() -> Path:
    """`../shared/data` next to the repository root, where the real data lives."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class PriceRow:
    """One instance type's list prices in one region."""

    provider: str
    region: str
    instance_type: str
    accelerator: str
    accelerator_count: int
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None
    price_scope: str


def load_prices(path: Path) -> list[PriceRow]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            spot = r["spot_price_per_hour"]
            rows.append(
                PriceRow(
                    provider=r["cloud"],
                    region=r["region"],
                    instance_type=r["instance_type"],
                    accelerator=r["accelerator"],
                    accelerator_count=int(r["accelerator_count"]),
                    on_demand_usd_per_hour=float(r["price_per_hour"]),
                    spot_usd_per_hour=float(spot) if spot else None,
                    price_scope=r["price_scope"],
                )
            )
    return rows


def find_price(
    rows: list[PriceRow], provider: str, region: str, instance_type: str
) -> PriceRow:
    """The row of a full-VM price; GCP accelerator-only rows are never returned."""
    for row in rows:
        if (
            row.provider == provider
            and row.region == region
            and row.instance_type == instance_type
            and row.price_scope in ("instance", "host_plus_accelerator_derived")
        ):
            return row
    raise KeyError(f"no full-VM price for {provider} {region} {instance_type}")


class RttTable:
    """Measured inter-region round-trip times, one matrix per provider."""

    def __init__(self, rtt_ms: dict[tuple[str, str, str], float]) -> None:
        self._rtt_ms = rtt_ms

    @classmethod
    def load(cls, path: Path) -> RttTable:
        """Read `interregion_rtt_all_clouds.csv` (provider, src, dst, rtt_ms)."""
        table: dict[tuple[str, str, str], float] = {}
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                table[(r["cloud"], r["src_region"], r["dst_region"])] = float(
                    r["rtt_ms"]
                )
        return cls(table)

    def rtt_ms(self, provider: str, src: str, dst: str) -> float | None:
        direct = self._rtt_ms.get((provider, src, dst))
        if direct is not None:
            return direct
        return self._rtt_ms.get((provider, dst, src))

    def client_rtt_ms(self, metro: str, provider: str, region: str) -> float:
        """RTT from a client metro to a provider's region, via that provider's matrix.

        The Azure matrix has no same-region entries; a same-region Azure path takes
        the AWS same-region RTT measured in that metro instead.
        """
        src = METRO_REGIONS[metro][provider]
        value = self.rtt_ms(provider, src, region)
        if value is not None:
            return value
        if src == region:
            aws_src = METRO_REGIONS[metro]["aws"]
            same = self.rtt_ms("aws", aws_src, aws_src)
            if same is not None:
                return same
        raise KeyError(f"no RTT for {provider} {src} -> {region}")
