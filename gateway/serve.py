"""`bertgw serve --config FILE`: start the gateway and keep it up until told to stop.

Without `--address` it starts a one-node Ray cluster on 127.0.0.1 whose node carries
every cloud's placement resource, so per-cloud pinning works on one machine. With
`--address` it joins a running cluster whose nodes were started with their cloud's
resource (see configs/cluster.yaml). SIGINT or SIGTERM drains: the ingress refuses
new requests (503), the ones in flight finish, then Serve and Ray stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError

logger = logging.getLogger(__name__)

# Each cloud's node advertises this many units; a replica takes 0.001 of one.
PLACEMENT_RESOURCE_UNITS = 1000.0
DRAIN_POLL_S = 0.1


# Serve's lower-overhead settings (a subset of its RAY_SERVE_THROUGHPUT_OPTIMIZED
# mode, without direct ingress): deployment handles call replicas over Serve's
# inter-deployment gRPC channel instead of Ray actor calls (each replica serves that
# channel whether or not it is used; it halves the ingress-to-replica hop here), user
# code and the handle router on the replica's main event loop instead of extra
# threads, request logs buffered, logs not copied to stderr. Set before Ray starts,
# so every Serve process inherits them; values already in the environment win.
# benchmarks/gateway_overhead.py measures both.
SERVE_TUNING_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


def placement_resources(config: GatewayConfig) -> dict[str, float]:
    return {c.placement: PLACEMENT_RESOURCE_UNITS for c in config.clouds}


def offline_env() -> None:
    """Replicas load checkpoints from disk only; nothing may reach a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def start_ray(
    config: GatewayConfig, address: str | None = None, num_cpus: float | None = None
) -> None:
    """Joins `address`, or starts a local loopback node with every cloud's resource."""
    import ray

    from gateway.app import direct_ingress_env, grpc_env

    offline_env()
    for key, value in {**SERVE_TUNING_ENV, **grpc_env(config)}.items():
        os.environ.setdefault(key, value)
    direct = direct_ingress_env(config)
    os.environ.update(direct)
    if address is not None:
        if config.direct_ports():
            # Serve's processes there inherit their node's environment, not ours.
            logger.warning(
                "event=direct_ingress_needs_node_env env=%s "
                "(export these on every node before `ray start`)",
                " ".join(f"{k}={v}" for k, v in sorted(direct.items())),
            )
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return
    kwargs: dict[str, Any] = {}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    # address="local": always a new node, never one that another program started.
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        resources=placement_resources(config),
        log_to_driver=False,
        **kwargs,
    )


def wait_ready(handle: Any, timeout_s: float) -> bool:
    """Polls the ingress until every model answers, for at most `timeout_s`."""
    return asyncio.run(wait_ready_async(handle, timeout_s))


