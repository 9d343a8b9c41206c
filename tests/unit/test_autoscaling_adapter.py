"""The Serve autoscaling adapter: snapshots from the Serve context, the fleet it feeds.

Serve's own `AutoscalingContext` is built here (no cluster runs); the decision code is
the real Autoscaler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID, TimeStampedValue
from ray.serve.config import AutoscalingContext

from gateway.autoscaling import (
    TEXTS_METRIC,
    TOKENS_METRIC,
    CloudPoolPolicy,
    PoolSnapshot,
    RunningTotals,
    SnapshotClock,
    build_fleet,
    scaling_options,
    snapshot_from_context,
)
from gateway.config import GatewayConfig, parse_config
from router.demand import ModelShape

SHAPE = ModelShape(6, 384, 1536, 12, 30522, 512, num_labels=10)
DEPLOYMENT = DeploymentID(name="replica-demo-cheap", app_name="bertgw-test")


def _context(
    totals: dict[str, tuple[float, ...]], running: int, now_s: float
) -> AutoscalingContext:
    replicas = [ReplicaID(uid, DEPLOYMENT) for uid in totals]
    raw = {
        TEXTS_METRIC: {
            ReplicaID(uid, DEPLOYMENT): [
                TimeStampedValue(now_s - len(values) + k, v)
                for k, v in enumerate(values)
            ]
            for uid, values in totals.items()
        },
        TOKENS_METRIC: {
            ReplicaID(uid, DEPLOYMENT): [TimeStampedValue(now_s, 32.0 * values[-1])]
            for uid, values in totals.items()
        },
    }
    return AutoscalingContext(
        deployment_id=DEPLOYMENT,
        deployment_name=DEPLOYMENT.name,
        app_name=DEPLOYMENT.app_name,
        current_num_replicas=running,
        target_num_replicas=running,
        running_replicas=replicas,
        total_num_requests=0.0,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics=raw,
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=3,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now_s,
        config=None,
    )


def _config(
    tmp_path: Path, dear_cap: float | None = 40.0, **autoscaler: Any
) -> GatewayConfig:
    def cloud(
        name: str, price: float, placement: str, cap: float | None
    ) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "test",
            "region": f"region-{name}",
            "accelerator": "T4",
            "on_demand_usd_per_hour": price,
            "min_replicas": 1,
            "max_replicas": 3,
            "placement": placement,
            "emulation": {"rtt_ms": 0.0, "max_seq_per_s": cap},
        }

    return parse_config(
        {
            "app_name": "bertgw-test",
            "models": [{"name": "demo", "checkpoint": str(tmp_path)}],
            "clouds": [
                cloud("cheap", 0.1, "p_cheap", 40.0),
                cloud("dear", 0.5, "p_dear", dear_cap),
            ],
            "slo": {"latency_ms": 1000.0, "quantile": 0.95},
            "autoscaler": {
                "decision_interval_s": 1.0,
                "provisioning_lead_s": 0.0,
                "upscale_delay_s": 0.0,
                "downscale_delay_s": 0.0,
                "drain_s": 0.0,
                **autoscaler,
            },
        }
    )


def test_snapshot_takes_each_replicas_latest_running_total() -> None:
    ctx = _context({"r1": (3.0, 7.0), "r2": (5.0,)}, running=2, now_s=100.0)

    snapshot = snapshot_from_context(ctx, "cheap")

    assert snapshot == PoolSnapshot(
        cloud="cheap",
        now_s=100.0,
        running_replicas=2,
        texts_by_replica={"r1": 7.0, "r2": 5.0},
        # 32 tokens per text in the fake reports: 32 * 7 and 32 * 5.
        tokens_by_replica={"r1": 224.0, "r2": 160.0},
    )


def test_snapshot_without_custom_metrics_has_no_counts() -> None:
    ctx = _context({}, running=1, now_s=5.0)

    snapshot = snapshot_from_context(ctx, "dear")

    assert snapshot.texts_by_replica == {}
    assert snapshot.running_replicas == 1


def test_running_totals_count_new_replicas_in_full_and_restarts_from_zero() -> None:
    totals = RunningTotals()

    assert totals.advance({"a": 10.0}) == 10.0
    # a: 10 -> 25 adds 15; b is new and adds its 4.
    assert totals.advance({"a": 25.0, "b": 4.0}) == 19.0
    # a restarted under its id (total fell to 3): counts 3; b gone, forgotten.
    assert totals.advance({"a": 3.0}) == 3.0
    # b back with 2: new again, counts 2; a unchanged adds nothing.
    assert totals.advance({"a": 3.0, "b": 2.0}) == 2.0


def _tick(fleet: Any, cloud: str, totals: dict[str, float], now_s: float) -> int:
    return fleet.on_snapshot(PoolSnapshot(cloud, now_s, 1, totals, {}))


def test_fleet_holds_the_floor_without_traffic(tmp_path: Path) -> None:
    fleet = build_fleet(_config(tmp_path), "demo", SnapshotClock(0.0), SHAPE)

    targets = [
        _tick(fleet, c, {}, t) for t in (0.0, 1.0, 2.0) for c in ("cheap", "dear")
    ]

    assert targets == [1] * 6


def test_fleet_scales_the_cheap_cloud_for_the_summed_rate(tmp_path: Path) -> None:
    fleet = build_fleet(_config(tmp_path), "demo", SnapshotClock(0.0), SHAPE)

    # Both clouds' replicas serve 30 texts/s each: 60 texts/s in all. One replica
    # runs 40 texts/s in constant time, of which the queueing model keeps about
    # 38.5/s within the SLO, so the floor (1 cheap + 1 dear = 77/s) carries it;
    # nothing is added.
    cheap_total = dear_total = 0.0
    for step in range(10):
        now_s = 0.5 * step
        cheap_total += 15.0
        dear_total += 15.0
        _tick(fleet, "cheap", {"r1": cheap_total}, now_s)
        _tick(fleet, "dear", {"r2": dear_total}, now_s)
    assert fleet.decision is not None
    assert fleet.decision.targets == {"cheap": 1, "dear": 1}
    # 30 texts per 0.5 s step from the two clouds: 60 texts/s.
    assert fleet.observed_rps == pytest.approx(60.0)

    # Now 100 texts/s, all through the cheap cloud. Two pooled replicas carry about
    # 78.5/s, so 2 cheap + 1 dear carry 78.5 + 38.5 = 117/s at 2 x 0.1 + 0.5 =
    # $0.7/h; 1 cheap + 2 dear carry the same at $1.1/h, and 1 + 1 (77/s) is too
    # little.
    for step in range(10, 20):
        now_s = 0.5 * step
        cheap_total += 50.0
        _tick(fleet, "cheap", {"r1": cheap_total}, now_s)
        _tick(fleet, "dear", {"r2": dear_total}, now_s)
    assert fleet.decision.targets == {"cheap": 2, "dear": 1}
    assert fleet.autoscaler.capacity_rps("cheap", 2) == pytest.approx(78.5, abs=0.5)
    status = fleet.status()
    assert status["targets"] == fleet.decision.targets
    assert status["observed_rps"] == pytest.approx(100.0)
    assert status["usd_per_hour"] == pytest.approx(
        0.1 * status["targets"]["cheap"] + 0.5 * status["targets"]["dear"]
    )


def test_fleet_counts_requests_and_their_texts_when_replicas_report_both(
    tmp_path: Path,
) -> None:
    fleet = build_fleet(_config(tmp_path), "demo", SnapshotClock(0.0), SHAPE)

    # The cheap cloud serves 5 requests of 4 texts per 0.5 s step: 10 requests/s,
    # 40 texts/s. The rate the autoscaler plans for is in requests, and it learns
    # the texts per request (smoothed 0.2 a decision slot: after 19 slots of
    # 1 s it is 1 + 3 x (1 - 0.8**19) = 3.96).
    requests = texts = 0.0
    for step in range(40):
        now_s = 0.5 * step
        requests += 5.0
        texts += 20.0
        fleet.on_snapshot(
            PoolSnapshot(
                "cheap",
                now_s,
                1,
                {"r1": texts},
                {"r1": 32.0 * texts},
                {"r1": requests},
            )
        )
    assert fleet.observed_rps == pytest.approx(10.0)
    assert fleet.autoscaler._seq_per_request == pytest.approx(4.0, abs=0.1)


def test_an_uncapped_cloud_is_planned_at_the_speed_its_replicas_show(
    tmp_path: Path,
) -> None:
    fleet = build_fleet(
        _config(tmp_path, dear_cap=None), "demo", SnapshotClock(0.0), SHAPE
    )
    # Until its replicas report, "dear" runs at the router's default 50 texts/s.
    before = fleet.autoscaler.capacity_rps("dear", 1)

    # Its replica serves 25 texts per 0.5 s tick in 0.125 s of compute: 200/s.
    # "cheap" reports compute too, but its emulated cap is its speed.
    for step in range(1, 13):
        fleet.on_snapshot(
            PoolSnapshot(
                "dear", 0.5 * step, 1, {"r": 25.0 * step}, {}, {}, {"r": 0.125 * step}
            )
        )
        fleet.on_snapshot(
            PoolSnapshot("cheap", 0.5 * step, 1, {"r": 0.0}, {}, {}, {"r": 1.0 * step})
        )

    assert fleet.measured_seq_per_s == {"dear": pytest.approx(200.0)}
    assert fleet.autoscaler.capacity_rps("dear", 1) > 3 * before
    assert fleet.status()["measured_seq_per_s"] == fleet.measured_seq_per_s


def test_policy_holds_the_current_target_when_the_decision_fails() -> None:
    # A config that cannot be parsed: the policy must not crash Serve's loop.
    policy = CloudPoolPolicy(config={"models": []}, model="demo", cloud="cheap")
    ctx = _context({"r1": (1.0,)}, running=2, now_s=1.0)

    assert policy(ctx) == (2, {})


def test_scaling_options_fix_counts_unless_some_cloud_may_scale(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    one = [c.model_copy(update={"max_replicas": 1}) for c in config.clouds]
    fixed = config.model_copy(update={"clouds": tuple(one)})
    mixed = config.model_copy(update={"clouds": (config.clouds[0], one[1])})

    assert scaling_options(fixed, "demo", "cheap") == {"num_replicas": 1}
    scaled = scaling_options(mixed, "demo", "cheap")["autoscaling_config"]
    assert (scaled.min_replicas, scaled.max_replicas) == (1, 3)
    assert scaled.policy.policy_function.endswith("CloudPoolPolicy")
    assert scaled.policy.policy_kwargs["cloud"] == "cheap"
    # Counters reach the policy every second, not in Serve's 10 s lumps.
    assert (scaled.metrics_interval_s, scaled.look_back_period_s) == (1.0, 5.0)
    # The fixed cloud runs the policy too, held at 1..1, so its texts are counted.
    held = scaling_options(mixed, "demo", "dear")["autoscaling_config"]
    assert (held.min_replicas, held.max_replicas) == (1, 1)
    assert held.policy.policy_kwargs["cloud"] == "dear"


def test_ray_default_baseline_uses_serves_policy_with_our_delays(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, downscale_delay_s=7.0)
    baseline = config.model_copy(update={"autoscaling_policy": "ray_default"})

    scaled = scaling_options(baseline, "demo", "cheap")["autoscaling_config"]

    assert scaled.policy.is_default_policy_function()
    assert (scaled.upscale_delay_s, scaled.downscale_delay_s) == (0.0, 7.0)
    ours = scaling_options(config, "demo", "cheap")["autoscaling_config"]
    assert (scaled.metrics_interval_s, scaled.look_back_period_s) == (
        ours.metrics_interval_s,
        ours.look_back_period_s,
    )
    # Serve's own target unless the config names one.
    assert scaled.target_ongoing_requests == 2
    tuned = baseline.model_copy(update={"ray_target_ongoing_requests": 0.75})
    tuned_scaled = scaling_options(tuned, "demo", "cheap")["autoscaling_config"]
    assert tuned_scaled.target_ongoing_requests == 0.75


def test_published_status_sets_gauges_for_known_clouds_only() -> None:
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(["demo"], ["cheap", "dear"])
    status = {
        "observed_rps": 60.0,
        "forecast_rps": 55.0,
        "upper_rps": 70.0,
        "usd_per_hour": 0.7,
        "targets": {"cheap": 2, "dear": 1, "not-configured": 9},
        "running": {"cheap": 1, "dear": 1},
        "measured_seq_per_s": {"dear": 212.5},
    }

    metrics.observe_autoscaler("demo", status)

    text = metrics.render().decode()
    assert 'bertgw_autoscaler_forecast_upper_rps{model="demo"} 70.0' in text
    assert 'bertgw_autoscaler_target_replicas{cloud="cheap",model="demo"} 2.0' in text
    assert 'bertgw_autoscaler_running_replicas{cloud="cheap",model="demo"} 1.0' in text
    assert (
        'bertgw_autoscaler_replica_seq_per_s{cloud="dear",model="demo"} 212.5' in text
    )
    # Label values stay bounded: a cloud the gateway does not know is dropped.
    assert "not-configured" not in text
