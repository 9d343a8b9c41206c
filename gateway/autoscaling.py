"""Applies router.autoscaler.Autoscaler through Ray Serve's custom autoscaling policy.

Extension point: the per-deployment custom policy of Ray Serve 2.60,
`AutoscalingConfig(policy=AutoscalingPolicy(policy_function=..., policy_kwargs=...))`
on every replica deployment (one per model and cloud). Serve's controller calls the
policy on each control-loop tick with an `AutoscalingContext` and scales the
deployment to the count it returns; replica start, placement and draining stay
Serve's. The application-level policy (one call for all deployments) would fit a
joint decision better, but in Ray 2.60 it is marked "under development and not yet
supported" and is reachable only from a declarative config file, so it is not used.

The adapter is thin. `CloudPoolPolicy` (one instance per deployment, built by the
controller from `policy_kwargs`) turns its context into a `PoolSnapshot` (running
replicas, and the requests, texts and compute seconds each replica has served,
from the replica's custom autoscaling metric) and hands it to the `FleetScaler` of
its (application, model). That object feeds what arrived since the last tick to
the pure `Autoscaler` (and, for a cloud without an emulated cap, the speed its
replicas show: `set_speed`) and asks it to `decide` at most once per decision
interval, for every cloud at once; each deployment then gets its own cloud's
target. The deployment's own `upscale_delay_s`/`downscale_delay_s` are zero: the
Autoscaler applies its own delays, draining and bounds.

Where it runs: the Serve controller is one actor on the head node, so on a
multi-node cluster every deployment's policy still runs in that one process and
shares one `FleetScaler`; the replicas report their counters to it from whichever
node (cloud) they run on, and Serve places the replicas it adds by their cloud's
custom resource. Serve pickles the policy's module by value, so the shared state
is looked up in this module as imported in the controller (`_shared_fleets`). If
the controller restarts, the forecaster starts again from no history and the first
decision holds the running counts.

The last decision is written to Ray's internal key-value store, from where each
ingress reads it into its Prometheus gauges (`publish_status`, `read_status`).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import GatewayConfig, autoscaler_settings, parse_config
from router.autoscaler import Autoscaler, ScaleDecision, forecaster_settings
from router.capacity import CapacityPoint, CapacityProfile
from router.cloud import CloudSpec
from router.demand import DemandModel, LengthMix, ModelShape
from router.forecast import Forecaster

logger = logging.getLogger(__name__)

# The replica's custom autoscaling metrics: running totals since it started.
REQUESTS_METRIC = "bertgw_requests_served"
TEXTS_METRIC = "bertgw_texts_served"
TOKENS_METRIC = "bertgw_tokens_served"
COMPUTE_METRIC = "bertgw_compute_seconds"
STATUS_KEY_PREFIX = "bertgw_autoscale"
# Tokens per text assumed until the replicas report some.
DEFAULT_TOKENS_PER_TEXT = 32
_PROFILE_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
# A measured replica speed rests on at least this much model compute, and is passed
# on to the autoscaler when it differs from the last one by more than SPEED_CHANGE.
SPEED_WINDOW_COMPUTE_S = 1.0
SPEED_CHANGE = 0.1
# How often each replica sends its counters to the controller, and the window its
# local samples cover (Serve records every 0.2 of it). Serve's defaults, 10 s and
# 30 s, made the texts served reach our policy in 10 s lumps while it decides every
# few seconds, so its observed rate, forecast and bound spiked (autoscale_live).
METRICS_PUSH_INTERVAL_S = 1.0
METRICS_LOOK_BACK_S = 5.0


@dataclass(frozen=True)
class PoolSnapshot:
    """What one cloud's deployment showed the controller on one tick."""

    cloud: str
    now_s: float
    running_replicas: int
    # Per replica: texts, tokens and client requests served since it started
    # (running totals).
    texts_by_replica: Mapping[str, float] = field(default_factory=dict)
    tokens_by_replica: Mapping[str, float] = field(default_factory=dict)
    requests_by_replica: Mapping[str, float] = field(default_factory=dict)
    # Seconds of model compute spent on those texts (each text's share of its batch).
    compute_s_by_replica: Mapping[str, float] = field(default_factory=dict)


