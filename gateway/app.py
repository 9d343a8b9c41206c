"""The Ray Serve application: one replica deployment per (model, cloud), one ingress.

Each replica deployment asks for a sliver of its cloud's custom resource
(`placement` in the config), so Ray schedules it only on that cloud's nodes. The
ingress takes HTTP (FastAPI, OIP v2) and gRPC (Serve's gRPC proxy, the
`inference.GRPCInferenceService` RPCs) and sends each request through the router to
one cloud's pool of replicas.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve
from ray.serve.config import HTTPOptions, gRPCOptions

from gateway.autoscaling import (
    autoscales,
    counting_replica,
    read_status,
    scaling_options,
)
from gateway.config import GatewayConfig, parse_config
from gateway.grpc_api import GrpcMethods
from gateway.http_api import build_http_app
from gateway.ingress import INGRESS_NAME, IngressCore, replica_deployment_name
from gateway.replica import ClassifierReplica

logger = logging.getLogger(__name__)

GRPC_SERVICER = "protos.inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
# How much of a cloud's resource one replica takes: nodes advertise 1000 units, so
# placement never limits the replica count; CPUs and memory do.
PLACEMENT_UNITS = 0.001
# Replicas finish their in-flight batches for up to this long when stopped.
GRACEFUL_SHUTDOWN_S = 20.0


@serve.deployment(name=INGRESS_NAME)
@serve.ingress()
class Ingress(GrpcMethods):
    """Takes every request; the routes live in http_api.py and grpc_api.py."""

    def __init__(self, config_data: dict[str, Any], handles: dict[str, Any]) -> None:
        config = parse_config(config_data)
        self.core = IngressCore(config, handles)
        if autoscales(config):
            self.core.metrics.before_render.append(self._read_autoscaler)
        try:
            self.core.start_background()
        except RuntimeError:
            # No running loop in this constructor: the first request starts them.
            pass

    def _read_autoscaler(self) -> None:
        """Copies the autoscaler's last published decision into the gauges."""
        for model in self.core.config.model_names:
            status = read_status(self.core.config.app_name, model)
            if status:
                self.core.metrics.observe_autoscaler(model, status)

    def __serve_build_asgi_app__(self) -> Any:  # noqa: PLW3201 - Serve's hook name
        return build_http_app(self.core)

    async def drain(self) -> int:
        """Stops taking requests; returns how many are still in flight."""
        self.core.dispatcher.drain()
        return self.core.dispatcher.requests_in_flight

    async def in_flight(self) -> int:
        return self.core.dispatcher.requests_in_flight

    async def is_ready(self) -> bool:
        self.core.start_background()
        return self.core.ready


def grpc_env(config: GatewayConfig) -> dict[str, str]:
    """Serve's gRPC proxy reads its message size limit from the environment."""
    return {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(config.grpc.max_message_bytes)}


# Seconds a draining direct-ingress replica keeps answering after it stops being
# a target, for load balancers to notice (Serve's default is 30 s). The gateway's
# own drain refuses new requests first, so a short one suffices.
DIRECT_INGRESS_DRAIN_S = 1.0


def direct_ingress_env(config: GatewayConfig) -> dict[str, str]:
    """Serve's direct-ingress switches, from `ingress.direct_*_port`.

    Serve reads them from the environment of its controller and replicas, so they
    are set before Ray starts; the config decides, whatever was exported. Replica
    i gets the i-th port of each range; a released port goes straight back to the
    pool (no HAProxy here to hold a stale target), so a restarted replica finds one.
    """
    ports = config.direct_ports()
    if not ports:
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    env = {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DIRECT_INGRESS_DRAIN_S),
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }
    for field, first in ports:
        protocol = "GRPC" if field.endswith("grpc_port") else "HTTP"
        env[f"RAY_SERVE_DIRECT_INGRESS_MIN_{protocol}_PORT"] = str(first)
        env[f"RAY_SERVE_DIRECT_INGRESS_MAX_{protocol}_PORT"] = str(
            first + config.ingress.num_replicas
        )
    return env


def start_serve(config: GatewayConfig) -> None:
    """Starts Serve's HTTP and gRPC proxies on the configured loopback ports."""
    grpc_options = None
    if config.grpc.enabled:
        grpc_options = gRPCOptions(
            port=config.grpc.port, grpc_servicer_functions=[GRPC_SERVICER]
        )
    serve.start(
        proxy_location=config.http.proxy_location,
        http_options=HTTPOptions(host=config.http.host, port=config.http.port),
        grpc_options=grpc_options,
    )


def build_app(config: GatewayConfig) -> Any:
    """The bound application: every replica deployment, and the ingress over them."""
    admission = config.admission
    logging_config = {
        "enable_access_log": config.ingress.access_log,
        "log_level": config.ingress.serve_log_level,
    }
    handles: dict[str, dict[str, Any]] = {}
    # With autoscaling, replicas report the texts they served to the policy.
    base = counting_replica() if autoscales(config) else ClassifierReplica
    for model in config.models:
        handles[model.name] = {}
        for cloud in config.clouds:
            if cloud.colocated:
                continue
            deployment = base.options(
                name=replica_deployment_name(model.name, cloud.name),
                **scaling_options(config, model.name, cloud.name),
                max_ongoing_requests=admission.max_ongoing_requests_per_replica,
                max_queued_requests=admission.max_queued_requests_per_replica,
                graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
                logging_config=logging_config,
                ray_actor_options={
                    "num_cpus": cloud.replica_num_cpus,
                    "resources": {cloud.placement: PLACEMENT_UNITS},
                },
            )
            handles[model.name][cloud.name] = deployment.bind(
                model.name,
                str(model.checkpoint),
                cloud=cloud.name,
                backend=model.backend,
                precision=model.precision,
                packing=model.packing,
                num_threads=model.num_threads,
                max_batch_size=model.max_batch_size,
                max_batch_wait_ms=model.max_batch_wait_ms,
            )
    actor_options: dict[str, Any] = {"num_cpus": config.ingress.num_cpus}
    if config.ingress.placement is not None:
        actor_options["resources"] = {config.ingress.placement: PLACEMENT_UNITS}
    colocated = config.colocated_cloud
    if colocated is not None:
        # The ingress is that cloud's replica too: on its nodes, with its CPUs.
        actor_options = {
            "num_cpus": config.ingress.num_cpus + colocated.replica_num_cpus,
            "resources": {colocated.placement: PLACEMENT_UNITS},
        }
    ingress = Ingress.options(
        num_replicas=config.ingress.num_replicas,
        max_ongoing_requests=config.ingress.max_ongoing_requests,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        logging_config=logging_config,
        ray_actor_options=actor_options,
    )
    return ingress.bind(config.model_dump(mode="json"), handles)


def deploy(config: GatewayConfig) -> Any:
    """Starts Serve if needed, deploys the application, returns the ingress handle.

    Returns once every deployment is running; readiness (every model answering)
    follows shortly after and is reported by `/v2/health/ready`.
    """
    for key, value in grpc_env(config).items():
        os.environ.setdefault(key, value)
    start_serve(config)
    handle = serve.run(build_app(config), name=config.app_name, route_prefix="/")
    logger.info("event=deployed app=%s", config.app_name)
    return handle
