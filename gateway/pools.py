"""Replica pools: where the ingress sends texts for one cloud, whatever that cloud is.

A `ReplicaPool` is the only thing the dispatcher and the router know of a cloud's
replicas. Today's pools are a Ray Serve deployment handle per model (`ServePool`)
and, for a cloud colocated with the ingress, models loaded in the ingress process
itself (`InProcessPool`, gateway/local_pool.py); a pool that forwards to a remote
Serve cluster over gRPC would implement the same protocol, and the emulation
wrapper (gateway/emulation.py) does too.

`ServePool` coalesces: concurrent requests for one model wait in one queue, and a
single handle call carries as many of their texts as fit in one replica batch. An
idle pool sends a lone request at once, so coalescing adds no wait at low load and
saves one actor call per request at high load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import Overloaded
from gateway.protocol import TextResult
from gateway.replica import ReplicaReply

logger = logging.getLogger(__name__)


class PoolUnavailable(Exception):
    """The pool could not answer (replica died, outage, bad reply); try elsewhere."""


@dataclass(frozen=True)
class PoolReply:
    """One request's answers from a pool, with the pool's own timings."""

    results: tuple[TextResult, ...]
    labels: tuple[str, ...]
    # Time inside the replicas: queue wait + compute (+ an emulated accelerator cap).
    service_s: float
    queue_wait_s: float
    batch_texts: int
    compute_s: float
    # Extra time the pool knows it spent on the network (emulated RTT).
    network_s: float = 0.0


class ReplicaPool(Protocol):
    """One cloud's replicas of every model, as the dispatcher sees them."""

    @property
    def name(self) -> str: ...

    async def classify(
        self, model: str, texts: Sequence[str], *, return_probabilities: bool = False
    ) -> PoolReply:
        """Raises PoolUnavailable when this cloud cannot answer, Overloaded when it
        refuses for load."""
        ...

    async def check(self, model: str) -> PoolReply | None:
        """A real classification of one short text; its reply, None if it failed."""
        ...

    def running_replicas(self) -> int | None:
        """Replicas known to be running, None when the pool cannot tell."""
        ...

    def set_running_replicas(self, count: int) -> None: ...


# (texts, want probabilities, number of client requests the texts came from).
CallReplica = Callable[[list[str], bool, int], Awaitable[list[ReplicaReply]]]
# The same, and the lane the call runs on and how many calls its round has.
CallLane = Callable[[list[str], bool, int, int, int], Awaitable[list[ReplicaReply]]]


@dataclass
class _Waiter:
    texts: list[str]
    return_probabilities: bool
    future: asyncio.Future[PoolReply] = field(repr=False)