def snapshot_from_context(ctx: Any, cloud: str) -> PoolSnapshot:
    """Builds the snapshot from Serve's `AutoscalingContext` (read, never changed)."""
    raw = ctx.raw_metrics or {}

    def latest(metric: str) -> dict[str, float]:
        series_by_replica = raw.get(metric) or {}
        return {
            str(getattr(replica, "unique_id", replica)): float(series[-1].value)
            for replica, series in series_by_replica.items()
            if series
        }

    return PoolSnapshot(
        cloud=cloud,
        now_s=float(ctx.current_time or time.time()),
        running_replicas=int(ctx.current_num_replicas),
        texts_by_replica=latest(TEXTS_METRIC),
        tokens_by_replica=latest(TOKENS_METRIC),
        requests_by_replica=latest(REQUESTS_METRIC),
        compute_s_by_replica=latest(COMPUTE_METRIC),
    )


class RunningTotals:
    """Turns per-replica running totals into what arrived since the last look."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def advance(self, totals: Mapping[str, float]) -> float:
        """The increase summed over replicas; a replica seen anew counts in full, and
        one whose total fell (restarted under the same id) counts from zero."""
        added = 0.0
        for replica, total in totals.items():
            before = self._last.get(replica, 0.0)
            added += total - before if total >= before else total
        # Replicas gone from the report are forgotten; their counts were taken.
        self._last = dict(totals)
        return added


@dataclass
class _CloudCounters:
    requests: RunningTotals = field(default_factory=RunningTotals)
    texts: RunningTotals = field(default_factory=RunningTotals)
    tokens: RunningTotals = field(default_factory=RunningTotals)
    compute_s: RunningTotals = field(default_factory=RunningTotals)
    # Texts and compute seconds since the cloud's speed was last estimated.
    window_texts: float = 0.0
    window_compute_s: float = 0.0


class SnapshotClock:
    """The controller's time as the latest snapshot gave it; the Autoscaler's clock."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


