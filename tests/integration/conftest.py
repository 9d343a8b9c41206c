"""One real gateway per test module: local Ray, Serve, three emulated clouds, loopback.

The gateway serves the fine-tuned demo model (the `demo_model_dir` fixture) with
auth on (two tokens from a file), small emulated round trips and no throughput caps,
so that tests exercise routing, errors and concurrency rather than waiting on
emulated accelerators. Ray binds some internal ports on every interface; all test
traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig, parse_config

TOKEN = "integration-token"
RATE_TOKEN = "rate-limited-token"
# Each token's bucket: a burst no functional test of a module comes near, refilled
# slowly so that the rate-limit test can empty its own token's bucket quickly.
BURST_REQUESTS = 600
STARTUP_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cloud(name: str, region: str, price: float, placement: str, rtt_ms: float) -> dict:
    return {
        "name": name,
        "provider": name.split("-")[0],
        "region": region,
        "accelerator": "T4",
        "on_demand_usd_per_hour": price,
        "min_replicas": 1,
        "max_replicas": 1,
        "placement": placement,
        "replica_num_cpus": 0.25,
        "emulation": {"rtt_ms": rtt_ms},
    }


def gateway_config_data(model_dir: Path, tokens_file: Path) -> dict[str, Any]:
    return {
        "app_name": "bertgw-test",
        "models": [
            {
                "name": "demo-intents",
                "checkpoint": str(model_dir),
                "num_threads": 1,
                "max_batch_size": 32,
                "max_batch_wait_ms": 2,
                "max_texts_per_request": 64,
                "max_chars_per_text": 4096,
            }
        ],
        "clouds": [
            cloud("azure-westus2", "westus2", 0.0616, "cloud_azure_westus2", 8.0),
            cloud("gcp-us-central1", "us-central1", 0.2231, "cloud_gcp_usc1", 4.0),
            cloud("aws-us-east-1", "us-east-1", 0.526, "cloud_aws_use1", 1.0),
        ],
        # A generous SLO: these tests check answers, not the SLO policy.
        "slo": {"latency_ms": 2000, "quantile": 0.95},
        "router": {
            "breaker_consecutive_failures": 1000,
            "breaker_min_requests": 1000,
            "breaker_cooldown_s": 1.0,
        },
        "http": {"host": "127.0.0.1", "port": free_port(), "max_body_bytes": 1_000_000},
        "grpc": {"enabled": True, "port": free_port(), "max_message_bytes": 1_000_000},
        "auth": {
            "tokens_file": str(tokens_file),
            "requests_per_s": 1.0,
            "burst_requests": BURST_REQUESTS,
        },
        "admission": {
            "max_queued_texts_per_cloud": 1000,
            "max_predicted_wait_slo_fraction": 10.0,
            "max_ongoing_requests_per_replica": 8,
            "max_queued_requests_per_replica": 256,
        },
        # Both ways in: Serve's proxies on the ports above, and the ingress
        # replica's own ports (direct ingress).
        "ingress": {
            "num_cpus": 0.25,
            "default_timeout_ms": 60_000,
            "direct_http_port": free_port(),
            "direct_grpc_port": free_port(),
        },
    }


@dataclass
class Gateway:
    config: GatewayConfig
    handle: Any
    # (seconds since deploy started, status of GET /v2/health/ready or None if
    # the port did not answer) until the first 200.
    startup_readiness: list[tuple[float, int | None]] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.http.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.config.grpc.port}"

    def url(self, route: str) -> str:
        """The HTTP base URL through Serve's proxy ("proxy") or straight to the
        ingress replica ("direct")."""
        port = self.config.http.port
        if route == "direct":
            port = self.config.ingress.direct_http_port
        return f"http://127.0.0.1:{port}"

    def target(self, route: str) -> str:
        """The gRPC target, as `url`."""
        port = self.config.grpc.port
        if route == "direct":
            port = self.config.ingress.direct_grpc_port
        return f"127.0.0.1:{port}"

    def headers(self, token: str = TOKEN, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}", **extra}


def _watch_readiness(gw: Gateway, start_s: float) -> None:
    """Polls readiness from deploy time until it first answers 200 (bounded)."""
    url = f"{gw.http_url}/v2/health/ready"
    while time.monotonic() - start_s < STARTUP_TIMEOUT_S:
        try:
            status: int | None = httpx.get(url, timeout=5.0).status_code
        except httpx.TransportError:
            status = None
        gw.startup_readiness.append((time.monotonic() - start_s, status))
        if status == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"gateway not ready after {STARTUP_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def gateway(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    import ray
    from ray import serve

    from gateway.app import build_app, start_serve
    from gateway.serve import start_ray

    tokens_file = tmp_path_factory.mktemp("auth") / "tokens"
    tokens_file.write_text(f"{TOKEN}\n{RATE_TOKEN}\n")
    config = parse_config(gateway_config_data(demo_model_dir, tokens_file))

    # start_ray exports Serve's direct-ingress switches for this gateway; the
    # modules after this one must not inherit them.
    saved_env = dict(os.environ)
    start_ray(config)
    try:
        start_serve(config)
        # Deploy in a thread (serve.run returns once deployments run) while this
        # thread watches readiness from the first moment.
        handles: list[Any] = []
        deployer = threading.Thread(
            target=lambda: handles.append(
                serve.run(build_app(config), name=config.app_name, route_prefix="/")
            )
        )
        start_s = time.monotonic()
        deployer.start()
        gw = Gateway(config, None)
        _watch_readiness(gw, start_s)
        deployer.join(timeout=STARTUP_TIMEOUT_S)
        assert handles, "serve.run did not return"
        gw.handle = handles[0]
        yield gw
    finally:
        # The graceful-stop test may have stopped both already.
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)
