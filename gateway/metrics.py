"""Prometheus metrics of the gateway, served as text at `GET /metrics` on the HTTP port.

All series live in the ingress process, in their own registry. The replica-side
numbers (batch size, queue wait) are measured in the replica processes and travel
back with each reply, so the ingress records them here rather than through Ray's
metrics agent; with several ingress replicas, each one's `/metrics` covers the
requests it handled. Label values come from bounded sets only: configured model and
cloud names (or "none" when a request failed before a cloud was chosen), protocol
(`http`, `grpc`), status class (`2xx`, `4xx`, `5xx`) and routing reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def status_class(http_status: int) -> str:
    return f"{http_status // 100}xx"


class GatewayMetrics:
    """Every series the gateway exports; one instance per ingress process."""

    def __init__(self, models: list[str], clouds: list[str]) -> None:
        # `_created` timestamps double every series and no dashboard reads them.
        disable_created_metrics()
        self._models = set(models)
        self._clouds = set(clouds)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bertgw_requests_total",
            "Inference requests by model, cloud, protocol and status class",
            ["model", "cloud", "protocol", "status_class"],
            registry=r,
        )
        self.texts = Counter(
            "bertgw_texts_total",
            "Texts classified by model and cloud",
            ["model", "cloud"],
            registry=r,
        )
        self.latency = Histogram(
            "bertgw_request_duration_seconds",
            "Time from request arrival at the ingress to its answer",
            ["model", "cloud", "protocol", "status_class"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.service = Histogram(
            "bertgw_replica_service_seconds",
            "Replica-side time per request: queue wait plus compute",
            ["model", "cloud"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "bertgw_replica_queue_wait_seconds",
            "Time a request waited in the replica before its batch ran",
            ["model", "cloud"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "bertgw_replica_batch_size_texts",
            "Texts in the replica batch that served a request",
            ["model", "cloud"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.replicas = Gauge(
            "bertgw_replicas",
            "Running replicas per cloud (all models)",
            ["cloud"],
            registry=r,
        )
        self.cost_rate = Gauge(
            "bertgw_cost_usd_per_hour",
            "Live cost rate per cloud: running replicas times the replica price",
            ["cloud"],
            registry=r,
        )
        self.in_flight = Gauge(
            "bertgw_in_flight_texts",
            "Texts sent to a cloud and not yet answered",
            ["cloud"],
            registry=r,
        )
        self.decisions = Counter(
            "bertgw_routing_decisions_total",
            "Routing decisions by chosen cloud and reason",
            ["cloud", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "bertgw_retries_total",
            "Requests retried on another cloud after a failure",
            ["cloud"],
            registry=r,
        )
        self.rejected = Counter(
            "bertgw_admission_rejections_total",
            "Requests refused by admission control before queueing",
            ["cloud"],
            registry=r,
        )
        self._add_autoscaler_series()
        # Called before each render, e.g. to read state kept outside this process.
        self.before_render: list[Callable[[], None]] = []

    # The autoscaler's last decision (gateway/autoscaling.py publishes it). ------

    def _add_autoscaler_series(self) -> None:
        r = self.registry
        self.autoscale_observed = Gauge(
            "bertgw_autoscaler_observed_rps",
            "Texts per second the autoscaler saw between its last two decisions",
            ["model"],
            registry=r,
        )
        self.autoscale_forecast = Gauge(
            "bertgw_autoscaler_forecast_rps",
            "Peak forecast rate over the autoscaler's horizon",
            ["model"],
            registry=r,
        )
        self.autoscale_upper = Gauge(
            "bertgw_autoscaler_forecast_upper_rps",
            "Peak upper bound of the forecast over the horizon (what is provisioned)",
            ["model"],
            registry=r,
        )
        self.autoscale_usd = Gauge(
            "bertgw_autoscaler_usd_per_hour",
            "Price of the replicas the autoscaler's targets keep",
            ["model"],
            registry=r,
        )
        self.autoscale_target = Gauge(
            "bertgw_autoscaler_target_replicas",
            "Replicas the autoscaler wants per cloud",
            ["model", "cloud"],
            registry=r,
        )
        self.autoscale_running = Gauge(
            "bertgw_autoscaler_running_replicas",
            "Running replicas per cloud as the autoscaler last saw them",
            ["model", "cloud"],
            registry=r,
        )
        self.autoscale_speed = Gauge(
            "bertgw_autoscaler_replica_seq_per_s",
            "Texts per second of compute of one replica, as the autoscaler measured "
            "it (clouds without an emulated cap)",
            ["model", "cloud"],
            registry=r,
        )

    def observe_autoscaler(self, model: str, status: Mapping[str, Any]) -> None:
        """Sets the autoscaler gauges from one published decision."""
        label = self.model_label(model)
        for gauge, key in (
            (self.autoscale_observed, "observed_rps"),
            (self.autoscale_forecast, "forecast_rps"),
            (self.autoscale_upper, "upper_rps"),
            (self.autoscale_usd, "usd_per_hour"),
        ):
            value = status.get(key)
            if value is not None:
                gauge.labels(label).set(float(value))
        for gauge, key in (
            (self.autoscale_target, "targets"),
            (self.autoscale_running, "running"),
            (self.autoscale_speed, "measured_seq_per_s"),
        ):
            for cloud, count in (status.get(key) or {}).items():
                if cloud in self._clouds:
                    gauge.labels(label, cloud).set(float(count))

    def model_label(self, model: str) -> str:
        return model if model in self._models else "unknown"

    def cloud_label(self, cloud: str | None) -> str:
        return cloud if cloud in self._clouds else "none"

    def observe_request(
        self,
        *,
        model: str,
        cloud: str | None,
        protocol: str,
        http_status: int,
        duration_s: float,
        num_texts: int,
    ) -> None:
        labels = (
            self.model_label(model),
            self.cloud_label(cloud),
            protocol,
            status_class(http_status),
        )
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(duration_s)
        if http_status < 300 and cloud is not None:
            self.texts.labels(labels[0], labels[1]).inc(num_texts)

    def observe_replica(
        self,
        *,
        model: str,
        cloud: str,
        service_s: float,
        queue_wait_s: float,
        batch_texts: int,
    ) -> None:
        labels = (self.model_label(model), self.cloud_label(cloud))
        self.service.labels(*labels).observe(service_s)
        self.queue_wait.labels(*labels).observe(queue_wait_s)
        self.batch_size.labels(*labels).observe(batch_texts)

    def render(self) -> bytes:
        for hook in self.before_render:
            hook()
        return generate_latest(self.registry)
