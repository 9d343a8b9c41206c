"""Reads the gateway's replicas and cost from its Prometheus `/metrics` during a run.

Gauges read: `bertgw_replicas{cloud=...}` and `bertgw_cost_usd_per_hour`. A gateway
without the endpoint (or a plain server) is fine: the run then has no samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

REPLICAS_METRIC = "bertgw_replicas"
COST_METRIC = "bertgw_cost_usd_per_hour"


@dataclass(frozen=True)
class ScrapeSample:
    """One scrape; `t_s` is seconds from the run's start."""

    t_s: float
    replicas: dict[str, float] = field(default_factory=dict)
    cost_usd_per_hour: float | None = None


def parse_exposition(text: str, t_s: float) -> ScrapeSample:
    """Picks replicas per cloud and the cost rate out of Prometheus text format."""
    replicas: dict[str, float] = {}
    cost_usd_per_hour: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name == REPLICAS_METRIC:
            for sample in family.samples:
                cloud = sample.labels.get("cloud")
                if cloud is not None:
                    replicas[cloud] = replicas.get(cloud, 0.0) + sample.value
        elif family.name == COST_METRIC:
            # A per-cloud cost gauge, if labelled, adds up to the gateway's total.
            cost_usd_per_hour = sum(sample.value for sample in family.samples)
    return ScrapeSample(t_s=t_s, replicas=replicas, cost_usd_per_hour=cost_usd_per_hour)


def run_cost_usd(samples: list[ScrapeSample]) -> float | None:
    """Integrates the cost rate over the run (trapezoids between scrapes)."""
    points = [
        (s.t_s, s.cost_usd_per_hour) for s in samples if s.cost_usd_per_hour is not None
    ]
    if len(points) < 2:
        return None
    total = 0.0
    for (t0, c0), (t1, c1) in zip(points, points[1:], strict=False):
        total += (c0 + c1) / 2 * (t1 - t0) / 3600.0
    return total


class MetricsScraper:
    """Polls a `/metrics` URL every `interval_s` until stopped; keeps the samples."""

    def __init__(self, url: str, interval_s: float, start_at: float) -> None:
        self.url = url
        self.interval_s = interval_s
        self.start_at = start_at
        self.samples: list[ScrapeSample] = []
        self.failures = 0
        self.available: bool | None = None

    async def scrape_once(self, session: object) -> None:
        import aiohttp

        assert isinstance(session, aiohttp.ClientSession)
        t_s = time.monotonic() - self.start_at
        try:
            async with session.get(self.url) as response:
                if response.status != 200:
                    self.failures += 1
                    self.available = bool(self.available)
                    return
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            self.failures += 1
            self.available = bool(self.available)
            return
        try:
            sample = parse_exposition(text, t_s)
        except ValueError:
            logger.warning("event=metrics_unparsable url=%s", self.url)
            self.failures += 1
            return
        self.available = True
        self.samples.append(sample)

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                await self.scrape_once(session)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
                except TimeoutError:
                    pass
            # One last look after the load stops.
            await self.scrape_once(session)
        if not self.samples:
            logger.info(
                "event=metrics_absent url=%s failures=%d", self.url, self.failures
            )
