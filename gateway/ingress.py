"""The ingress's state, shared by its HTTP and gRPC adapters.

`IngressCore` holds one process's pools, router, dispatcher, authenticator and
metrics, and runs two bounded background loops: readiness (a real classification of
each model through each pool until all answer) and the replica poll (running
replicas per cloud from Serve, handed to the router, the pools and the metrics).
Nothing here parses a wire format; http_api.py and grpc_api.py do.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from gateway.auth import Authenticator, load_tokens
from gateway.config import GatewayConfig, router_settings
from gateway.dispatch import CallContext, Dispatcher
from gateway.emulation import EmulatedPool, FaultState
from gateway.errors import InvalidInput, ModelNotFound
from gateway.local_pool import load_local_pool
from gateway.metrics import GatewayMetrics
from gateway.pools import ReplicaPool, ServePool
from router.clock import Clock, monotonic_clock
from router.routing import Router

logger = logging.getLogger(__name__)

REGIONS_HEADER = "x-bertgw-allowed-regions"
TIMEOUT_HEADER = "x-bertgw-timeout-ms"
CLOUD_HEADER = "x-bertgw-cloud"

_READINESS_RETRY_S = 1.0
# One readiness call's limit: long enough for a cold model, bounded for a pool
# that has no replica to answer.
_READINESS_CHECK_S = 60.0


INGRESS_NAME = "ingress"


def readiness_clouds(config: GatewayConfig) -> list[str]:
    """The clouds every model must answer from before it is ready.

    Those that keep replicas at all times (`min_replicas` >= 1, or colocated); a
    cloud that may scale to zero has no replica to ask once it has. With no such
    cloud (an empty list), any one cloud's answer makes a model ready.
    """
    return [c.name for c in config.clouds if c.colocated or c.min_replicas >= 1]


def replica_deployment_name(model: str, cloud: str) -> str:
    return f"replica-{model}-{cloud}"


def running_replicas(deployments: Mapping[str, Any], name: str) -> int:
    """RUNNING replicas of one deployment in a `serve.status()` application."""
    states = getattr(deployments.get(name), "replica_states", {}) or {}
    return int(states.get("RUNNING", 0))


class IngressCore:
    """Everything one ingress process needs to answer requests."""

    def __init__(
        self,
        config: GatewayConfig,
        handles: Mapping[str, Mapping[str, Any]],
        clock: Clock = monotonic_clock,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = GatewayMetrics(
            config.model_names, [c.name for c in config.clouds]
        )
        max_texts = {m.name: m.max_batch_size for m in config.models}
        self.pools: dict[str, ReplicaPool] = {}
        self.emulated: dict[str, EmulatedPool] = {}
        for cloud in config.clouds:
            pool: ReplicaPool
            if cloud.colocated:
                pool = load_local_pool(cloud.name, config.models)
            else:
                pool = ServePool(
                    cloud.name,
                    {m: handles[m][cloud.name] for m in config.model_names},
                    max_texts,
                    initial_replicas=max(1, cloud.min_replicas),
                )
            if cloud.emulation is not None:
                emulated = EmulatedPool(pool, cloud.emulation)
                self.emulated[cloud.name] = emulated
                pool = emulated
            self.pools[cloud.name] = pool
        self.router = Router(
            config.cloud_specs(), router_settings(config), clock, config.routing_policy
        )
        self.dispatcher = Dispatcher(
            config, self.pools, self.router, self.metrics, clock
        )
        self.auth = Authenticator(
            load_tokens(config.auth.tokens_file, config.auth.tokens_env),
            requests_per_s=config.auth.requests_per_s,
            burst_requests=config.auth.burst_requests,
            clock=clock,
        )
        self.regions = {c.region for c in config.clouds}
        self.model_labels: dict[str, tuple[str, ...]] = {}
        self._ready_models: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        for cloud in config.clouds:
            replicas = max(1, cloud.min_replicas) * len(config.models)
            self._set_cost(cloud.name, replicas)

    # Readiness -----------------------------------------------------------------

    def model_ready(self, model: str) -> bool:
        if self.config.model(model) is None:
            raise ModelNotFound(model, self.config.model_names)
        return model in self._ready_models and not self.dispatcher.draining

    @property
    def ready(self) -> bool:
        return (
            len(self._ready_models) == len(self.config.models)
            and not self.dispatcher.draining
        )

    def start_background(self) -> None:
        """Starts the loops once, on the running event loop."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._readiness_loop()))
        if self.config.metrics.enabled:
            self._tasks.append(loop.create_task(self._replica_poll_loop()))

    async def _readiness_loop(self) -> None:
        # Bounded by the default request timeout times a generous factor: a model
        # that has not answered by then is reported and left not ready.
        limit_s = max(600.0, 10 * self.config.ingress.default_timeout_ms / 1000.0)
        start_s = self.clock()
        floor = readiness_clouds(self.config)
        any_cloud = not floor
        pending = {
            (m, c) for m in self.config.model_names for c in (floor or self.pools)
        }
        while pending and self.clock() - start_s < limit_s:
            for model, cloud in sorted(pending):
                if (model, cloud) not in pending:
                    continue  # another cloud answered for this model
                try:
                    reply = await asyncio.wait_for(
                        self.pools[cloud].check(model), _READINESS_CHECK_S
                    )
                except TimeoutError:
                    reply = None  # e.g. a pool scaled to zero: ask again later
                if reply is not None:
                    self.model_labels[model] = reply.labels
                    answered = {(model, cloud)}
                    if any_cloud:
                        answered = {(m, c) for m, c in pending if m == model}
                    pending -= answered
            for model in self.config.model_names:
                if not any(m == model for m, _ in pending):
                    self._ready_models.add(model)
            if pending:
                await asyncio.sleep(_READINESS_RETRY_S)
        if pending:
            logger.error("event=readiness_gave_up pending=%s", sorted(pending))
        else:
            logger.info(
                "event=ready models=%d clouds=%d",
                len(self._ready_models),
                len(self.pools),
            )

    async def _replica_poll_loop(self) -> None:
        from ray import serve

        interval_s = self.config.metrics.poll_interval_s
        app = self.config.app_name
        # Runs for the life of the ingress; each round is one status call.
        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                deployments = status.applications[app].deployments
                self._apply_replica_counts(deployments)
            except Exception:  # noqa: BLE001 - loop boundary: keep polling
                logger.exception("event=replica_poll_failed")
            await asyncio.sleep(interval_s)

    def _apply_replica_counts(self, deployments: Mapping[str, Any]) -> None:
        for cloud in self.config.clouds:
            if cloud.colocated:
                # Every ingress replica is one replica of every model here, and
                # this one is running even before Serve's status says so.
                count = max(1, running_replicas(deployments, INGRESS_NAME))
                counts = [count] * len(self.config.models)
            else:
                counts = [
                    running_replicas(
                        deployments, replica_deployment_name(model, cloud.name)
                    )
                    for model in self.config.model_names
                ]
            self.dispatcher.set_replicas(cloud.name, min(counts))
            self._set_cost(cloud.name, sum(counts))

    def _set_cost(self, cloud: str, replicas: int) -> None:
        spec = self.config.cloud(cloud)
        assert spec is not None
        self.metrics.replicas.labels(cloud).set(replicas)
        price = spec.to_spec().replica_usd_per_hour
        self.metrics.cost_rate.labels(cloud).set(replicas * price)

    # Request context -------------------------------------------------------------

    def call_context(
        self,
        protocol: str,
        *,
        timeout_ms: str | None,
        allowed_regions: str | None,
        client_deadline_s: float | None = None,
    ) -> CallContext:
        """Deadline and region constraint from the transport's headers."""
        now_s = self.clock()
        budget_s = self.config.ingress.default_timeout_ms / 1000.0
        if timeout_ms is not None:
            try:
                value = float(timeout_ms)
            except ValueError:
                value = math.nan
            if not (value > 0 and math.isfinite(value)):
                raise InvalidInput(
                    f"{TIMEOUT_HEADER} must be a positive number of ms, got "
                    f"{timeout_ms!r}"
                )
            budget_s = min(budget_s, value / 1000.0)
        if client_deadline_s is not None:
            budget_s = min(budget_s, client_deadline_s)
        regions = None
        if allowed_regions is not None:
            regions = frozenset(
                r.strip() for r in allowed_regions.split(",") if r.strip()
            )
            if not regions & self.regions:
                raise InvalidInput(
                    f"{REGIONS_HEADER}={allowed_regions!r} names no configured "
                    f"region; configured: {', '.join(sorted(self.regions))}"
                )
        return CallContext(protocol, now_s + budget_s, regions)

    # Emulation -------------------------------------------------------------------

    def set_faults(
        self, cloud: str, *, outage: bool | None, extra_latency_ms: float | None
    ) -> FaultState:
        pool = self.emulated.get(cloud)
        if pool is None:
            raise InvalidInput(
                f"cloud {cloud!r} has no emulation block; emulated: "
                f"{', '.join(sorted(self.emulated)) or 'none'}"
            )
        current = pool.faults
        faults = FaultState(
            outage=current.outage if outage is None else outage,
            extra_latency_ms=(
                current.extra_latency_ms
                if extra_latency_ms is None
                else extra_latency_ms
            ),
        )
        pool.set_faults(faults)
        return faults
