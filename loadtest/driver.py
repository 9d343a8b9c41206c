"""One event loop's share of a run: sends its requests and records what happened.

Open loop: a request leaves at its scheduled time whatever the state of earlier ones,
so a slow server shows up as latency and errors, never as a slower offered rate.
Closed loop: N workers each send the next request when the previous one returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from loadtest.plan import RequestPlan
from loadtest.protocols import Outcome, TargetConfig, make_sender
from loadtest.records import LOST, NOT_SENT, Record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLimits:
    """Hard caps on a run's time, always on.

    Nothing is sent after `max_duration_s`; requests in flight then get
    `drain_timeout_s` to answer, after which they count as lost. In a closed loop a
    worker whose request was refused for load (HTTP 503 or 429, gRPC UNAVAILABLE or
    RESOURCE_EXHAUSTED) waits `refusal_backoff_s` before its next one, as a client
    that honours Retry-After does; 0 sends again at once.
    """

    max_duration_s: float = 300.0
    drain_timeout_s: float = 10.0
    refusal_backoff_s: float = 0.0


REFUSED_KINDS = frozenset(
    {"http_503", "http_429", "grpc_UNAVAILABLE", "grpc_RESOURCE_EXHAUSTED"}
)


class ShardDriver:
    """Sends one shard's requests from one event loop and records what happened."""

    def __init__(
        self,
        shard_index: int,
        target: TargetConfig,
        plan: RequestPlan,
        texts: list[str],
        limits: RunLimits,
        counter: Any,
    ) -> None:
        self.shard_index = shard_index
        self.target = target
        self.plan = plan
        self.texts = texts
        self.limits = limits
        self.counter = counter
        self.sender = make_sender(target)
        n = len(plan)
        self._send_s: list[float | None] = [None] * n
        self._latency_s: list[float | None] = [None] * n
        self._kind: list[str] = [NOT_SENT] * n
        self._status: list[str | None] = [None] * n
        self._cloud: list[str | None] = [None] * n
        self._start_at = 0.0
        self._logged_error = False

    async def open(self) -> None:
        await self.sender.open()

    async def _one(self, j: int) -> None:
        texts = self.plan.texts_of(j, self.texts)
        sent_at = time.monotonic()
        self._send_s[j] = sent_at - self._start_at
        self._kind[j] = LOST
        try:
            outcome = await self.sender.send(texts)
        except Exception as error:
            # Loop boundary: a sender bug must not stop the run; it is recorded and
            # logged once per shard rather than once per request.
            if not self._logged_error:
                logger.exception("event=send_failed shard=%d", self.shard_index)
                self._logged_error = True
            outcome = Outcome("error", type(error).__name__)
        self._latency_s[j] = time.monotonic() - sent_at
        self._kind[j] = outcome.kind
        self._status[j] = outcome.status
        self._cloud[j] = outcome.cloud
        self.counter.value += 1

    async def run_open_loop(self, start_at: float) -> list[Record]:
        """Fires each request at its scheduled offset from `start_at`."""
        assert self.plan.offsets_s is not None
        self._start_at = start_at
        loop = asyncio.get_running_loop()
        due_at = (self.plan.offsets_s + start_at).tolist()
        stop_at = start_at + self.limits.max_duration_s
        tasks: set[asyncio.Task[None]] = set()
        n = len(due_at)
        i = 0
        while i < n:
            now = time.monotonic()
            if due_at[i] >= stop_at or now >= stop_at:
                break
            if due_at[i] > now:
                await asyncio.sleep(due_at[i] - now)
                continue
            # Fire every request that is due; they start when this loop yields.
            while i < n and due_at[i] <= now and due_at[i] < stop_at:
                task = loop.create_task(self._one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(0)
        await self._drain(tasks)
        return self.records()

    async def run_closed_loop(self, start_at: float, concurrency: int) -> list[Record]:
        """`concurrency` workers, each sending anew when its last request returns."""
        self._start_at = start_at
        delay_s = start_at - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        stop_at = start_at + self.limits.max_duration_s
        next_index = iter(range(len(self.plan)))

        backoff_s = self.limits.refusal_backoff_s

        async def worker() -> None:
            for j in next_index:
                if time.monotonic() >= stop_at:
                    return
                await self._one(j)
                if backoff_s > 0 and self._kind[j] in REFUSED_KINDS:
                    await asyncio.sleep(
                        max(0.0, min(backoff_s, stop_at - time.monotonic()))
                    )

        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(worker()) for _ in range(max(1, concurrency))}
        await self._drain(tasks, until=stop_at)
        return self.records()

    async def _drain(
        self, tasks: set[asyncio.Task[None]], until: float | None = None
    ) -> None:
        """Waits for in-flight requests, then cancels the rest (recorded as lost)."""
        base = time.monotonic() if until is None else until
        timeout_s = max(0.0, base + self.limits.drain_timeout_s - time.monotonic())
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                logger.warning(
                    "event=requests_lost shard=%d count=%d",
                    self.shard_index,
                    len(pending),
                )
        await self.sender.close()

    def records(self) -> list[Record]:
        plan = self.plan
        offsets = None if plan.offsets_s is None else plan.offsets_s.tolist()
        ids = plan.ids.tolist()
        num_texts = plan.num_texts.tolist()
        return [
            Record(
                id=ids[j],
                scheduled_s=None if offsets is None else offsets[j],
                send_s=self._send_s[j],
                latency_s=None if self._kind[j] == LOST else self._latency_s[j],
                kind=self._kind[j],
                status=self._status[j],
                protocol=self.target.protocol,
                cloud=self._cloud[j],
                num_texts=num_texts[j],
                shard=self.shard_index,
            )
            for j in range(len(ids))
        ]