class FleetScaler:
    """One model's Autoscaler, fed by every cloud's deployment of that model."""

    def __init__(
        self,
        autoscaler: Autoscaler,
        clock: SnapshotClock,
        decision_interval_s: float,
        publish: Callable[[dict[str, Any]], None] | None = None,
        *,
        model: str = "",
        measured_clouds: Collection[str] = (),
    ) -> None:
        """`measured_clouds`: clouds whose replica speed the autoscaler takes from
        what the replicas report (texts over compute seconds), not from config."""
        self.autoscaler = autoscaler
        self._model = model
        self._measured = frozenset(measured_clouds)
        self.measured_seq_per_s: dict[str, float] = {}
        self._clock = clock
        self._interval_s = decision_interval_s
        self._publish = publish
        self._counters = {name: _CloudCounters() for name in autoscaler.clouds}
        self.running: dict[str, int] = {
            name: spec.min_replicas for name, spec in autoscaler.clouds.items()
        }
        self.decision: ScaleDecision | None = None
        self._decided_s: float | None = None
        self._observed_requests = 0.0
        self._window_start_s: float | None = None
        self.observed_rps: float | None = None

    def on_snapshot(self, snapshot: PoolSnapshot) -> int:
        """Records one cloud's tick; returns that cloud's target replicas."""
        counters = self._counters[snapshot.cloud]
        # Serve's clock is wall time; the Autoscaler only needs it to move forward.
        self._clock.now_s = max(self._clock.now_s, snapshot.now_s)
        now_s = self._clock.now_s
        if self._window_start_s is None:
            self._window_start_s = now_s

        requests = counters.requests.advance(snapshot.requests_by_replica)
        texts = counters.texts.advance(snapshot.texts_by_replica)
        tokens = counters.tokens.advance(snapshot.tokens_by_replica)
        compute_s = counters.compute_s.advance(snapshot.compute_s_by_replica)
        if snapshot.cloud in self._measured and compute_s > 0:
            self._measure_speed(snapshot.cloud, counters, texts, compute_s)
        if texts > 0:
            if tokens <= 0:
                tokens = texts * DEFAULT_TOKENS_PER_TEXT
            # Replicas count the client requests each merged call carried, so the
            # autoscaler sees request rates and texts per request (a 4-text request
            # takes 4 texts' time); one that reports none counts a text a request.
            if requests <= 0:
                requests = texts
            self.autoscaler.observe(
                int(round(requests)), int(round(texts)), int(round(tokens))
            )
            self._observed_requests += requests
        self.running[snapshot.cloud] = snapshot.running_replicas

        due = self._decided_s is None or now_s - self._decided_s >= self._interval_s
        if due:
            self.decision = self.autoscaler.decide(self.running)
            if self._decided_s is not None:
                span_s = max(now_s - self._decided_s, 1e-9)
                self.observed_rps = self._observed_requests / span_s
            self._observed_requests = 0.0
            self._decided_s = now_s
            if self._publish is not None:
                self._publish(self.status())
        assert self.decision is not None
        return self.decision.targets[snapshot.cloud]

    def _measure_speed(
        self, cloud: str, counters: _CloudCounters, texts: float, compute_s: float
    ) -> None:
        """Texts per compute second over at least SPEED_WINDOW_COMPUTE_S of compute;
        the autoscaler is told when it moves by more than SPEED_CHANGE."""
        counters.window_texts += texts
        counters.window_compute_s += compute_s
        if counters.window_compute_s < SPEED_WINDOW_COMPUTE_S:
            return
        measured = counters.window_texts / counters.window_compute_s
        counters.window_texts = counters.window_compute_s = 0.0
        last = self.measured_seq_per_s.get(cloud)
        if last is not None and abs(measured / last - 1.0) <= SPEED_CHANGE:
            return
        self.measured_seq_per_s[cloud] = measured
        self.autoscaler.set_speed(
            cloud, cloud_capacity_profile(self._model, cloud, measured)
        )
        logger.info("event=replica_speed cloud=%s seq_per_s=%.1f", cloud, measured)

    def status(self) -> dict[str, Any]:
        """The last decision and what it saw, as plain JSON values."""
        decision = self.decision
        if decision is None:
            return {}
        return {
            "t_s": self._decided_s,
            "observed_rps": self.observed_rps,
            "forecast_rps": decision.forecast_rps,
            "upper_rps": decision.upper_rps,
            "usd_per_hour": decision.usd_per_hour,
            "targets": dict(decision.targets),
            "running": dict(self.running),
            "measured_seq_per_s": dict(self.measured_seq_per_s),
            "reason": decision.reason,
        }


def cloud_capacity_profile(
    model: str, cloud: str, seq_per_s_per_replica: float
) -> CapacityProfile:
    """A replica that runs `seq_per_s_per_replica` whatever the batch (emulated cap)."""
    points = tuple(
        CapacityPoint(
            b, DEFAULT_TOKENS_PER_TEXT, seq_per_s_per_replica, b / seq_per_s_per_replica
        )
        for b in _PROFILE_BATCH_SIZES
    )
    return CapacityProfile(model_name=model, accelerator=cloud, points=points)


