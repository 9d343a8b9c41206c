"""The demo's gateway: start it the way `bertgw serve` does, check it, stop it cleanly.

Everything about Ray and Serve comes from gateway/serve.py and gateway/app.py; this
module only overrides ports, waits for both transports, checks the served labels
against the demo set's held-out split, and confirms that nothing is left running.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

READY_POLL_S = 0.25
LABEL_BATCH_TEXTS = 32
# Ray's processes get this long to exit after ray.shutdown() before they count.
EXIT_GRACE_S = 10.0


def with_ports(
    config: GatewayConfig, http_port: int | None, grpc_port: int | None
) -> GatewayConfig:
    """The config with the HTTP and gRPC ports replaced where given."""
    update: dict[str, Any] = {}
    if http_port is not None:
        update["http"] = config.http.model_copy(update={"port": http_port})
    if grpc_port is not None:
        update["grpc"] = config.grpc.model_copy(update={"port": grpc_port})
    return config.model_copy(update=update)


def start_gateway(config: GatewayConfig, ready_timeout_s: float) -> Any:
    """Starts a local Ray node and the Serve app; returns the ingress handle.

    Raises:
        TimeoutError: the models or the HTTP route did not become ready in time.
    """
    from gateway.app import deploy
    from gateway.serve import start_ray, wait_ready

    deadline_s = time.monotonic() + ready_timeout_s
    start_ray(config)
    handle = deploy(config)
    if not wait_ready(handle, max(1.0, deadline_s - time.monotonic())):
        raise TimeoutError(f"models not ready within {ready_timeout_s:g} s")
    wait_http_ready(config, deadline_s)
    return handle


def http_url(config: GatewayConfig) -> str:
    return f"http://{config.http.host}:{config.http.port}"


def grpc_target(config: GatewayConfig) -> str:
    return f"{config.http.host}:{config.grpc.port}"


def wait_http_ready(config: GatewayConfig, deadline_s: float) -> None:
    """Polls `/v2/health/ready` through Serve's proxy until it answers 200."""
    import httpx

    url = f"{http_url(config)}/v2/health/ready"
    while time.monotonic() < deadline_s:
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(READY_POLL_S)
    raise TimeoutError(f"{url} did not answer 200 in time")


def fetch_metrics(config: GatewayConfig) -> str | None:
    """The gateway's Prometheus text now (its own latency histograms), or None."""
    import httpx

    try:
        response = httpx.get(f"{http_url(config)}/metrics", timeout=5.0)
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None


@dataclass(frozen=True)
class LabelCheck:
    """The served model's accuracy on the demo set's held-out split, per protocol."""

    texts: int
    http_accuracy: float
    grpc_accuracy: float
    protocols_agree: bool
    clouds: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "http_accuracy": self.http_accuracy,
            "grpc_accuracy": self.grpc_accuracy,
            "protocols_agree": self.protocols_agree,
            "clouds": list(self.clouds),
        }


def read_labelled(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def check_labels(
    config: GatewayConfig, model: str, rows: list[tuple[str, str]]
) -> LabelCheck:
    """Classifies every row over HTTP and over gRPC and scores both against labels."""
    from gateway.client import classify_grpc, classify_http

    http_labels: list[str] = []
    grpc_labels: list[str] = []
    clouds: set[str] = set()
    for lo in range(0, len(rows), LABEL_BATCH_TEXTS):
        texts = [text for text, _ in rows[lo : lo + LABEL_BATCH_TEXTS]]
        via_http = classify_http(http_url(config), model, texts)
        via_grpc = classify_grpc(grpc_target(config), model, texts)
        http_labels += [r.label for r in via_http.results]
        grpc_labels += [r.label for r in via_grpc.results]
        clouds |= {via_http.cloud, via_grpc.cloud}
    truth = [label for _, label in rows]
    return LabelCheck(
        texts=len(rows),
        http_accuracy=_accuracy(http_labels, truth),
        grpc_accuracy=_accuracy(grpc_labels, truth),
        protocols_agree=http_labels == grpc_labels,
        clouds=tuple(sorted(clouds)),
    )


def _accuracy(predicted: list[str], truth: list[str]) -> float:
    hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
    return hits / len(truth) if truth else 0.0


def stop_gateway(handle: Any | None, drain_timeout_s: float) -> int:
    """Drains, stops Serve and Ray; returns requests cut off by the drain timeout."""
    import ray

    from gateway.serve import shutdown

    if not ray.is_initialized():
        return 0
    return shutdown(handle, drain_timeout_s)


def child_processes() -> list[int] | None:
    """PIDs of this process's descendants (Linux /proc), or None where unknown."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # After the command name (which may hold spaces): state, then parent PID.
        # An exited child not yet reaped (state Z) runs nothing, so it is skipped.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return sorted(found)


def wait_children_gone(grace_s: float = EXIT_GRACE_S) -> list[int] | None:
    """Waits up to `grace_s` for descendants to exit; returns those still there."""
    deadline_s = time.monotonic() + grace_s
    left = child_processes()
    while left and time.monotonic() < deadline_s:
        time.sleep(0.2)
        left = child_processes()
    return left
