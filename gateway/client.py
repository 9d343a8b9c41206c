"""`bertgw classify`: send texts to a running gateway over HTTP or gRPC, print labels.

Speaks Open Inference Protocol v2 with httpx (HTTP) or the generated gRPC stubs, so
it needs neither tritonclient nor torch. Texts come from the arguments, or one per
line from stdin when none are given.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass

from gateway.protocol import decode_bytes_tensor, encode_bytes_tensor


@dataclass(frozen=True)
class Labelled:
    label: str
    score: float
    truncated: bool


@dataclass(frozen=True)
class ClientReply:
    cloud: str
    results: list[Labelled]


class ClientError(Exception):
    """The gateway answered with an error, or not at all (UNAVAILABLE): its HTTP
    status or gRPC code, and the message.

    Client-side only; the gateway's own errors are in gateway/errors.py.
    """

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _headers(token: str | None, timeout_ms: float | None, regions: str | None) -> dict:
    headers: dict[str, str] = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if timeout_ms is not None:
        headers["x-bertgw-timeout-ms"] = f"{timeout_ms:g}"
    if regions:
        headers["x-bertgw-allowed-regions"] = regions
    return headers


def classify_http(
    url: str,
    model: str,
    texts: list[str],
    *,
    token: str | None = None,
    timeout_ms: float | None = None,
    regions: str | None = None,
) -> ClientReply:
    import httpx

    doc = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
        ]
    }
    timeout_s = (timeout_ms or 30_000) / 1000.0 + 5.0
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v2/models/{model}/infer",
            json=doc,
            headers=_headers(token, timeout_ms, regions),
            timeout=timeout_s,
        )
    except httpx.TransportError as exc:
        # No answer at all (refused, reset, timed out): one line, like gRPC's.
        raise ClientError(
            f"{url}: {str(exc) or type(exc).__name__}", "UNAVAILABLE"
        ) from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise ClientError(message, str(response.status_code))
    body = response.json()
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    results = [
        Labelled(label, float(score), bool(cut))
        for label, score, cut in zip(
            outputs["label"], outputs["score"], outputs["truncated"], strict=True
        )
    ]
    return ClientReply(body.get("parameters", {}).get("cloud", ""), results)


def classify_grpc(
    target: str,
    model: str,
    texts: list[str],
    *,
    token: str | None = None,
    timeout_ms: float | None = None,
    regions: str | None = None,
) -> ClientReply:
    import grpc

    from protos import inference_pb2 as pb
    from protos import inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(encode_bytes_tensor(t.encode() for t in texts))
    metadata = list(_headers(token, timeout_ms, regions).items())
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            response = stub.ModelInfer(
                request,
                metadata=metadata,
                timeout=(timeout_ms or 30_000) / 1000.0 + 5.0,
            )
        except grpc.RpcError as err:
            raise ClientError(err.details() or "", err.code().name) from None
    raw = {
        o.name: content
        for o, content in zip(
            response.outputs, response.raw_output_contents, strict=True
        )
    }
    labels = [b.decode() for b in decode_bytes_tensor(raw["label"])]
    scores = struct.unpack(f"<{len(labels)}f", raw["score"])
    cut = [bool(b) for b in raw["truncated"]]
    results = [Labelled(*row) for row in zip(labels, scores, cut, strict=True)]
    return ClientReply(response.parameters["cloud"].string_param, results)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts (default: lines of stdin)")
    parser.add_argument("--model", default="demo-intents")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8000", help="HTTP base URL")
    where.add_argument("--grpc", default=None, help="gRPC target, e.g. 127.0.0.1:9000")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument("--timeout-ms", type=float, default=None)
    parser.add_argument(
        "--regions", default=None, help="allowed regions, comma-separated"
    )


def run(args: argparse.Namespace) -> int:
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("bertgw classify: no texts given", file=sys.stderr)
        return 2
    options = {
        "token": args.token,
        "timeout_ms": args.timeout_ms,
        "regions": args.regions,
    }
    try:
        if args.grpc:
            reply = classify_grpc(args.grpc, args.model, texts, **options)
        else:
            reply = classify_http(args.url, args.model, texts, **options)
    except ClientError as err:
        print(f"bertgw classify: {err.status}: {err.message}", file=sys.stderr)
        return 1
    for text, result in zip(texts, reply.results, strict=True):
        mark = " (truncated)" if result.truncated else ""
        print(f"{result.label}\t{result.score:.3f}\t{text}{mark}")
    print(f"# served by {reply.cloud}", file=sys.stderr)
    return 0
