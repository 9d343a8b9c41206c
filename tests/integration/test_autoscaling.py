"""A replica deployment scales up through our Serve autoscaling policy.

A real gateway (local Ray, Serve, three emulated clouds on loopback) whose cheap
cloud may run 1 to 2 replicas. Load above what the floor carries within the SLO
makes the policy (gateway/autoscaling.py -> router.autoscaler) ask for a second
replica, and Serve starts it. A third, dearest cloud may scale to zero: the gateway
turns ready without waiting for it, and the policy takes its one starting replica
away while nothing needs it. Scale-down of the cheap cloud is not checked here:
the forecast's upper bound keeps the error of the load's sudden stop for as long as
the forecaster keeps its error history, which is far longer than a test may wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.ingress import replica_deployment_name
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

MODEL = "demo-intents"
STARTUP_TIMEOUT_S = 300.0
SCALE_TIMEOUT_S = 90.0
# Each emulated replica runs 20 texts/s; with a 1 s SLO the queueing model keeps
# part of that within the SLO, so the floor (1 cheap + 1 dear) carries less than the
# 40 texts/s the two caps let through, which already call for a second cheap replica.
CAP_SEQ_PER_S = 20.0
TEXTS_PER_REQUEST = 8
LOAD_WORKERS = 6


def _config_data(model_dir: Path) -> dict[str, Any]:
    def cloud(
        name: str, price: float, max_replicas: int, min_replicas: int = 1
    ) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "test",
            "region": f"region-{name}",
            "accelerator": "T4",
            "on_demand_usd_per_hour": price,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "placement": f"cloud_{name}",
            "replica_num_cpus": 0.25,
            "emulation": {"rtt_ms": 1.0, "max_seq_per_s": CAP_SEQ_PER_S},
        }

    return {
        "app_name": "bertgw-autoscale-test",
        "models": [
            {
                "name": MODEL,
                "checkpoint": str(model_dir),
                "num_threads": 1,
                "max_batch_size": 32,
                "max_batch_wait_ms": 2,
            }
        ],
        "clouds": [
            cloud("cheap", 0.1, 2),
            cloud("dear", 0.5, 1),
            cloud("burst", 2.0, 1, min_replicas=0),
        ],
        "slo": {"latency_ms": 1000, "quantile": 0.95},
        "autoscaler": {
            "decision_interval_s": 1.0,
            "provisioning_lead_s": 0.0,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": 30.0,
            "drain_s": 0.0,
        },
        "http": {"host": "127.0.0.1", "port": free_port()},
        "grpc": {"enabled": False, "port": free_port()},
        "admission": {
            "max_queued_texts_per_cloud": 1000,
            "max_predicted_wait_slo_fraction": 10.0,
        },
        "ingress": {"num_cpus": 0.25},
    }


@pytest.fixture(scope="module")
def gateway(demo_model_dir: Path) -> Iterator[GatewayConfig]:
    import ray
    from ray import serve

    from gateway.app import deploy
    from gateway.serve import start_ray, wait_ready

    config = parse_config(_config_data(demo_model_dir))
    start_ray(config)
    try:
        handle = deploy(config)
        assert wait_ready(handle, STARTUP_TIMEOUT_S)
        yield config
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


def _running(config: GatewayConfig, cloud: str) -> int:
    from ray import serve

    app = serve.status().applications[config.app_name]
    info = app.deployments[replica_deployment_name(MODEL, cloud)]
    return int(info.replica_states.get("RUNNING", 0))


def _wait_for(config: GatewayConfig, cloud: str, count: int) -> float | None:
    """Seconds until `cloud` runs `count` replicas, or None after the timeout."""
    start_s = time.monotonic()
    while time.monotonic() - start_s < SCALE_TIMEOUT_S:
        if _running(config, cloud) == count:
            return time.monotonic() - start_s
        time.sleep(0.5)
    return None


def _load(url: str, stop: threading.Event, sent: list[int]) -> None:
    """Sends batches of texts back to back until told to stop (bounded by the test)."""
    body = {"model": MODEL, "texts": ["where is my card"] * TEXTS_PER_REQUEST}
    with httpx.Client(timeout=30.0) as client:
        while not stop.is_set():
            response = client.post(f"{url}/v1/classify", json=body)
            if response.status_code == 200:
                sent.append(TEXTS_PER_REQUEST)
            else:
                time.sleep(0.05)


def test_a_cloud_that_may_scale_to_zero_does_so_while_idle(
    gateway: GatewayConfig,
) -> None:
    # Ready (the fixture waited) with the burst cloud still starting or gone; no
    # load, so the policy drops it to zero after its downscale delay.
    down_s = _wait_for(gateway, "burst", 0)

    assert down_s is not None, "the burst cloud kept its replica while idle"
    url = f"http://127.0.0.1:{gateway.http.port}"
    response = httpx.post(
        f"{url}/v1/classify",
        json={"model": MODEL, "texts": ["where is my card"]},
        timeout=30.0,
    )
    assert response.status_code == 200
    assert response.json()["cloud"] in ("cheap", "dear")


def test_cheap_cloud_scales_up_through_the_policy_under_load(
    gateway: GatewayConfig,
) -> None:
    url = f"http://127.0.0.1:{gateway.http.port}"
    assert _running(gateway, "cheap") == 1

    stop = threading.Event()
    served: list[int] = []
    workers = [
        threading.Thread(target=_load, args=(url, stop, served), daemon=True)
        for _ in range(LOAD_WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        up_s = _wait_for(gateway, "cheap", 2)
        metrics = httpx.get(f"{url}/metrics", timeout=10.0).text
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60.0)

    assert up_s is not None, "the cheap cloud never ran a second replica"
    assert sum(served) > 0
    # The policy's decision reached the ingress's gauges through the status store.
    assert (
        'bertgw_autoscaler_target_replicas{cloud="cheap",model="demo-intents"} 2.0'
        in (metrics)
    )
    # The dear cloud is fixed at one replica whatever the load.
    assert _running(gateway, "dear") == 1