def build_fleet(
    config: GatewayConfig,
    model: str,
    clock: SnapshotClock,
    shape: ModelShape,
    publish: Callable[[dict[str, Any]], None] | None = None,
) -> FleetScaler:
    """The model's Autoscaler over the configured clouds.

    Each cloud is planned at its own speed, so its accelerator is renamed to the
    cloud: an emulated cloud runs at its `max_seq_per_s` cap; a cloud without one
    starts at the router's `default_seq_per_s_per_replica` and then at the speed its
    replicas show (texts per second of model compute, at the batches they ran,
    which understates what fuller batches would reach).
    """
    from gateway.config import router_settings

    default_seq_per_s = router_settings(config).default_seq_per_s_per_replica
    clouds: list[CloudSpec] = []
    speeds: dict[str, CapacityProfile] = {}
    for cloud in config.clouds:
        cap = cloud.emulation.max_seq_per_s if cloud.emulation else None
        speeds[cloud.name] = cloud_capacity_profile(
            model, cloud.name, cap or default_seq_per_s
        )
        clouds.append(replace(cloud.to_spec(), accelerator=cloud.name))
    settings = autoscaler_settings(config)
    demand = DemandModel(
        shape, speeds, length_mix=LengthMix.single(DEFAULT_TOKENS_PER_TEXT)
    )
    slot_s = settings.decision_interval_s
    forecaster = Forecaster(
        forecaster_settings(settings, slot_s=slot_s, season_s=None), clock
    )
    autoscaler = Autoscaler(clouds, demand, forecaster, settings, clock)
    for cloud in config.clouds:
        if cloud.emulation is not None:
            autoscaler.set_network_s(cloud.name, cloud.emulation.rtt_ms / 1000.0)
    measured = [
        cloud.name
        for cloud in config.clouds
        if cloud.emulation is None or cloud.emulation.max_seq_per_s is None
    ]
    return FleetScaler(
        autoscaler,
        clock,
        settings.decision_interval_s,
        publish,
        model=model,
        measured_clouds=measured,
    )


def model_shape(config: GatewayConfig, model: str) -> ModelShape:
    """The served checkpoint's encoder sizes, from its `config.json`."""
    model_config = config.model(model)
    if model_config is None:
        raise KeyError(f"unknown model {model!r}; known: {config.model_names}")
    path = model_config.checkpoint / "config.json"
    return ModelShape.from_hf_config(json.loads(path.read_text()))


# Status: written by the controller, read by each ingress for its gauges. ----------


def status_key(app: str, model: str) -> str:
    return f"{STATUS_KEY_PREFIX}:{app}:{model}"


def publish_status(app: str, model: str, doc: Mapping[str, Any]) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(status_key(app, model), json.dumps(doc), overwrite=True)


def read_status(app: str, model: str) -> dict[str, Any] | None:
    """The last decision for `model`, or None before the first one."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    raw = _internal_kv_get(status_key(app, model))
    return None if raw is None else json.loads(raw)


# The policy Serve calls. --------------------------------------------------------

_shared_fleets: dict[tuple[str, str, str], FleetScaler] = {}


def fleet_for(config_data: Mapping[str, Any], model: str, digest: str) -> FleetScaler:
    """The FleetScaler every cloud's deployment of `model` shares in this process.

    `digest` names the config (its sorted JSON): a redeploy with another config
    starts a new fleet.
    """
    app = str(config_data.get("app_name", "bertgw"))
    key = (app, model, digest)
    fleet = _shared_fleets.get(key)
    if fleet is None:
        config = parse_config(dict(config_data))
        for old in [k for k in _shared_fleets if k[:2] == key[:2]]:
            del _shared_fleets[old]

        def publish(doc: dict[str, Any]) -> None:
            publish_status(app, model, doc)

        clock = SnapshotClock(time.time())
        fleet = build_fleet(config, model, clock, model_shape(config, model), publish)
        _shared_fleets[key] = fleet
        logger.info("event=fleet_scaler_created app=%s model=%s", app, model)
    return fleet


class CloudPoolPolicy:
    """Serve's policy for one (model, cloud) deployment; Serve builds one each."""

    def __init__(self, *, config: dict[str, Any], model: str, cloud: str) -> None:
        self._config = config
        self._digest = json.dumps(config, sort_keys=True, default=str)
        self._model = model
        self._cloud = cloud

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        # Serve unpickled this module by value: share state through the module as
        # the controller imported it.
        shared = importlib.import_module("gateway.autoscaling")
        try:
            fleet = shared.fleet_for(self._config, self._model, self._digest)
            target = fleet.on_snapshot(shared.snapshot_from_context(ctx, self._cloud))
        except Exception:  # noqa: BLE001 - Serve's control loop: hold, never crash it
            logger.exception(
                "event=autoscale_policy_failed model=%s cloud=%s",
                self._model,
                self._cloud,
            )
            return int(ctx.target_num_replicas), {}
        return target, {}


