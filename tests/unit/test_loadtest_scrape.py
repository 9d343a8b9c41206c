"""Reading replicas and cost out of real Prometheus text exposition."""

from __future__ import annotations

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from loadtest.noop_server import NoopState, metrics_text
from loadtest.scrape import ScrapeSample, parse_exposition, run_cost_usd


def _exposition() -> str:
    registry = CollectorRegistry()
    replicas = Gauge(
        "bertgw_replicas", "replicas", ["cloud", "model"], registry=registry
    )
    replicas.labels(cloud="aws-us-east-1", model="demo-intents").set(3)
    replicas.labels(cloud="aws-us-east-1", model="banking77").set(1)
    replicas.labels(cloud="gcp-us-east4", model="demo-intents").set(2)
    Gauge("bertgw_cost_usd_per_hour", "cost", registry=registry).set(4.25)
    # Neighbours the parser must ignore.
    Counter("bertgw_requests", "requests", ["cloud"], registry=registry).labels(
        cloud="aws-us-east-1"
    ).inc(7)
    Histogram("bertgw_latency_seconds", "latency", registry=registry).observe(0.02)
    return generate_latest(registry).decode()


def test_replicas_add_up_per_cloud_and_cost_is_read() -> None:
    sample = parse_exposition(_exposition(), t_s=1.5)
    # aws: 3 + 1 replicas over two models; gcp: 2.
    assert sample.replicas == {"aws-us-east-1": 4.0, "gcp-us-east4": 2.0}
    assert sample.cost_usd_per_hour == pytest.approx(4.25)
    assert sample.t_s == 1.5


def test_exposition_without_the_gauges_gives_an_empty_sample() -> None:
    registry = CollectorRegistry()
    Counter("other_total", "x", registry=registry).inc()
    sample = parse_exposition(generate_latest(registry).decode(), t_s=0.0)
    assert sample.replicas == {}
    assert sample.cost_usd_per_hour is None


def test_garbage_exposition_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_exposition("bertgw_replicas{cloud=aws 3\n", t_s=0.0)


def test_noop_server_metrics_parse_back() -> None:
    state = NoopState(["a", "b"], error_every=0, delay_s=0.0)
    sample = parse_exposition(metrics_text(state, 1.5).decode(), t_s=0.0)
    assert sample.replicas == {"a": 1.0, "b": 1.0}
    assert sample.cost_usd_per_hour == 1.5


def test_run_cost_needs_two_samples_and_integrates_trapezoids() -> None:
    assert run_cost_usd([ScrapeSample(0.0, {}, 10.0)]) is None
    samples = [
        ScrapeSample(0.0, {}, 36.0),
        ScrapeSample(50.0, {}, None),  # a scrape without the gauge is skipped
        ScrapeSample(100.0, {}, 0.0),
    ]
    # (36 + 0) / 2 USD/h for 100 s = 18 * 100 / 3600 = 0.5 USD.
    assert run_cost_usd(samples) == pytest.approx(0.5)