class Coalescer:
    """Merges queued requests of one model into replica calls of <= max_texts."""

    def __init__(
        self, call: CallReplica | CallLane, max_texts: int, max_in_flight: int
    ) -> None:
        self._call: Callable[..., Awaitable[list[ReplicaReply]]] = call
        self._max_texts = max_texts
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._queue: deque[_Waiter] = deque()
        self._sending: set[asyncio.Task[None]] = set()

    def set_max_in_flight(self, value: int) -> None:
        self._max_in_flight = max(1, value)
        self._pump()

    async def submit(self, texts: list[str], return_probabilities: bool) -> PoolReply:
        future: asyncio.Future[PoolReply] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(texts, return_probabilities, future)
        self._queue.append(waiter)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            # A caller that gave up leaves the queue; one already sent just returns.
            if waiter in self._queue:
                self._queue.remove(waiter)
            raise

    def _pump(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            self._start(self._take(self._max_texts))

    def _take(self, max_texts: int) -> list[_Waiter]:
        """The oldest request, and those behind it while the texts fit `max_texts`."""
        group = [self._queue.popleft()]
        size = len(group[0].texts)
        while self._queue and size + len(self._queue[0].texts) <= max_texts:
            size += len(self._queue[0].texts)
            group.append(self._queue.popleft())
        return group

    def _start(self, group: list[_Waiter], *call_args: int) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(group, *call_args))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def fail_all(self, exc: Exception) -> None:
        """Fails every queued and in-flight request, e.g. when no replica is left."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)
        for task in list(self._sending):
            task.cancel()

    async def _send(self, group: list[_Waiter], *call_args: int) -> None:
        try:
            flat = [t for w in group for t in w.texts]
            want_probs = any(w.return_probabilities for w in group)
            try:
                replies = await self._call(flat, want_probs, len(group), *call_args)
                merged = _merge(replies, len(flat))
            except (Exception, asyncio.CancelledError) as exc:
                # Handed to every waiter; a cancelled call means the pool lost its
                # replicas (fail_all), so the waiters may retry elsewhere.
                if isinstance(exc, asyncio.CancelledError):
                    exc = PoolUnavailable("replica call abandoned: no replica running")
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(exc)
                return
            offset = 0
            for w in group:
                own = merged.results[offset : offset + len(w.texts)]
                offset += len(w.texts)
                if not w.return_probabilities:
                    own = tuple(_without_probs(r) for r in own)
                if not w.future.done():
                    w.future.set_result(
                        PoolReply(
                            results=own,
                            labels=merged.labels,
                            service_s=merged.service_s,
                            queue_wait_s=merged.queue_wait_s,
                            batch_texts=merged.batch_texts,
                            compute_s=merged.compute_s,
                        )
                    )
        finally:
            self._in_flight -= 1
            self._pump()


class RoundCoalescer(Coalescer):
    """Calls in rounds of up to `lanes` that start together, for lanes sharing cores.

    A round starts once the previous one has finished. It takes whole queued
    requests, up to `lanes` x `max_texts` texts, and splits them over the lanes with
    balanced text counts. Lanes that each took whatever was queued when they came
    free ran mostly one-text batches beside full ones (with two lanes and 64
    concurrent one-text requests, 122 of 233 batches held a single text). A round
    of one request is one call. Each call learns its lane and how many calls its
    round has: `call(texts, want_probs, num_requests, lane, calls_in_round)`.
    """

    def __init__(self, call: CallLane, max_texts: int, lanes: int) -> None:
        super().__init__(call, max_texts, max_in_flight=lanes)
        self._lanes = lanes

    def set_max_in_flight(self, value: int) -> None:
        raise TypeError("a RoundCoalescer's concurrency is its lane count")

    def _pump(self) -> None:
        if self._in_flight or not self._queue:
            return
        taken = self._take(self._max_texts * self._lanes)
        groups = _balanced(taken, min(self._lanes, len(taken)))
        for lane, group in enumerate(groups):
            self._start(group, lane, len(groups))


def _balanced(waiters: list[_Waiter], parts: int) -> list[list[_Waiter]]:
    """`waiters` in `parts` groups of near-equal text counts, largest placed first."""
    groups: list[list[_Waiter]] = [[] for _ in range(parts)]
    sizes = [0] * parts
    for waiter in sorted(waiters, key=lambda w: len(w.texts), reverse=True):
        smallest = sizes.index(min(sizes))
        groups[smallest].append(waiter)
        sizes[smallest] += len(waiter.texts)
    return groups


def _without_probs(result: TextResult) -> TextResult:
    if result.probabilities is None:
        return result
    return TextResult(
        result.label, result.score, result.truncated, result.num_tokens, None
    )


def _merge(replies: Sequence[ReplicaReply], expected: int) -> PoolReply:
    """Joins the per-chunk replies of one call; a short or failed reply is an error."""
    errors = [r.error for r in replies if r.error]
    if errors:
        raise PoolUnavailable(errors[0])
    results = tuple(x for r in replies for x in r.results)
    if len(results) != expected:
        raise PoolUnavailable(f"replica answered {len(results)} of {expected} texts")
    return PoolReply(
        results=results,
        labels=replies[0].labels,
        service_s=max(r.service_s for r in replies),
        queue_wait_s=max(r.queue_wait_s for r in replies),
        batch_texts=max(r.batch_texts for r in replies),
        compute_s=max(r.compute_s for r in replies),
    )


def _is_backpressure(exc: BaseException) -> bool:
    from ray.serve.exceptions import BackPressureError

    return isinstance(exc, BackPressureError)


class CoalescingPool:
    """What every pool that merges queued requests per model shares: its name,
    `classify` through that model's `Coalescer`, and the readiness `check`."""

    def __init__(self, cloud: str) -> None:
        self._cloud = cloud
        self._coalescers: dict[str, Coalescer] = {}
        self._replicas: int | None = None

    @property
    def name(self) -> str:
        return self._cloud

    def _refuse_early(self) -> None:
        """Raises PoolUnavailable when a call should not even be queued."""

    async def classify(
        self, model: str, texts: Sequence[str], *, return_probabilities: bool = False
    ) -> PoolReply:
        coalescer = self._coalescers.get(model)
        if coalescer is None:
            raise PoolUnavailable(f"cloud {self._cloud} does not serve model {model}")
        self._refuse_early()
        return await coalescer.submit(list(texts), return_probabilities)

    async def check(self, model: str) -> PoolReply | None:
        try:
            reply = await self.classify(model, ["readiness check"])
        except (PoolUnavailable, Overloaded):
            return None
        return reply if len(reply.results) == 1 else None

    def running_replicas(self) -> int | None:
        return self._replicas


class ServePool(CoalescingPool):
    """A cloud's replicas as Ray Serve deployment handles, one per model."""

    def __init__(
        self,
        cloud: str,
        handles: dict[str, Any],
        max_batch_texts: dict[str, int],
        *,
        calls_in_flight_per_replica: int = 2,
        initial_replicas: int = 1,
    ) -> None:
        super().__init__(cloud)
        self._handles = handles
        self._per_replica = calls_in_flight_per_replica
        self._coalescers = {
            model: Coalescer(
                self._caller(model),
                max_texts=max_batch_texts[model],
                max_in_flight=calls_in_flight_per_replica * max(1, initial_replicas),
            )
            for model in handles
        }

    def _caller(self, model: str) -> CallReplica:
        handle = self._handles[model]

        async def call(
            texts: list[str], want_probs: bool, num_requests: int
        ) -> list[ReplicaReply]:
            try:
                return await handle.classify.remote(texts, want_probs, num_requests)
            except Exception as exc:
                if _is_backpressure(exc):
                    raise Overloaded(
                        f"cloud {self._cloud}: replica queues are full"
                    ) from None
                logger.warning(
                    "event=pool_call_failed cloud=%s model=%s error=%s",
                    self._cloud,
                    model,
                    type(exc).__name__,
                )
                raise PoolUnavailable(
                    f"cloud {self._cloud}: {type(exc).__name__}"
                ) from None

        return call

    def _refuse_early(self) -> None:
        if self._replicas == 0:
            # Serve would hold the call until a replica comes back; fail it now so
            # the dispatcher can send it elsewhere.
            raise PoolUnavailable(f"cloud {self._cloud} has no running replica")

    def set_running_replicas(self, count: int) -> None:
        lost = count == 0 and self._replicas != 0
        self._replicas = count
        for coalescer in self._coalescers.values():
            if lost:
                coalescer.fail_all(
                    PoolUnavailable(f"cloud {self._cloud} lost its replicas")
                )
            coalescer.set_max_in_flight(self._per_replica * max(1, count))
        if lost:
            logger.warning("event=pool_lost_replicas cloud=%s", self._cloud)
