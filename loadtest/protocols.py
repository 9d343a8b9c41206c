"""Clients the generator drives: OIP v2 over HTTP and gRPC, the plain route, a template.

Each sender turns a list of texts into one request and the answer into an `Outcome`:
"ok", "http_<status>", "grpc_<CODE>", "timeout" (the client gave up) or
"connection" (no connection, or it broke). Request bodies and answers are built and
read by small pure functions so they can be tested without a network.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

PROTOCOLS = ("http-oip", "http-classify", "http-template", "grpc")
CLOUD_HEADER = "x-bertgw-cloud"
TIMEOUT_HEADER = "x-bertgw-timeout-ms"
DEFAULT_HTTP_CONNECTIONS = 512
DEFAULT_GRPC_CHANNELS = 2
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# gRPC folds "could not connect" into UNAVAILABLE; these details tell it apart from a
# server that answered UNAVAILABLE on purpose (overload, no cloud).
_GRPC_CONNECTION_DETAILS = (
    "failed to connect",
    "connection refused",
    "socket closed",
    "connection reset",
    "broken pipe",
)


@dataclass(frozen=True)
class Outcome:
    """What became of one request; `status` is the HTTP status or gRPC code name."""

    kind: str
    status: str | None = None
    cloud: str | None = None


@dataclass(frozen=True)
class TargetConfig:
    """Where and how to send; plain values so it crosses process boundaries.

    Args:
        url: HTTP base URL (http-* protocols) or gRPC `host:port` (grpc).
        headers: sent on every request (HTTP headers or gRPC metadata).
        send_deadline: tell the server the client's timeout (HTTP header; gRPC
            always carries its deadline).
        connections: HTTP keep-alive pool size (when all are busy a request waits
            for one, and the wait counts in its latency) or the number of gRPC
            channels the calls rotate over; None takes the protocol's default.
    """

    protocol: str
    url: str
    model: str
    timeout_s: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    return_probabilities: bool = False
    input_name: str = "text"
    template: str | None = None
    template_path: str = "/"
    grpc_raw: bool = False
    send_deadline: bool = False
    connections: int | None = None


class Sender(Protocol):
    async def open(self) -> None: ...

    async def send(self, texts: list[str]) -> Outcome: ...

    async def close(self) -> None: ...


def target_host(config: TargetConfig) -> str:
    """The host a config points at (for the loopback guard)."""
    if config.protocol == "grpc":
        host, _, _ = config.url.rpartition(":")
        return host
    return urlsplit(config.url).hostname or ""


def is_loopback(config: TargetConfig) -> bool:
    return target_host(config) in LOOPBACK_HOSTS


# --- request bodies and answers (pure) ------------------------------------------


def oip_body(texts: list[str], input_name: str, return_probabilities: bool) -> bytes:
    """An OIP v2 infer request: one BYTES input of shape [N]."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": input_name,
                "datatype": "BYTES",
                "shape": [len(texts)],
                "data": texts,
            }
        ]
    }
    if return_probabilities:
        body["parameters"] = {"return_probabilities": True}
    return json.dumps(body).encode()


def classify_body(model: str, texts: list[str], return_probabilities: bool) -> bytes:
    return json.dumps(
        {"model": model, "texts": texts, "return_probabilities": return_probabilities}
    ).encode()


def template_body(template: str, model: str, texts: list[str]) -> bytes:
    """Fills `{{texts}}` (a JSON list) and `{{model}}` (a JSON string) in a template."""
    filled = template.replace("{{texts}}", json.dumps(texts))
    return filled.replace("{{model}}", json.dumps(model)).encode()


def cloud_from_json(payload: bytes) -> str | None:
    """The serving cloud in an OIP (`parameters.cloud`) or /v1/classify answer."""
    try:
        answer = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    parameters = answer.get("parameters")
    if isinstance(parameters, dict) and isinstance(parameters.get("cloud"), str):
        return parameters["cloud"]
    cloud = answer.get("cloud")
    return cloud if isinstance(cloud, str) else None


def encode_raw_bytes(texts: list[str]) -> bytes:
    """BYTES elements for `raw_input_contents`: 4-byte little-endian length + data."""
    parts = []
    for text in texts:
        data = text.encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def grpc_request(
    model: str,
    texts: list[str],
    input_name: str = "text",
    return_probabilities: bool = False,
    raw: bool = False,
) -> Any:
    """A ModelInferRequest with one BYTES input of shape [N]."""
    from protos import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=input_name, datatype="BYTES", shape=[len(texts)])
    if raw:
        request.raw_input_contents.append(encode_raw_bytes(texts))
    else:
        tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    if return_probabilities:
        request.parameters["return_probabilities"].bool_param = True
    return request