# Deployment options, for gateway/app.py. ----------------------------------------


def autoscales(config: GatewayConfig) -> bool:
    """Whether any cloud may change its replica count."""
    return any(c.max_replicas > c.min_replicas for c in config.clouds)


def scaling_options(config: GatewayConfig, model: str, cloud: str) -> dict[str, Any]:
    """`.options()` keywords that size a replica deployment: fixed, or our policy."""
    from ray.serve.config import AutoscalingConfig, AutoscalingPolicy

    spec = config.cloud(cloud)
    assert spec is not None
    if not autoscales(config):
        return {"num_replicas": max(1, spec.min_replicas)}
    # Clouds fixed at one count get the policy too: Serve holds them at their
    # bounds, and their served texts still count in the fleet's demand.
    bounds = {
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "initial_replicas": max(1, spec.min_replicas),
    }
    if config.autoscaling_policy == "ray_default":
        # The baseline: Serve's queue-length policy, with our delays and our
        # metrics' freshness for fairness.
        settings = autoscaler_settings(config)
        target = config.ray_target_ongoing_requests
        return {
            "autoscaling_config": AutoscalingConfig(
                **bounds,
                **({} if target is None else {"target_ongoing_requests": target}),
                upscale_delay_s=settings.upscale_delay_s,
                downscale_delay_s=settings.downscale_delay_s,
                metrics_interval_s=METRICS_PUSH_INTERVAL_S,
                look_back_period_s=METRICS_LOOK_BACK_S,
            )
        }
    policy = AutoscalingPolicy(
        policy_function=CloudPoolPolicy,
        policy_kwargs={
            "config": config.model_dump(mode="json"),
            "model": model,
            "cloud": cloud,
        },
    )
    return {
        "autoscaling_config": AutoscalingConfig(
            **bounds,
            # The Autoscaler applies its own delays; Serve's would add to them.
            upscale_delay_s=0.0,
            downscale_delay_s=0.0,
            metrics_interval_s=METRICS_PUSH_INTERVAL_S,
            look_back_period_s=METRICS_LOOK_BACK_S,
            policy=policy,
        )
    }


def counting_replica() -> Any:
    """The replica deployment that also reports texts and tokens served to Serve."""
    from ray import serve

    from gateway.replica import ClassifierReplica

    base = ClassifierReplica.func_or_class

    class CountingReplica(base):  # type: ignore[misc, valid-type]
        """A ClassifierReplica whose running totals feed the autoscaling policy."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._requests_served = 0
            self._texts_served = 0
            self._tokens_served = 0
            self._compute_s = 0.0

        async def classify(
            self,
            texts: Sequence[str],
            return_probabilities: bool = False,
            num_requests: int = 1,
        ) -> list[Any]:
            self._requests_served += num_requests
            self._texts_served += len(texts)
            replies = await super().classify(texts, return_probabilities, num_requests)
            self._tokens_served += sum(
                r.num_tokens for reply in replies for r in reply.results
            )
            # This call's share of each batch it rode.
            self._compute_s += sum(
                reply.compute_s * len(reply.results) / reply.batch_texts
                for reply in replies
                if reply.batch_texts > 0
            )
            return replies

        def record_autoscaling_stats(self) -> dict[str, float]:
            return {
                REQUESTS_METRIC: float(self._requests_served),
                TEXTS_METRIC: float(self._texts_served),
                TOKENS_METRIC: float(self._tokens_served),
                COMPUTE_METRIC: self._compute_s,
            }

    return serve.deployment(CountingReplica, name="ClassifierReplica")
