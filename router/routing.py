"""The router: per request, the cloud that meets the latency SLO at the lowest price.

Pure decision code. The gateway and the simulator both drive a `Router` the same way:
`choose` a cloud, tell it `on_dispatch`, then `on_complete` with what was measured;
`set_replicas` and `set_capacity` keep its view of each pool current. Time comes from
the injected clock. A `Router` is not thread-safe: call it from one event loop.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from gateway.errors import ConfigError, NoCloudAvailable
from router.breaker import CircuitBreaker
from router.clock import Clock
from router.cloud import CloudSpec
from router.latency import CloudLatency, queue_wait_s
from router.policies import (
    POLICY_NAMES,
    CandidateEstimate,
    LeastLatencyPolicy,
    SloCostPolicy,
    make_policy,
)
from router.price import effective_seq_per_s, usd_per_text
from router.routing_settings import RouterSettings

logger = logging.getLogger(__name__)

__all__ = [
    "POLICY_NAMES",
    "CandidateEstimate",
    "CloudEstimate",
    "RouteDecision",
    "RouteRequest",
    "Router",
    "RouterSettings",
]

PROBE = "probe"
FAILOVER = "failover"
CONSTRAINT = "constraint"

# One try and at most one retry.
MAX_ATTEMPTS = 2

# Policies that read latency estimates, and so need them kept fresh by probes.
_PROBING_POLICIES = frozenset({SloCostPolicy.name, LeastLatencyPolicy.name})


@dataclass(frozen=True, slots=True)
class RouteRequest:
    num_texts: int = 1
    num_tokens: int = 32
    allowed_regions: frozenset[str] | None = None
    deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    cloud: str
    reason: str
    candidates: tuple[CandidateEstimate, ...]


@dataclass(frozen=True)
class CloudEstimate:
    """One cloud's live state, for metrics and the simulator's reports.

    Predicted latency and cost are for a one-text request arriving now.
    """

    cloud: str
    region: str
    breaker_state: str
    running_replicas: int
    seq_per_s_per_replica: float
    in_flight_requests: int
    in_flight_texts: int
    rtt_mean_s: float | None
    rtt_quantile_s: float | None
    service_mean_s: float | None
    service_quantile_s: float | None
    error_rate: float
    predicted_latency_s: float
    cost_usd_per_request: float
    last_observation_age_s: float | None


class _CloudState:
    """Everything the router tracks about one cloud."""

    def __init__(
        self, spec: CloudSpec, settings: RouterSettings, start_s: float
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.region = spec.region
        self.latency = CloudLatency(settings.half_life_s, start_s)
        self.breaker = CircuitBreaker(spec.name, settings.breaker_settings())
        self.penalty_usd_per_request = settings.penalty_usd_per_request.get(
            spec.name, 0.0
        )
        # Until told otherwise, assume the configured floor (and at least one).
        self.running_replicas = max(1, spec.min_replicas)
        self.capacity_seq_per_s: float | None = None
        # Counted as seen at start, so a silent cloud is first probed one interval in.
        self.last_contact_s = start_s


class Router:
    """Chooses a cloud per request from live latency, load, price and health."""

    def __init__(
        self,
        clouds: Sequence[CloudSpec],
        settings: RouterSettings,
        clock: Clock,
        policy: str = "slo_cost",
    ) -> None:
        if not clouds:
            raise ConfigError("router needs at least one cloud, got none")
        names = [c.name for c in clouds]
        if len(set(names)) != len(names):
            raise ConfigError(f"cloud names must be unique, got {names}")
        unknown = set(settings.penalty_usd_per_request) - set(names)
        if unknown:
            raise ConfigError(
                "router.penalty_usd_per_request names unknown clouds "
                f"{sorted(unknown)}; known: {names}"
            )
        try:
            self._policy = make_policy(
                policy, names, random.Random(settings.random_seed)
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err

        self.settings = settings
        self.policy = policy
        self._clock = clock
        self._slo_s = settings.slo_ms / 1000.0
        self._quantile = settings.quantile
        self._default_rtt_s = settings.default_rtt_ms / 1000.0
        self._probes = policy in _PROBING_POLICIES
        now_s = clock()
        self._states = [_CloudState(spec, settings, now_s) for spec in clouds]
        self._by_name = {s.name: s for s in self._states}

    def choose(
        self,
        request: RouteRequest,
        *,
        exclude: Collection[str] = (),
        failover: bool = False,
    ) -> RouteDecision:
        """The cloud for `request`; raises NoCloudAvailable if none may take it."""
        now_s = self._clock()
        target_s = self._slo_s
        if request.deadline_s is not None:
            target_s = min(target_s, request.deadline_s - now_s)
        allowed = request.allowed_regions

        # Estimate every cloud; keep the usable ones with and without the regions.
        candidates: list[CandidateEstimate] = []
        pool: list[CandidateEstimate] = []
        unconstrained: list[CandidateEstimate] = []
        for state in self._states:
            usable = state.name not in exclude and state.breaker.allows(now_s)
            in_region = allowed is None or state.region in allowed
            candidate = self._estimate(
                state, request.num_texts, self._quantile, usable and in_region
            )
            candidates.append(candidate)
            if usable:
                unconstrained.append(candidate)
                if in_region:
                    pool.append(candidate)
        if not pool:
            raise self._no_cloud(request, exclude, now_s)

        chosen, reason = self._policy.select(pool, target_s)
        if failover:
            reason = FAILOVER
        else:
            probed = self._probe_target(pool, chosen, request, target_s, now_s)
            if probed is not None:
                chosen, reason = probed, PROBE
                self._by_name[probed.cloud].last_contact_s = now_s
            elif (
                allowed is not None
                and isinstance(self._policy, SloCostPolicy)
                and len(unconstrained) > len(pool)
                and self._policy.select(unconstrained, target_s)[0].cloud
                != chosen.cloud
            ):
                reason = CONSTRAINT

        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "event=route_decision cloud=%s reason=%s target_ms=%.1f candidates=%s",
                chosen.cloud,
                reason,
                target_s * 1000.0,
                _describe(candidates),
            )
        return RouteDecision(chosen.cloud, reason, tuple(candidates))

    def on_dispatch(self, cloud: str, num_texts: int) -> None:
        state = self._state(cloud)
        state.latency.on_dispatch(num_texts)
        state.breaker.on_dispatch(self._clock())

    def on_complete(
        self,
        cloud: str,
        *,
        num_texts: int,
        rtt_s: float | None,
        service_s: float,
        ok: bool,
    ) -> None:
        """Record a finished request: `rtt_s` is the network part, `service_s` the
        replica's; `rtt_s` is None when it could not be measured."""
        now_s = self._clock()
        state = self._state(cloud)
        state.latency.on_complete(
            now_s, num_texts=num_texts, rtt_s=rtt_s, service_s=service_s, ok=ok
        )
        state.last_contact_s = now_s
        state.breaker.on_complete(now_s, ok)

    def set_replicas(self, cloud: str, running_replicas: int) -> None:
        if running_replicas < 0:
            raise ValueError(
                f"cloud {cloud}: running_replicas must be >= 0, got {running_replicas}"
            )
        self._state(cloud).running_replicas = running_replicas

    def set_capacity(self, cloud: str, seq_per_s_per_replica: float) -> None:
        if not seq_per_s_per_replica > 0:
            raise ValueError(
                f"cloud {cloud}: seq_per_s_per_replica must be > 0, "
                f"got {seq_per_s_per_replica}"
            )
        self._state(cloud).capacity_seq_per_s = seq_per_s_per_replica

    def retry_allowed(self, request: RouteRequest, attempts: int) -> bool:
        """Whether one more try is allowed after `attempts` tries and fits the deadline.

        At most one retry. With a deadline, the retry must be expected (at mean
        latency) to finish in time on the best cloud the request may still use.
        """
        if attempts >= MAX_ATTEMPTS:
            return False
        if request.deadline_s is None:
            return True
        now_s = self._clock()
        remaining_s = request.deadline_s - now_s
        if remaining_s <= 0:
            return False
        allowed = request.allowed_regions
        best_s = min(
            (
                self._predict_latency_s(state, request.num_texts, None)
                for state in self._states
                if (allowed is None or state.region in allowed)
                and state.breaker.allows(now_s)
            ),
            default=math.inf,
        )
        return best_s <= remaining_s

    def estimates(self) -> list[CloudEstimate]:
        now_s = self._clock()
        result = []
        for state in self._states:
            latency = state.latency
            candidate = self._estimate(state, 1, self._quantile, True)
            last_s = latency.last_observation_s
            result.append(
                CloudEstimate(
                    cloud=state.name,
                    region=state.region,
                    breaker_state=state.breaker.state(now_s),
                    running_replicas=state.running_replicas,
                    seq_per_s_per_replica=self._seq_per_s(state),
                    in_flight_requests=latency.in_flight_requests,
                    in_flight_texts=latency.in_flight_texts,
                    rtt_mean_s=latency.rtt.mean_s(),
                    rtt_quantile_s=latency.rtt.quantile_s(self._quantile),
                    service_mean_s=latency.service.mean_s(),
                    service_quantile_s=latency.service.quantile_s(self._quantile),
                    error_rate=latency.error_rate(),
                    predicted_latency_s=candidate.predicted_latency_s,
                    cost_usd_per_request=candidate.cost_usd_per_request,
                    last_observation_age_s=None if last_s is None else now_s - last_s,
                )
            )
        return result

    def _state(self, cloud: str) -> _CloudState:
        try:
            return self._by_name[cloud]
        except KeyError:
            raise ValueError(
                f"unknown cloud {cloud!r}; known: {sorted(self._by_name)}"
            ) from None

    def _seq_per_s(self, state: _CloudState) -> float:
        return effective_seq_per_s(
            state.capacity_seq_per_s,
            state.latency.observed_seq_per_s(),
            self.settings.default_seq_per_s_per_replica,
        )

    def _floor_latency_s(self, state: _CloudState, num_texts: int) -> float:
        """The least a request can take on a cloud: mean RTT, then its texts."""
        rtt_s = state.latency.rtt.mean_s()
        if rtt_s is None:
            rtt_s = self._default_rtt_s
        return rtt_s + num_texts / self._seq_per_s(state)

    def _predict_latency_s(
        self, state: _CloudState, num_texts: int, quantile: float | None
    ) -> float:
        """Observed round trip + wait behind the in-flight texts.

        At a quantile the observed round trip is the quantile of whole requests
        (RTT + service, one sample each); until there is one, the RTT and service
        quantiles are added, which overstates the tail: the router errs towards
        meeting the SLO. With `quantile` None, means are used. A request never
        takes less than its RTT plus its texts' share of a replica's throughput,
        however fast small requests have been.
        """
        latency = state.latency
        seq_per_s = self._seq_per_s(state)
        if quantile is None:
            rtt_s = latency.rtt.mean_s()
            observed_service_s = latency.service.mean_s()
            observed_total_s = None
        else:
            now_s = self._clock()
            evidence = self.settings.tail_min_observations
            rtt_s = latency.rtt.quantile_s(quantile, evidence, now_s)
            observed_service_s = latency.service.quantile_s(quantile, evidence, now_s)
            observed_total_s = latency.total.quantile_s(quantile, evidence, now_s)
        if rtt_s is None:
            rtt_s = self._default_rtt_s
        own_s = rtt_s + num_texts / seq_per_s
        if observed_total_s is not None:
            round_trip_s = max(own_s, observed_total_s)
        else:
            round_trip_s = max(own_s, rtt_s + (observed_service_s or 0.0))
        wait_s = queue_wait_s(
            latency.in_flight_texts, state.running_replicas, seq_per_s
        )
        return round_trip_s + wait_s

    def _estimate(
        self, state: _CloudState, num_texts: int, quantile: float, eligible: bool
    ) -> CandidateEstimate:
        cost_usd = num_texts * usd_per_text(
            state.spec.replica_usd_per_hour, self._seq_per_s(state)
        )
        return CandidateEstimate(
            cloud=state.name,
            region=state.region,
            predicted_latency_s=self._predict_latency_s(state, num_texts, quantile),
            cost_usd_per_request=cost_usd + state.penalty_usd_per_request,
            in_flight_requests=state.latency.in_flight_requests,
            eligible=eligible,
        )

    def _probe_target(
        self,
        pool: Sequence[CandidateEstimate],
        chosen: CandidateEstimate,
        request: RouteRequest,
        target_s: float,
        now_s: float,
    ) -> CandidateEstimate | None:
        """A usable cloud unheard from for a probe interval, to refresh its estimate.

        At most one probe per cloud per `probe_interval_s`; under "slo_cost" a cloud
        no cheaper than `chosen` waits `backup_probe_interval_s` instead (a fresh
        estimate of it could not win the traffic back). Never to a cloud with no
        replica running, nor one predicted to miss the request's deadline, nor one
        whose floor for this request (its mean RTT plus the request's texts at its
        throughput, nothing stale in it) already misses the SLO target: such a
        probe would be a certain miss, and a smaller request can refresh it.
        """
        if not self._probes:
            return None
        by_cost = isinstance(self._policy, SloCostPolicy)
        stalest: CandidateEstimate | None = None
        stalest_age_s = 0.0
        for candidate in pool:
            if candidate is chosen or math.isinf(candidate.predicted_latency_s):
                continue
            interval_s = self.settings.probe_interval_s
            if (
                by_cost
                and candidate.cost_usd_per_request >= chosen.cost_usd_per_request
            ):
                interval_s = self.settings.backup_probe_interval_s
            state = self._by_name[candidate.cloud]
            age_s = now_s - state.last_contact_s
            if age_s < interval_s or age_s <= stalest_age_s:
                continue
            if self._floor_latency_s(state, request.num_texts) > target_s:
                continue
            if (
                request.deadline_s is not None
                and now_s + candidate.predicted_latency_s > request.deadline_s
            ):
                continue
            stalest, stalest_age_s = candidate, age_s
        return stalest

    def _no_cloud(
        self, request: RouteRequest, exclude: Collection[str], now_s: float
    ) -> NoCloudAvailable:
        regions = (
            "any"
            if request.allowed_regions is None
            else ",".join(sorted(request.allowed_regions))
        )
        down = [s.name for s in self._states if not s.breaker.allows(now_s)]
        logger.warning(
            "event=no_cloud_available allowed_regions=%s excluded=%s unhealthy=%s",
            regions,
            ",".join(sorted(exclude)),
            ",".join(down),
        )
        return NoCloudAvailable(
            f"no healthy cloud in allowed_regions={regions} "
            f"(excluded: {sorted(exclude)}, unhealthy: {down})",
            retry_after_s=max(1.0, self.settings.breaker_cooldown_s),
        )


def _describe(candidates: Sequence[CandidateEstimate]) -> str:
    return " ".join(
        f"{c.cloud}:latency_ms={c.predicted_latency_s * 1000.0:.1f}"
        f":usd_per_request={c.cost_usd_per_request:.3g}:eligible={c.eligible}"
        for c in candidates
    )
