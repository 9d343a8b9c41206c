"""gRPC adapter: `inference.GRPCInferenceService` served through Ray Serve's gRPC proxy.

Serve's proxy calls the ingress method named after each RPC. Status codes and
details are set on Serve's `grpc_context` (the proxy copies them onto the real
call), with an empty reply message; 503-class errors add a `retry-after` trailing
metadata entry in seconds. Metadata read: `authorization`, `x-bertgw-allowed-regions`
and `x-bertgw-timeout-ms` (Serve's proxy does not pass the client's own deadline to
the deployment; a client deadline still ends the call on the client's side).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import grpc

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.http_api import EXTENSIONS, SERVER_NAME, SERVER_VERSION, model_metadata_doc
from gateway.ingress import REGIONS_HEADER, TIMEOUT_HEADER
from gateway.protocol import check_version, encode_grpc_infer, parse_grpc_infer
from protos import inference_pb2 as pb

if TYPE_CHECKING:
    from ray.serve.grpc_util import RayServegRPCContext

    from gateway.ingress import IngressCore

logger = logging.getLogger(__name__)


def _metadata(context: RayServegRPCContext | None) -> dict[str, str]:
    if context is None:
        return {}
    return {
        k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)
    }


def _fail(context: RayServegRPCContext | None, exc: GatewayError) -> None:
    if context is None:
        return
    context.set_code(grpc.StatusCode[exc.grpc_code])
    context.set_details(exc.message)
    if exc.retry_after_s is not None:
        seconds = str(max(1, math.ceil(exc.retry_after_s)))
        context.set_trailing_metadata([("retry-after", seconds)])


def _internal(context: RayServegRPCContext | None) -> None:
    if context is not None:
        context.set_code(grpc.StatusCode.INTERNAL)
        context.set_details("internal error")


class GrpcMethods:
    """RPC methods of the ingress deployment; `self.core` is its IngressCore."""

    core: IngressCore

    def _authorize(self, meta: dict[str, str]) -> None:
        self.core.auth.check(meta.get("authorization"))

    async def ModelInfer(  # noqa: N802 - the RPC's name
        self, request: pb.ModelInferRequest, grpc_context: RayServegRPCContext = None
    ) -> pb.ModelInferResponse:
        core = self.core
        start_s = core.clock()
        core.start_background()
        meta = _metadata(grpc_context)
        model = request.model_name
        cloud = None
        num_texts = 0
        status = 500
        try:
            self._authorize(meta)
            size = request.ByteSize()
            limit = core.config.grpc.max_message_bytes
            if size > limit:
                raise PayloadTooLarge(f"request of {size} bytes; the limit is {limit}")
            limits = core.dispatcher.limits(model)
            check_version(model, request.model_version)
            infer = parse_grpc_infer(request, limits)
            num_texts = len(infer.texts)
            ctx = core.call_context(
                "grpc",
                timeout_ms=meta.get(TIMEOUT_HEADER),
                allowed_regions=meta.get(REGIONS_HEADER),
            )
            result = await core.dispatcher.infer(infer, ctx)
            cloud = result.cloud
            status = 200
            return encode_grpc_infer(result)
        except GatewayError as exc:
            status = exc.http_status
            _fail(grpc_context, exc)
            return pb.ModelInferResponse()
        except Exception:  # noqa: BLE001 - request boundary: a status, never a trace
            logger.exception("event=grpc_request_failed model=%s", model)
            _internal(grpc_context)
            return pb.ModelInferResponse()
        finally:
            core.metrics.observe_request(
                model=model,
                cloud=cloud,
                protocol="grpc",
                http_status=status,
                duration_s=core.clock() - start_s,
                num_texts=num_texts,
            )

    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, grpc_context: RayServegRPCContext = None
    ) -> pb.ServerLiveResponse:
        self.core.start_background()
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, grpc_context: RayServegRPCContext = None
    ) -> pb.ServerReadyResponse:
        self.core.start_background()
        return pb.ServerReadyResponse(ready=self.core.ready)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, grpc_context: RayServegRPCContext = None
    ) -> pb.ModelReadyResponse:
        self.core.start_background()
        try:
            ready = self.core.model_ready(request.name)
            check_version(request.name, request.version)
            return pb.ModelReadyResponse(ready=ready)
        except GatewayError as exc:
            _fail(grpc_context, exc)
            return pb.ModelReadyResponse()

    async def ServerMetadata(  # noqa: N802
        self,
        request: pb.ServerMetadataRequest,
        grpc_context: RayServegRPCContext = None,
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME,
            version=SERVER_VERSION,
            extensions=EXTENSIONS,
        )

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, grpc_context: RayServegRPCContext = None
    ) -> pb.ModelMetadataResponse:
        try:
            self._authorize(_metadata(grpc_context))
            doc: dict[str, Any] = model_metadata_doc(self.core, request.name)
            check_version(request.name, request.version)
        except GatewayError as exc:
            _fail(grpc_context, exc)
            return pb.ModelMetadataResponse()
        response = pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"]
        )
        for key, tensors in (
            ("inputs", response.inputs),
            ("outputs", response.outputs),
        ):
            for t in doc[key]:
                tensors.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return response
