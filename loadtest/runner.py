"""Runs a plan against a target: open loop on a schedule, or closed loop.

One event loop drives the whole plan (`loadtest.driver`), or the plan is dealt
round-robin to worker processes, one event loop each, that start on a shared
monotonic instant; their records are merged by request id. Either way this process
also shows progress and scrapes the gateway's /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest.driver import RunLimits, ShardDriver
from loadtest.plan import RequestPlan
from loadtest.protocols import TargetConfig
from loadtest.records import Record
from loadtest.scrape import MetricsScraper, ScrapeSample

logger = logging.getLogger(__name__)

# Time between "every shard is ready" and the first scheduled send.
_START_DELAY_S = 0.3
_SETUP_TIMEOUT_S = 60.0


@dataclass
class RunResult:
    records: list[Record]
    scrapes: list[ScrapeSample] = field(default_factory=list)
    metrics_available: bool | None = None
    wall_s: float = 0.0
    shards: int = 1


class _Count:
    """A completion counter with the same `.value` as a shared multiprocessing one."""

    def __init__(self) -> None:
        self.value = 0


async def _drive(
    driver: ShardDriver, start_at: float, concurrency: int | None
) -> list[Record]:
    if concurrency is None:
        return await driver.run_open_loop(start_at)
    return await driver.run_closed_loop(start_at, concurrency)


def _shard_process(
    shard_index: int,
    target: TargetConfig,
    plan: RequestPlan,
    texts: list[str],
    limits: RunLimits,
    concurrency: int | None,
    counter: Any,
    start_value: Any,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Entry point of one worker process: set up, report ready, wait for go, run."""

    async def main() -> list[Record]:
        driver = ShardDriver(shard_index, target, plan, texts, limits, counter)
        await driver.open()
        ready.put(shard_index)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, _SETUP_TIMEOUT_S):
            raise TimeoutError("no start signal from the parent process")
        return await _drive(driver, start_value.value, concurrency)

    records = asyncio.run(main())
    results.put((shard_index, records))


def _split_concurrency(concurrency: int | None, shards: int) -> list[int | None]:
    if concurrency is None:
        return [None] * shards
    return [
        concurrency // shards + (1 if k < concurrency % shards else 0)
        for k in range(shards)
    ]


async def _watch(
    counters: list[Any],
    total: int,
    show_progress: bool,
    stop: asyncio.Event,
) -> None:
    """Updates the progress bar from the shards' completion counters."""
    from tqdm import tqdm

    with tqdm(total=total, disable=not show_progress, unit="req", smoothing=0.1) as bar:
        shown = 0
        while not stop.is_set():
            done = sum(c.value for c in counters)
            bar.update(done - shown)
            shown = done
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.25)
            except TimeoutError:
                pass
        bar.update(sum(c.value for c in counters) - shown)


async def _run_in_process(
    target: TargetConfig,
    plan: RequestPlan,
    texts: list[str],
    limits: RunLimits,
    concurrency: int | None,
    metrics_url: str | None,
    scrape_interval_s: float,
    show_progress: bool,
) -> RunResult:
    counter = _Count()
    driver = ShardDriver(0, target, plan, texts, limits, counter)
    await driver.open()
    start_at = time.monotonic() + _START_DELAY_S
    stop = asyncio.Event()
    scraper = (
        MetricsScraper(metrics_url, scrape_interval_s, start_at)
        if metrics_url
        else None
    )
    side_tasks = [
        asyncio.create_task(_watch([counter], len(plan), show_progress, stop))
    ]
    if scraper is not None:
        side_tasks.append(asyncio.create_task(scraper.run(stop)))
    try:
        records = await _drive(driver, start_at, concurrency)
    finally:
        stop.set()
        await asyncio.gather(*side_tasks)
    return RunResult(
        records=records,
        scrapes=scraper.samples if scraper else [],
        metrics_available=scraper.available if scraper else None,
    )


