"""The transport-free core of a request: admit, route, call a pool, retry once, report.

Both transports hand a parsed `InferRequest` to `Dispatcher.infer`; it asks the
`Router` for a cloud, refuses fast when that cloud's queue would hold the request
past the SLO, calls the cloud's `ReplicaPool`, retries once on the next best cloud
if the call fails and the deadline allows, and tells the router what it measured:
the replica's service time and the rest of the round trip as network time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import GatewayConfig
from gateway.errors import DeadlineExceeded, ModelNotFound, NoCloudAvailable, Overloaded
from gateway.metrics import GatewayMetrics
from gateway.pools import PoolReply, PoolUnavailable, ReplicaPool
from gateway.protocol import InferRequest, InferResult, TextLimits, TextResult
from router.clock import Clock, monotonic_clock
from router.routing import Router, RouteRequest

logger = logging.getLogger(__name__)

# Weight of the newest batch in the measured replica throughput.
_THROUGHPUT_EWMA_WEIGHT = 0.2


@dataclass(frozen=True)
class CallContext:
    """What the transport knows besides the payload."""

    protocol: str
    deadline_s: float
    allowed_regions: frozenset[str] | None = None


def estimate_tokens(texts: tuple[str, ...]) -> int:
    """About four characters per word piece, plus [CLS] and [SEP] per text."""
    return sum(len(t) // 4 + 2 for t in texts)


class Dispatcher:
    """Sends each request to the cloud the router picks; one per ingress process."""

    def __init__(
        self,
        config: GatewayConfig,
        pools: Mapping[str, ReplicaPool],
        router: Router,
        metrics: GatewayMetrics,
        clock: Clock = monotonic_clock,
    ) -> None:
        self._config = config
        self._pools = dict(pools)
        self._router = router
        self._metrics = metrics
        self._clock = clock
        self._slo_s = config.slo.latency_ms / 1000.0
        self._limits = {
            m.name: TextLimits(m.max_texts_per_request, m.max_chars_per_text)
            for m in config.models
        }
        self._in_flight_texts = {name: 0 for name in self._pools}
        self._seq_per_s: dict[str, float | None] = {name: None for name in self._pools}
        self._replicas = {c.name: max(1, c.min_replicas) for c in config.clouds}
        self._draining = False
        self.requests_in_flight = 0

    def limits(self, model: str) -> TextLimits:
        limits = self._limits.get(model)
        if limits is None:
            raise ModelNotFound(model, list(self._limits))
        return limits

    def drain(self) -> None:
        """Refuse new requests from now on; those in flight finish."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    def set_replicas(self, cloud: str, running_replicas: int) -> None:
        self._replicas[cloud] = running_replicas
        self._router.set_replicas(cloud, running_replicas)
        self._pools[cloud].set_running_replicas(running_replicas)

    async def infer(self, request: InferRequest, ctx: CallContext) -> InferResult:
        """Classifies `request` on one cloud, or raises a GatewayError."""
        self.limits(request.model)
        if self._draining:
            raise Overloaded("the gateway is shutting down", retry_after_s=1.0)
        self.requests_in_flight += 1
        try:
            return await self._infer(request, ctx)
        finally:
            self.requests_in_flight -= 1

    async def _infer(self, request: InferRequest, ctx: CallContext) -> InferResult:
        num_texts = len(request.texts)
        route = RouteRequest(
            num_texts=num_texts,
            num_tokens=estimate_tokens(request.texts),
            allowed_regions=ctx.allowed_regions,
            deadline_s=ctx.deadline_s,
        )
        tried: list[str] = []
        refused: list[str] = []
        attempts = 0
        while True:
            if self._clock() >= ctx.deadline_s:
                raise DeadlineExceeded("the request deadline passed before an answer")
            try:
                decision = self._router.choose(
                    route, exclude=(*tried, *refused), failover=bool(tried)
                )
            except NoCloudAvailable:
                if refused:
                    raise Overloaded(
                        "every allowed cloud is full: its queue limit, or its "
                        "queue would not finish within the SLO "
                        f"({', '.join(refused)})",
                        retry_after_s=self._config.admission.retry_after_s,
                    ) from None
                raise
            cloud = decision.cloud
            if not self._admit(cloud, num_texts):
                refused.append(cloud)
                continue

            self._metrics.decisions.labels(cloud, decision.reason).inc()
            attempts += 1
            try:
                reply = await self._call(cloud, request, ctx, num_texts)
            except PoolUnavailable:
                tried.append(cloud)
                self._metrics.retries.labels(cloud).inc()
                if not self._router.retry_allowed(route, attempts):
                    raise NoCloudAvailable(
                        f"cloud {cloud} failed and no retry fits the deadline",
                        retry_after_s=self._config.admission.retry_after_s,
                    ) from None
                continue
            except Overloaded:
                refused.append(cloud)
                continue
            return self._result(request, cloud, reply)

    def _admit(self, cloud: str, num_texts: int) -> bool:
        """False when the request would not be done within the SLO: the texts in
        flight on this cloud and its own, at the replicas' measured rate."""
        admission = self._config.admission
        queued = self._in_flight_texts[cloud]
        if queued + num_texts > admission.max_queued_texts_per_cloud:
            self._metrics.rejected.labels(cloud).inc()
            return False
        seq_per_s = self._seq_per_s[cloud]
        if seq_per_s is not None and queued > 0:
            rate = seq_per_s * max(1, self._replicas.get(cloud, 1))
            done_s = (queued + num_texts) / rate
            if done_s > self._slo_s * admission.max_predicted_wait_slo_fraction:
                self._metrics.rejected.labels(cloud).inc()
                return False
        return True

    async def _call(
        self, cloud: str, request: InferRequest, ctx: CallContext, num_texts: int
    ) -> PoolReply:
        pool = self._pools[cloud]
        self._router.on_dispatch(cloud, num_texts)
        self._in_flight_texts[cloud] += num_texts
        self._metrics.in_flight.labels(cloud).set(self._in_flight_texts[cloud])
        start_s = self._clock()
        try:
            # A timeout scope, not wait_for: no second task for every request.
            async with asyncio.timeout(max(0.0, ctx.deadline_s - start_s)):
                reply = await pool.classify(
                    request.model,
                    request.texts,
                    return_probabilities=request.return_probabilities,
                )
        except TimeoutError:
            # A slow answer is still an observation: it took at least this long.
            self._router.on_complete(
                cloud,
                num_texts=num_texts,
                rtt_s=None,
                service_s=self._clock() - start_s,
                ok=True,
            )
            raise DeadlineExceeded(
                f"no answer from cloud {cloud} before the request deadline"
            ) from None
        except PoolUnavailable:
            self._router.on_complete(
                cloud, num_texts=num_texts, rtt_s=None, service_s=0.0, ok=False
            )
            raise
        except Overloaded:
            # Refused for load, not broken: free the slot, teach nothing.
            self._router.on_complete(
                cloud, num_texts=num_texts, rtt_s=None, service_s=0.0, ok=True
            )
            raise
        finally:
            self._in_flight_texts[cloud] -= num_texts
            self._metrics.in_flight.labels(cloud).set(self._in_flight_texts[cloud])

        elapsed_s = self._clock() - start_s
        self._router.on_complete(
            cloud,
            num_texts=num_texts,
            rtt_s=max(0.0, elapsed_s - reply.service_s),
            service_s=reply.service_s,
            ok=True,
        )
        self._learn_capacity(cloud, reply)
        self._metrics.observe_replica(
            model=request.model,
            cloud=cloud,
            service_s=reply.service_s,
            queue_wait_s=reply.queue_wait_s,
            batch_texts=reply.batch_texts,
        )
        return reply

    def _learn_capacity(self, cloud: str, reply: PoolReply) -> None:
        """Texts per second of one replica, from the batches it ran."""
        if reply.compute_s <= 0 or reply.batch_texts <= 0:
            return
        sample = reply.batch_texts / reply.compute_s
        old = self._seq_per_s[cloud]
        new = (
            sample
            if old is None
            else (1 - _THROUGHPUT_EWMA_WEIGHT) * old + _THROUGHPUT_EWMA_WEIGHT * sample
        )
        self._seq_per_s[cloud] = new
        self._router.set_capacity(cloud, new)

    def _result(
        self, request: InferRequest, cloud: str, reply: PoolReply
    ) -> InferResult:
        results = reply.results
        if any(request.clipped):
            results = tuple(
                TextResult(r.label, r.score, True, r.num_tokens, r.probabilities)
                if clipped
                else r
                for r, clipped in zip(results, request.clipped, strict=True)
            )
        return InferResult(
            model=request.model,
            cloud=cloud,
            results=results,
            labels=reply.labels,
            outputs=request.outputs,
            request_id=request.request_id,
        )
