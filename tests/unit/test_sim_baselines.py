"""The baseline autoscalers: Ray Serve's queue-length rule and SkyServe's QPS rule."""

from __future__ import annotations

from loadtest.sim.baselines import (
    QpsAutoscaler,
    QpsSettings,
    QueueLengthAutoscaler,
    QueueLengthSettings,
)
from router.clock import ManualClock
from router.cloud import CloudSpec


def _pool(name: str, usd_per_hour: float, max_replicas: int = 10) -> CloudSpec:
    return CloudSpec(
        name=name,
        provider="aws",
        region="r1",
        accelerator="T4",
        on_demand_usd_per_hour=usd_per_hour,
        min_replicas=1,
        max_replicas=max_replicas,
    )


def test_queue_length_scaler_scales_up_only_after_the_upscale_delay():
    clock = ManualClock(0.0)
    scaler = QueueLengthAutoscaler([_pool("a", 1.0)], QueueLengthSettings(), clock)
    scaler.observe_load({"a": 10.0})

    # 10 ongoing requests / 2 per replica = 5 replicas, after 30 s of wanting it.
    assert scaler.decide({"a": 1}).targets == {"a": 1}
    clock.advance(20.0)
    scaler.observe_load({"a": 10.0})
    assert scaler.decide({"a": 1}).targets == {"a": 1}
    clock.advance(10.0)
    scaler.observe_load({"a": 10.0})
    assert scaler.decide({"a": 1}).targets == {"a": 5}


def test_queue_length_scaler_waits_the_downscale_delay_before_shrinking():
    clock = ManualClock(0.0)
    scaler = QueueLengthAutoscaler([_pool("a", 1.0)], QueueLengthSettings(), clock)
    scaler.observe_load({"a": 8.0})
    scaler.decide({"a": 4})
    for _ in range(59):  # 590 s of idle, 10 s apart: still under 600 s
        clock.advance(10.0)
        scaler.observe_load({"a": 0.0})
        assert scaler.decide({"a": 4}).targets == {"a": 4}
    clock.advance(40.0)
    scaler.observe_load({"a": 0.0})
    # Idle means the floor: min_replicas = 1.
    assert scaler.decide({"a": 4}).targets == {"a": 1}


def test_qps_scaler_fills_the_cheapest_pool_first_after_its_delay():
    clock = ManualClock(0.0)
    pools = [_pool("dear", 3.0), _pool("cheap", 1.0, max_replicas=2)]
    scaler = QpsAutoscaler(pools, QpsSettings(target_qps_per_replica=10.0), clock)
    for _ in range(60):
        scaler.observe(45, 45, 45 * 128)  # 45 requests/s for a minute
        clock.advance(1.0)

    # ceil(45 / 10) = 5 replicas, wanted for 300 s before acting.
    first = scaler.decide({"dear": 1, "cheap": 1}).targets
    assert first == {"cheap": 2, "dear": 1}  # min_replicas keeps one in each
    for _ in range(300):
        scaler.observe(45, 45, 45 * 128)
        clock.advance(1.0)
    assert scaler.decide({"dear": 1, "cheap": 1}).targets == {"cheap": 2, "dear": 3}