async def wait_ready_async(handle: Any, timeout_s: float) -> bool:
    """`wait_ready` from a running event loop (see `_serve_until_stopped`)."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if await asyncio.wait_for(handle.is_ready.remote(), timeout=30):
            return True
        await asyncio.sleep(0.25)
    return False


async def drain_async(handle: Any, timeout_s: float) -> int:
    """`drain` from a running event loop."""
    left = await asyncio.wait_for(handle.drain.remote(), timeout=30)
    deadline_s = time.monotonic() + timeout_s
    while left > 0 and time.monotonic() < deadline_s:
        await asyncio.sleep(DRAIN_POLL_S)
        left = await asyncio.wait_for(handle.in_flight.remote(), timeout=30)
    return left


def drain(handle: Any, timeout_s: float) -> int:
    """Stops new requests and waits for in-flight ones; returns those left over."""
    return asyncio.run(drain_async(handle, timeout_s))


def shutdown(handle: Any | None, drain_timeout_s: float) -> int:
    """Drains the ingress, then stops Serve and Ray; returns requests cut off."""
    left = 0
    if handle is not None:
        try:
            left = drain(handle, drain_timeout_s)
        except Exception:  # noqa: BLE001 - stopping anyway; say why
            logger.exception("event=drain_failed")
    stop_ray(left)
    return left


def stop_ray(cut_off: int, *, serve_stopped: bool = False) -> None:
    import ray
    from ray import serve

    if not serve_stopped:
        serve.shutdown()
    ray.shutdown()
    logger.info("event=stopped cut_off_requests=%d", cut_off)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="deployment YAML")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: start a local node on 127.0.0.1)",
    )
    parser.add_argument(
        "--num-cpus",
        type=float,
        default=None,
        help="CPUs the local node offers (default: this machine's cores)",
    )
    parser.add_argument(
        "--ready-timeout-s",
        type=float,
        default=600.0,
        help="how long to wait for every model to answer before giving up",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=30.0,
        help="how long in-flight requests may take to finish on shutdown",
    )


def preflight(config: GatewayConfig, local: bool) -> list[str]:
    """What would make the deployment fail, said before Ray starts.

    Every checkpoint must be a directory with a `config.json`; on a local node the
    HTTP port must be free on its host and the gRPC port on every interface (Serve's
    gRPC proxy takes no host and listens on all of them). Serve's proxies share a
    port with another listener rather than fail, so a second gateway on the same
    ports would silently split the traffic.
    """
    problems = []
    for i, model in enumerate(config.models):
        if not (model.checkpoint / "config.json").is_file():
            problems.append(
                f"models[{i}].checkpoint: {model.checkpoint} is not a trained "
                f"checkpoint (no config.json); train one with `bertgw finetune -o "
                f"{model.checkpoint}`, or run scripts/demo for the demo model"
            )
    if local:
        ports = [("http.port", config.http.host, config.http.port)]
        if config.grpc.enabled:
            ports.append(("grpc.port", "0.0.0.0", config.grpc.port))
        for field, first in config.direct_ports():
            # The replica's gRPC server, like the proxy, takes every interface.
            host = "0.0.0.0" if field.endswith("grpc_port") else config.http.host
            for i in range(config.ingress.num_replicas):
                ports.append((field, host, first + i))
        for field, host, port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # Lets a port that a stopped gateway left in TIME_WAIT count as free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    problems.append(
                        f"{field}: {port} on {host} is taken ({exc.strerror}); stop "
                        "what listens there (another gateway?) or choose another port"
                    )
    return problems


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"bertgw serve: {exc.message}")
        return 2
    problems = preflight(config, local=args.address is None)
    for problem in problems:
        print(f"bertgw serve: {problem}")
    if problems:
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("event=signal signum=%d", signum)
        stop.set()

    from gateway.app import deploy

    start_ray(config, args.address, args.num_cpus)
    # After Ray starts: its driver and the gRPC core it loads install their own
    # SIGTERM handlers (one dumps stacks and kills the process), replacing ours.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    outcome = {"code": 1, "cut_off": 0, "serve_stopped": 0}
    try:
        handle = deploy(config)
        asyncio.run(_serve_until_stopped(handle, config, args, stop, outcome))
        return outcome["code"]
    finally:
        stop_ray(outcome["cut_off"], serve_stopped=bool(outcome["serve_stopped"]))
        print(f"bertgw: stopped ({outcome['cut_off']} request(s) cut off)", flush=True)


async def _serve_until_stopped(
    handle: Any,
    config: GatewayConfig,
    args: argparse.Namespace,
    stop: threading.Event,
    outcome: dict[str, int],
) -> None:
    """Readiness, the wait for a signal and the drain, all on one event loop.

    Every call through `handle` happens on this loop: with Serve's router on the
    caller's loop (RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, which an operator's
    shell may export), blocking `.result()` calls from the driver would never be
    answered."""
    from ray import serve

    try:
        ready = await wait_ready_async(handle, args.ready_timeout_s)
        http = f"http://{config.http.host}:{config.http.port}"
        print(f"bertgw: HTTP  {http}/v2  (OIP v2), {http}/v1/classify, {http}/metrics")
        if config.grpc.enabled:
            # Serve's gRPC proxy has no host setting: it listens on every interface.
            print(f"bertgw: gRPC  0.0.0.0:{config.grpc.port} (every interface)")
        last = config.ingress.num_replicas - 1
        for field, first in config.direct_ports():
            # Serve's proxies are skipped here; one port per ingress replica.
            if field.endswith("grpc_port"):
                where = f"gRPC  0.0.0.0:{first}-{first + last} (every interface)"
            else:
                where = f"HTTP  {config.http.host}:{first}-{first + last} (same routes)"
            print(f"bertgw: direct {where}")
        print(f"bertgw: models {', '.join(config.model_names)}; ready={ready}")
        print("bertgw: Ctrl-C drains and stops", flush=True)
        if not ready:
            return
        # Bounded only by the operator: the wait ends on SIGINT or SIGTERM.
        while not stop.is_set():
            await asyncio.sleep(0.25)
        outcome["code"] = 0
    finally:
        try:
            outcome["cut_off"] = await drain_async(handle, args.drain_timeout_s)
        except Exception:  # noqa: BLE001 - stopping anyway; say why
            logger.exception("event=drain_failed")
        # On this loop too: Serve's shutdown closes the handles bound to it.
        await serve.shutdown_async()
        outcome["serve_stopped"] = 1
