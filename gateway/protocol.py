"""Open Inference Protocol v2 for text classifiers, as pure data in and out.

Both transports parse into one `InferRequest` and encode one `InferResult`, so the
HTTP and gRPC adapters hold no protocol rules of their own. Inputs: exactly one BYTES
tensor of shape [N], [N, 1] or [1, N], as JSON `data` (flat or nested), as the HTTP
binary-tensor extension (`binary_data_size`), as gRPC `bytes_contents` or as gRPC
`raw_input_contents` (each element prefixed by its 4-byte little-endian length).
Outputs: `label` BYTES [N], `score` FP32 [N], `truncated` BOOL [N] and, on request,
`probabilities` FP32 [N, num_labels].
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidInput, PayloadTooLarge, VersionNotFound
from protos import inference_pb2 as pb

DEFAULT_OUTPUTS = ("label", "score", "truncated")
# Each model serves one version; a request may name it or leave it out.
MODEL_VERSION = "1"
KNOWN_OUTPUTS = frozenset((*DEFAULT_OUTPUTS, "probabilities"))
_LENGTH = struct.Struct("<I")


def check_version(model: str, version: str | None) -> None:
    """Raises VersionNotFound unless `version` is empty or the one served."""
    if version and version != MODEL_VERSION:
        raise VersionNotFound(model, version, [MODEL_VERSION])


@dataclass(frozen=True)
class TextLimits:
    max_texts_per_request: int
    max_chars_per_text: int


@dataclass(frozen=True)
class InferRequest:
    """One classification request, whichever transport it came by."""

    model: str
    texts: tuple[str, ...]
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    # Texts cut to `max_chars_per_text` before tokenizing; reported as truncated.
    clipped: tuple[bool, ...] = ()
    request_id: str | None = None

    @property
    def return_probabilities(self) -> bool:
        return "probabilities" in self.outputs


@dataclass(frozen=True)
class TextResult:
    label: str
    score: float
    truncated: bool
    num_tokens: int
    probabilities: tuple[float, ...] | None = None


@dataclass(frozen=True)
class InferResult:
    model: str
    cloud: str
    results: tuple[TextResult, ...]
    labels: tuple[str, ...]
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    request_id: str | None = None


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Splits length-prefixed elements; raises InvalidInput on a torn buffer."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("binary BYTES tensor: truncated length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"binary BYTES tensor: element of {length} bytes runs past the end"
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def encode_bytes_tensor(items: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def _check_shape(shape: Any, count: int) -> None:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidInput(f"input shape must be a list of integers, got {shape!r}")
    dims = list(shape)
    ok_rank = len(dims) == 1 or (len(dims) == 2 and 1 in dims)
    if not ok_rank:
        raise InvalidInput(f"input shape must be [N], [N, 1] or [1, N], got {dims}")
    if any(d < 0 for d in dims):
        raise InvalidInput(f"input shape {dims} has a negative dimension")
    expected = 1
    for d in dims:
        expected *= d
    if expected != count:
        raise InvalidInput(
            f"input shape {dims} holds {expected} elements but the data has {count}"
        )


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _decode_texts(items: Sequence[bytes | str]) -> list[str]:
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"text {i} is not valid UTF-8") from None
        if not isinstance(item, str):
            raise InvalidInput(
                f"text {i} must be a string, got {type(item).__name__}"
            ) from None
        texts.append(item)
    return texts


def finish_request(
    model: str,
    texts: Sequence[str],
    limits: TextLimits,
    outputs: tuple[str, ...],
    request_id: str | None = None,
) -> InferRequest:
    """Applies the rules both transports share: count, emptiness, length, outputs."""
    if not texts:
        raise InvalidInput("the request holds no texts")
    if len(texts) > limits.max_texts_per_request:
        raise PayloadTooLarge(
            f"{len(texts)} texts in one request; the limit is "
            f"{limits.max_texts_per_request}"
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"text {i} is empty")
    unknown = [o for o in outputs if o not in KNOWN_OUTPUTS]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; known: {', '.join(sorted(KNOWN_OUTPUTS))}"
        )
    cap = limits.max_chars_per_text
    clipped = tuple(len(t) > cap for t in texts)
    return InferRequest(
        model=model,
        texts=tuple(t[:cap] for t in texts),
        outputs=outputs,
        clipped=clipped,
        request_id=request_id,
    )


def _requested_outputs(names: Sequence[str], want_probabilities: bool) -> tuple:
    outputs = tuple(dict.fromkeys(names)) if names else DEFAULT_OUTPUTS
    if want_probabilities and "probabilities" not in outputs:
        outputs = (*outputs, "probabilities")
    return outputs


def _truthy_param(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInput(f"parameter {name} must be a boolean, got {value!r}")


def parse_json_infer(
    model: str,
    body: bytes,
    limits: TextLimits,
    header_length: int | None = None,
) -> InferRequest:
    """Parses an HTTP infer body, with or without the binary-tensor extension."""
    json_part = body if header_length is None else body[:header_length]
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} does not fit the "
            f"{len(body)}-byte body"
        )
    try:
        doc = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")

    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        count = len(inputs) if isinstance(inputs, list) else 0
        raise InvalidInput(f"expected exactly one input tensor, got {count}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InvalidInput("the input tensor must be a JSON object")
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        raise InvalidInput(f"input datatype must be BYTES, got {datatype!r}")
    params = tensor.get("parameters") or {}
    binary_size = params.get("binary_data_size") if isinstance(params, dict) else None

    items: list[Any]
    if binary_size is not None:
        if header_length is None:
            raise InvalidInput("binary_data_size given without binary data")
        raw = body[header_length:]
        if not isinstance(binary_size, int) or binary_size != len(raw):
            raise InvalidInput(
                f"binary_data_size {binary_size!r} does not match the "
                f"{len(raw)} binary bytes sent"
            )
        items = list(decode_bytes_tensor(raw))
    elif "data" in tensor:
        items = _flatten(tensor["data"])
    else:
        raise InvalidInput("the input tensor has no data")
    _check_shape(tensor.get("shape"), len(items))
    texts = _decode_texts(items)

    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be a JSON object")
    want_probs = _truthy_param(
        parameters.get("return_probabilities", False), "return_probabilities"
    )
    requested = doc.get("outputs") or []
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidInput("outputs must be a list of objects with a name")
    names = [o["name"] for o in requested]
    request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    return finish_request(
        model, texts, limits, _requested_outputs(names, want_probs), request_id
    )


def parse_grpc_infer(request: pb.ModelInferRequest, limits: TextLimits) -> InferRequest:
    """Parses a gRPC ModelInferRequest (contents or raw_input_contents)."""
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"expected exactly one input tensor, got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input datatype must be BYTES, got {tensor.datatype!r}")
    items: list[bytes]
    if request.raw_input_contents:
        if tensor.contents.bytes_contents:
            raise InvalidInput(
                "the input has both contents and raw_input_contents; send one"
            )
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"expected one raw_input_contents entry, got "
                f"{len(request.raw_input_contents)}"
            )
        items = decode_bytes_tensor(request.raw_input_contents[0])
    else:
        items = list(tensor.contents.bytes_contents)
    _check_shape(list(tensor.shape), len(items))
    texts = _decode_texts(items)

    want_probs = False
    if "return_probabilities" in request.parameters:
        param = request.parameters["return_probabilities"]
        if param.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidInput("parameter return_probabilities must be a bool_param")
        want_probs = param.bool_param
    names = [o.name for o in request.outputs]
    outputs = _requested_outputs(names, want_probs)
    return finish_request(
        request.model_name, texts, limits, outputs, request.id or None
    )


def _columns(result: InferResult) -> dict[str, tuple[str, list[int], list[Any]]]:
    """Each output's datatype, shape and flat row-major values."""
    n = len(result.results)
    cols: dict[str, tuple[str, list[int], list[Any]]] = {
        "label": ("BYTES", [n], [r.label for r in result.results]),
        "score": ("FP32", [n], [r.score for r in result.results]),
        "truncated": ("BOOL", [n], [r.truncated for r in result.results]),
    }
    if "probabilities" in result.outputs:
        flat = [p for r in result.results for p in (r.probabilities or ())]
        cols["probabilities"] = ("FP32", [n, len(result.labels)], flat)
    return cols


