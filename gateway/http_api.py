"""HTTP adapter: Open Inference Protocol v2 routes, `/v1/classify`, metrics and admin.

Routes (all on the HTTP port; `*` needs a bearer token when auth is on):
    GET  /v2/health/live, /v2/health/ready, /v2        server state
    GET  /v2/models/{model}*, /v2/models/{model}/ready model metadata and state
    POST /v2/models/{model}/infer*                     classify (OIP v2 JSON or the
                                                       binary-tensor extension)
    POST /v1/classify*                                 the plain route
    GET  /metrics                                      Prometheus text
    GET  /admin/emulation*, POST /admin/emulation/{cloud}*   emulated faults

Errors are `{"error": "..."}` with the status from gateway.errors; 503 and 429
carry `Retry-After`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.errors import GatewayError, InvalidInput, PayloadTooLarge
from gateway.ingress import CLOUD_HEADER, REGIONS_HEADER, TIMEOUT_HEADER
from gateway.metrics import CONTENT_TYPE
from gateway.protocol import (
    MODEL_VERSION,
    InferRequest,
    InferResult,
    check_version,
    encode_classify,
    encode_json_infer,
    parse_classify,
    parse_json_infer,
)

if TYPE_CHECKING:
    from gateway.ingress import IngressCore

logger = logging.getLogger(__name__)

SERVER_NAME = "bert-gateway"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification"]
_JSON = "application/json"


def _json(
    doc: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def error_response(exc: GatewayError) -> Response:
    return _json({"error": exc.message}, exc.http_status, exc.http_headers() or None)


def _internal_error() -> Response:
    return _json({"error": "internal error"}, 500)


async def _read_body(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes; the limit is {limit_bytes}"
        )
    body = await request.body()
    if len(body) > limit_bytes:
        raise PayloadTooLarge(
            f"request body of {len(body)} bytes; the limit is {limit_bytes}"
        )
    return body


def build_http_app(core: IngressCore) -> FastAPI:
    """The FastAPI app of one ingress replica, its routes closed over `core`."""
    app = FastAPI(title="bert-gateway", docs_url=None, redoc_url=None, openapi_url=None)

    def authorize(request: Request) -> None:
        core.auth.check(request.headers.get("authorization"))

    async def classify_with(
        request: Request,
        model: str,
        parse: Callable[[bytes], InferRequest],
        encode: Callable[[InferResult], Any],
    ) -> Response:
        """Shared by both infer routes: auth, parse, dispatch, encode, measure."""
        start_s = core.clock()
        core.start_background()
        cloud = None
        num_texts = 0
        status = 500
        try:
            authorize(request)
            body = await _read_body(request, core.config.http.max_body_bytes)
            infer = parse(body)
            model = infer.model
            num_texts = len(infer.texts)
            ctx = core.call_context(
                "http",
                timeout_ms=request.headers.get(TIMEOUT_HEADER),
                allowed_regions=request.headers.get(REGIONS_HEADER),
            )
            result = await core.dispatcher.infer(infer, ctx)
            cloud = result.cloud
            status = 200
            return _json(encode(result), headers={CLOUD_HEADER: cloud})
        except GatewayError as exc:
            status = exc.http_status
            return error_response(exc)
        except Exception:  # noqa: BLE001 - request boundary: answer 500, never a trace
            logger.exception("event=http_request_failed model=%s", model)
            return _internal_error()
        finally:
            core.metrics.observe_request(
                model=model,
                cloud=cloud,
                protocol="http",
                http_status=status,
                duration_s=core.clock() - start_s,
                num_texts=num_texts,
            )

    def guarded(request: Request, produce: Callable[[], Any]) -> Response:
        try:
            authorize(request)
            return _json(produce())
        except GatewayError as exc:
            return error_response(exc)

    @app.post("/v2/models/{model}/infer")
    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer(model: str, request: Request) -> Response:
        header = request.headers.get("inference-header-content-length")

        def parse(body: bytes) -> InferRequest:
            limits = core.dispatcher.limits(model)
            check_version(model, request.path_params.get("version"))
            length = None
            if header is not None:
                if not header.isdigit():
                    raise InvalidInput(
                        "Inference-Header-Content-Length must be an integer, got "
                        f"{header!r}"
                    )
                length = int(header)
            return parse_json_infer(model, body, limits, length)

        return await classify_with(request, model, parse, encode_json_infer)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        def parse(body: bytes) -> InferRequest:
            return parse_classify(body, core.dispatcher.limits)

        return await classify_with(request, "unknown", parse, encode_classify)

    @app.get("/v2/health/live")
    async def live() -> Response:
        core.start_background()
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        core.start_background()
        is_ready = core.ready
        return _json({"ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
        )

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, request: Request) -> Response:
        def produce() -> dict[str, Any]:
            doc = model_metadata_doc(core, model)
            check_version(model, request.path_params.get("version"))
            return doc

        return guarded(request, produce)

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, request: Request) -> Response:
        core.start_background()
        try:
            is_ready = core.model_ready(model)
            check_version(model, request.path_params.get("version"))
        except GatewayError as exc:
            return error_response(exc)
        return _json({"name": model, "ready": is_ready}, 200 if is_ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        core.start_background()
        return Response(core.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/admin/emulation")
    async def emulation_state(request: Request) -> Response:
        def state() -> dict[str, Any]:
            return {
                name: {
                    "outage": pool.faults.outage,
                    "extra_latency_ms": pool.faults.extra_latency_ms,
                }
                for name, pool in core.emulated.items()
            }

        return guarded(request, state)

    @app.post("/admin/emulation/{cloud}")
    async def set_emulation(cloud: str, request: Request) -> Response:
        body = await request.body()

        def apply() -> dict[str, Any]:
            doc = _parse_faults(body)
            faults = core.set_faults(
                cloud,
                outage=doc.get("outage"),
                extra_latency_ms=doc.get("extra_latency_ms"),
            )
            return {
                "cloud": cloud,
                "outage": faults.outage,
                "extra_latency_ms": faults.extra_latency_ms,
            }

        return guarded(request, apply)

    return app


def _parse_faults(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = sorted(set(doc) - {"outage", "extra_latency_ms"})
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; known: outage, extra_latency_ms"
        )
    outage = doc.get("outage")
    if outage is not None and not isinstance(outage, bool):
        raise InvalidInput(f"outage must be a boolean, got {outage!r}")
    extra = doc.get("extra_latency_ms")
    if extra is not None and (
        isinstance(extra, bool)
        or not isinstance(extra, int | float)
        or not 0 <= extra <= 60_000
    ):
        raise InvalidInput(f"extra_latency_ms must be in [0, 60000], got {extra!r}")
    return doc


def model_metadata_doc(core: IngressCore, model: str) -> dict[str, Any]:
    """OIP v2 model metadata; the label count is known once the model answered."""
    core.dispatcher.limits(model)
    labels = core.model_labels.get(model)
    num_labels = len(labels) if labels else -1
    return {
        "name": model,
        "versions": [MODEL_VERSION],
        "platform": "pytorch_bert_classifier",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, num_labels]},
        ],
        "parameters": {"labels": list(labels) if labels else []},
    }