async def _collect(
    results: Any,
    processes: list[Any],
    loop: asyncio.AbstractEventLoop,
    give_up_at: float,
) -> list[Record]:
    """Gathers every shard's records; fails fast if a shard dies without them."""
    merged: list[Record] = []
    received: set[int] = set()
    while len(received) < len(processes):
        try:
            index, records = await loop.run_in_executor(None, results.get, True, 0.5)
        except queue.Empty:
            dead = [
                k
                for k, p in enumerate(processes)
                if k not in received and p.exitcode is not None and p.exitcode != 0
            ]
            if dead or time.monotonic() > give_up_at:
                raise RuntimeError(
                    f"load shards {dead} ended without results"
                ) from None
            continue
        received.add(index)
        merged.extend(records)
    return merged


async def _run_sharded(
    target: TargetConfig,
    plan: RequestPlan,
    texts: list[str],
    limits: RunLimits,
    concurrency: int | None,
    metrics_url: str | None,
    scrape_interval_s: float,
    show_progress: bool,
    shards: int,
) -> RunResult:
    # spawn, not fork: gRPC's threads do not survive a fork.
    context = multiprocessing.get_context("spawn")
    counters = [context.RawValue("q", 0) for _ in range(shards)]
    start_value = context.RawValue("d", 0.0)
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    processes = [
        context.Process(
            target=_shard_process,
            args=(
                k,
                target,
                plan.shard(k, shards),
                texts,
                limits,
                share,
                counters[k],
                start_value,
                ready,
                go,
                results,
            ),
            daemon=True,
        )
        for k, share in enumerate(_split_concurrency(concurrency, shards))
    ]
    loop = asyncio.get_running_loop()
    try:
        for process in processes:
            process.start()
        for _ in processes:
            await loop.run_in_executor(None, ready.get, True, _SETUP_TIMEOUT_S)
        start_at = time.monotonic() + _START_DELAY_S
        start_value.value = start_at
        go.set()

        stop = asyncio.Event()
        scraper = (
            MetricsScraper(metrics_url, scrape_interval_s, start_at)
            if metrics_url
            else None
        )
        side_tasks = [
            asyncio.create_task(_watch(counters, len(plan), show_progress, stop))
        ]
        if scraper is not None:
            side_tasks.append(asyncio.create_task(scraper.run(stop)))
        give_up_at = (
            start_at + limits.max_duration_s + limits.drain_timeout_s + _SETUP_TIMEOUT_S
        )
        try:
            merged = await _collect(results, processes, loop, give_up_at)
        finally:
            stop.set()
            await asyncio.gather(*side_tasks)
        for process in processes:
            await loop.run_in_executor(None, process.join, 10.0)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    merged.sort(key=lambda record: record.id)
    return RunResult(
        records=merged,
        scrapes=scraper.samples if scraper else [],
        metrics_available=scraper.available if scraper else None,
        shards=shards,
    )


def run_load(
    target: TargetConfig,
    plan: RequestPlan,
    texts: list[str],
    *,
    limits: RunLimits,
    shards: int = 1,
    concurrency: int | None = None,
    metrics_url: str | None = None,
    scrape_interval_s: float = 1.0,
    show_progress: bool = False,
) -> RunResult:
    """Runs the plan (open loop if it has a schedule, else closed loop).

    Args:
        concurrency: closed-loop workers in all (split over shards); None for open loop.
        metrics_url: the gateway's Prometheus endpoint to scrape, or None.
    """
    if (plan.offsets_s is None) == (concurrency is None):
        raise ValueError("give a schedule (open loop) or a concurrency (closed loop)")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    started_s = time.monotonic()
    if shards == 1:
        coroutine = _run_in_process(
            target,
            plan,
            texts,
            limits,
            concurrency,
            metrics_url,
            scrape_interval_s,
            show_progress,
        )
    else:
        coroutine = _run_sharded(
            target,
            plan,
            texts,
            limits,
            concurrency,
            metrics_url,
            scrape_interval_s,
            show_progress,
            shards,
        )
    result = asyncio.run(coroutine)
    result.wall_s = time.monotonic() - started_s
    return result