def encode_json_infer(result: InferResult) -> dict[str, Any]:
    cols = _columns(result)
    doc: dict[str, Any] = {
        "model_name": result.model,
        "model_version": MODEL_VERSION,
        "parameters": {"cloud": result.cloud},
        "outputs": [
            {
                "name": name,
                "datatype": cols[name][0],
                "shape": cols[name][1],
                "data": cols[name][2],
            }
            for name in result.outputs
        ],
    }
    if result.request_id is not None:
        doc["id"] = result.request_id
    return doc


def encode_grpc_infer(result: InferResult) -> pb.ModelInferResponse:
    """Every output travels in raw_output_contents, as Triton clients expect."""
    cols = _columns(result)
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=MODEL_VERSION, id=result.request_id or ""
    )
    response.parameters["cloud"].string_param = result.cloud
    for name in result.outputs:
        datatype, shape, values = cols[name]
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        if datatype == "BYTES":
            raw = encode_bytes_tensor(v.encode("utf-8") for v in values)
        elif datatype == "FP32":
            raw = struct.pack(f"<{len(values)}f", *values)
        else:
            raw = bytes(bool(v) for v in values)
        response.raw_output_contents.append(raw)
    return response


def encode_classify(result: InferResult) -> dict[str, Any]:
    """The plain `/v1/classify` answer: one object per text."""
    items = []
    for r in result.results:
        item: dict[str, Any] = {
            "label": r.label,
            "score": r.score,
            "truncated": r.truncated,
        }
        if "probabilities" in result.outputs and r.probabilities is not None:
            item["probabilities"] = dict(
                zip(result.labels, r.probabilities, strict=True)
            )
        items.append(item)
    return {"model": result.model, "cloud": result.cloud, "results": items}


def parse_classify(body: bytes, limits_for: Any) -> InferRequest:
    """Parses `POST /v1/classify`; `limits_for(model)` gives that model's limits."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("field model must be a non-empty string")
    texts = doc.get("texts")
    if not isinstance(texts, list):
        raise InvalidInput("field texts must be a list of strings")
    want_probs = _truthy_param(
        doc.get("return_probabilities", False), "return_probabilities"
    )
    outputs = _requested_outputs([], want_probs)
    return finish_request(model, _decode_texts(texts), limits_for(model), outputs)