def grpc_outcome(
    code_name: str, details: str, elapsed_s: float, timeout_s: float
) -> Outcome:
    """Classifies a failed RPC into timeout, connection or grpc_<CODE>."""
    if code_name == "DEADLINE_EXCEEDED" and elapsed_s >= timeout_s * 0.999:
        return Outcome("timeout", code_name)
    lowered = (details or "").lower()
    if code_name == "UNAVAILABLE" and any(
        s in lowered for s in _GRPC_CONNECTION_DETAILS
    ):
        return Outcome("connection", code_name)
    return Outcome(f"grpc_{code_name}", code_name)


# --- senders ----------------------------------------------------------------------


class HttpSender:
    """POSTs JSON bodies with one shared aiohttp session (keep-alive pool)."""

    def __init__(self, config: TargetConfig) -> None:
        self._config = config
        base = config.url.rstrip("/")
        if config.protocol == "http-oip":
            self._url = f"{base}/v2/models/{config.model}/infer"
        elif config.protocol == "http-classify":
            self._url = f"{base}/v1/classify"
        elif config.protocol == "http-template":
            if config.template is None:
                raise ValueError("protocol http-template needs a template")
            self._url = base + config.template_path
        else:
            raise ValueError(f"HttpSender cannot speak {config.protocol!r}")
        headers = {"content-type": "application/json", **dict(config.headers)}
        if config.send_deadline:
            headers[TIMEOUT_HEADER] = str(int(config.timeout_s * 1000))
        self._headers = headers
        self._session: Any = None

    def body(self, texts: list[str]) -> bytes:
        c = self._config
        if c.protocol == "http-oip":
            return oip_body(texts, c.input_name, c.return_probabilities)
        if c.protocol == "http-classify":
            return classify_body(c.model, texts, c.return_probabilities)
        assert c.template is not None
        return template_body(c.template, c.model, texts)

    async def open(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self._config.connections or DEFAULT_HTTP_CONNECTIONS
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_s),
        )

    async def send(self, texts: list[str]) -> Outcome:
        import aiohttp

        try:
            async with self._session.post(
                self._url, data=self.body(texts), headers=self._headers
            ) as response:
                payload = await response.read()
                status = response.status
                cloud = response.headers.get(CLOUD_HEADER)
        except TimeoutError:
            return Outcome("timeout")
        except aiohttp.ClientConnectionError:
            return Outcome("connection")
        except aiohttp.ClientError as error:
            return Outcome("error", type(error).__name__)
        if 200 <= status < 300:
            if cloud is None:
                cloud = cloud_from_json(payload)
            return Outcome("ok", str(status), cloud)
        return Outcome(f"http_{status}", str(status), cloud)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class GrpcSender:
    """Calls ModelInfer through the generated stub over one or more aio channels."""

    def __init__(self, config: TargetConfig) -> None:
        self._config = config
        self._metadata = tuple(config.headers)
        self._stubs: list[Any] = []
        self._channels: list[Any] = []
        self._next = 0

    async def open(self) -> None:
        import grpc

        from protos import inference_pb2_grpc

        # A local subchannel pool gives every channel its own TCP connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(self._config.connections or DEFAULT_GRPC_CHANNELS):
            channel = grpc.aio.insecure_channel(self._config.url, options=options)
            self._channels.append(channel)
            self._stubs.append(inference_pb2_grpc.GRPCInferenceServiceStub(channel))

    async def send(self, texts: list[str]) -> Outcome:
        import grpc

        c = self._config
        request = grpc_request(
            c.model, texts, c.input_name, c.return_probabilities, c.grpc_raw
        )
        stub = self._stubs[self._next]
        self._next = (self._next + 1) % len(self._stubs)
        started_s = time.monotonic()
        try:
            response = await stub.ModelInfer(
                request, timeout=c.timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            return grpc_outcome(
                error.code().name,
                error.details() or "",
                time.monotonic() - started_s,
                c.timeout_s,
            )
        except TimeoutError:
            return Outcome("timeout")
        cloud = (
            response.parameters["cloud"].string_param
            if "cloud" in response.parameters
            else None
        )
        return Outcome("ok", "OK", cloud)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def make_sender(config: TargetConfig) -> Sender:
    if config.protocol == "grpc":
        return GrpcSender(config)
    if config.protocol in PROTOCOLS:
        return HttpSender(config)
    raise ValueError(
        f"unknown protocol {config.protocol!r}; expected one of {PROTOCOLS}"
    )
