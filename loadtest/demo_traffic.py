"""The demo's traffic: where arrivals and texts come from, and both protocols at once.

With the public data beside the repository, arrivals are the Azure LLM 2023
conversation trace (per-request timestamps, compressed in time and rate-scaled)
and texts are real BANKING77 customer messages. Without it, arrivals follow a
synthetic diurnal shape and texts are the demo set's own held-out split. Requests
alternate between an HTTP (OIP v2) driver and a gRPC driver that share one event
loop and one start instant, so each protocol carries half the rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest import arrivals
from loadtest.driver import RunLimits, ShardDriver
from loadtest.plan import RequestPlan, build_plan, load_texts, parse_mix
from loadtest.protocols import TargetConfig
from loadtest.records import Record
from loadtest.scrape import MetricsScraper, ScrapeSample

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEMO_TEST_CSV = REPO_ROOT / "data" / "demo_intents" / "test.csv"
TRACE_NAME = "traces/azure_llm_inference_2023_conv.csv"
TEXTS_NAME = "intent/banking77_test.csv"
# Trace minutes played per second of demo: 30 trace minutes in 120 s keeps the
# trace's minute-scale swings (up to 1.5x its mean) inside a two-minute run.
TRACE_MINUTES_PER_S = 0.25
TRACE_START_MIN = 5.0
FALLBACK_SHAPE = "diurnal"
# Mostly single texts, some small batches: mean 1 * 0.85 + 4 * 0.15 = 1.45 texts.
TEXT_MIX = "1:0.85,4:0.15"
_START_DELAY_S = 0.5


@dataclass(frozen=True)
class TrafficSource:
    """What the demo replays: arrival offsets, a text pool, and their origins."""

    offsets_s: np.ndarray
    texts: list[str]
    arrivals_from: str
    texts_from: str
    shared_data: bool
    window_min: float | None


def choose_source(
    *,
    duration_s: float,
    rate_rps: float,
    rng: np.random.Generator,
    shared_dir: Path = SHARED_DATA_DIR,
) -> TrafficSource:
    """The real trace and texts when the shared data is there, else the fallback."""
    trace_path = shared_dir / TRACE_NAME
    texts_path = shared_dir / TEXTS_NAME
    if trace_path.is_file() and texts_path.is_file():
        trace = arrivals.load_trace(trace_path)
        span_min = (
            trace.span_s if isinstance(trace, arrivals.RequestTrace) else 0.0
        ) / 60.0
        window_min = min(duration_s * TRACE_MINUTES_PER_S, span_min - TRACE_START_MIN)
        offsets_s = arrivals.trace_schedule(
            trace,
            duration_s=duration_s,
            rng=rng,
            window_min=window_min,
            start_min=TRACE_START_MIN,
            target_rps=rate_rps,
        )
        return TrafficSource(
            offsets_s=offsets_s,
            texts=load_texts(texts_path),
            arrivals_from=f"{TRACE_NAME} minutes {TRACE_START_MIN:g}-"
            f"{TRACE_START_MIN + window_min:g} in {duration_s:g} s",
            texts_from=TEXTS_NAME,
            shared_data=True,
            window_min=window_min,
        )

    print(
        f"demo: shared data not found at {shared_dir}; using a synthetic "
        f"{FALLBACK_SHAPE} shape and the demo set's test texts"
    )
    offsets_s = arrivals.shape_schedule(
        FALLBACK_SHAPE, duration_s=duration_s, mean_rps=rate_rps, rng=rng
    )
    return TrafficSource(
        offsets_s=offsets_s,
        texts=load_texts(DEMO_TEST_CSV),
        arrivals_from=f"synthetic {FALLBACK_SHAPE} shape, {duration_s:g} s",
        texts_from="data/demo_intents/test.csv",
        shared_data=False,
        window_min=None,
    )


def demo_plan(source: TrafficSource, rng: np.random.Generator) -> RequestPlan:
    return build_plan(
        num_requests=len(source.offsets_s),
        pool_size=len(source.texts),
        mix=parse_mix(TEXT_MIX),
        rng=rng,
        offsets_s=source.offsets_s,
    )


@dataclass
class TrafficResult:
    records: list[Record]
    scrapes: list[ScrapeSample]
    metrics_available: bool | None
    wall_s: float


def replay_both(
    targets: list[TargetConfig],
    plan: RequestPlan,
    texts: list[str],
    *,
    limits: RunLimits,
    metrics_url: str | None,
) -> TrafficResult:
    """Plays request k through `targets[k % len(targets)]`, all from one start."""
    started_s = time.monotonic()
    result = asyncio.run(_replay(targets, plan, texts, limits, metrics_url))
    result.wall_s = time.monotonic() - started_s
    return result


def warm_up(
    targets: list[TargetConfig],
    texts: list[str],
    warmup_s: float,
    rate_rps: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Steady traffic at `rate_rps` through every target; only its counts are kept."""
    if warmup_s <= 0:
        return {"seconds": 0.0, "requests": 0, "ok": 0}
    offsets_s = np.arange(0.0, warmup_s, 1.0 / max(rate_rps, 1.0))
    plan = build_plan(
        num_requests=len(offsets_s),
        pool_size=len(texts),
        mix=parse_mix(TEXT_MIX),
        rng=rng,
        offsets_s=offsets_s,
    )
    limits = RunLimits(max_duration_s=warmup_s, drain_timeout_s=10.0)
    result = replay_both(targets, plan, texts, limits=limits, metrics_url=None)
    ok = sum(record.kind == "ok" for record in result.records)
    return {"seconds": warmup_s, "requests": len(result.records), "ok": ok}


class _Count:
    def __init__(self) -> None:
        self.value = 0


async def _replay(
    targets: list[TargetConfig],
    plan: RequestPlan,
    texts: list[str],
    limits: RunLimits,
    metrics_url: str | None,
) -> TrafficResult:
    drivers = [
        ShardDriver(k, target, plan.shard(k, len(targets)), texts, limits, _Count())
        for k, target in enumerate(targets)
    ]
    for driver in drivers:
        await driver.open()
    start_at = time.monotonic() + _START_DELAY_S
    stop = asyncio.Event()
    scraper = MetricsScraper(metrics_url, 1.0, start_at) if metrics_url else None
    scrape_task = asyncio.create_task(scraper.run(stop)) if scraper else None
    try:
        per_driver: list[Any] = await asyncio.gather(
            *(driver.run_open_loop(start_at) for driver in drivers)
        )
    finally:
        stop.set()
        if scrape_task is not None:
            await scrape_task
    records = sorted(
        (record for records in per_driver for record in records),
        key=lambda record: record.id,
    )
    return TrafficResult(
        records=records,
        scrapes=scraper.samples if scraper else [],
        metrics_available=scraper.available if scraper else None,
        wall_s=0.0,
    )
