"""OIP v2 parsing and encoding: every accepted input form, refusal and output."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.errors import InvalidInput, PayloadTooLarge, VersionNotFound
from gateway.protocol import (
    InferResult,
    TextLimits,
    TextResult,
    check_version,
    decode_bytes_tensor,
    encode_bytes_tensor,
    encode_classify,
    encode_grpc_infer,
    encode_json_infer,
    parse_classify,
    parse_grpc_infer,
    parse_json_infer,
)
from protos import inference_pb2 as pb

LIMITS = TextLimits(max_texts_per_request=4, max_chars_per_text=20)


def body(
    data: object, shape: object, datatype: str = "BYTES", **extra: object
) -> bytes:
    doc = {
        "inputs": [{"name": "text", "datatype": datatype, "shape": shape, "data": data}]
    }
    doc.update(extra)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        (["a b", "c d"], [2]),
        ([["a b"], ["c d"]], [2, 1]),
        ([["a b", "c d"]], [1, 2]),
        (["a b", "c d"], [1, 2]),
    ],
)
def test_json_accepts_flat_and_nested_data_in_every_shape(
    data: object, shape: list[int]
) -> None:
    request = parse_json_infer("m", body(data, shape), LIMITS)

    assert request.texts == ("a b", "c d")
    assert request.outputs == ("label", "score", "truncated")


def test_binary_tensor_extension_is_decoded() -> None:
    raw = encode_bytes_tensor([b"hello", "h\u00e9".encode()])
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    head = json.dumps(header).encode()

    request = parse_json_infer("m", head + raw, LIMITS, header_length=len(head))

    assert request.texts == ("hello", "h\u00e9")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "must be a JSON object"),
        (json.dumps({"inputs": []}).encode(), "exactly one input tensor, got 0"),
        (body(["a"], [1], datatype="FP32"), "datatype must be BYTES, got 'FP32'"),
        (body(["a", "b"], [3]), "holds 3 elements but the data has 2"),
        (body(["a", "b", "c"], [1, 2]), "holds 2 elements but the data has 3"),
        (body([["a", "b"], ["c", "d"]], [2, 2]), "must be [N], [N, 1] or [1, N]"),
        (body([], [0]), "holds no texts"),
        (body(["ok", "  "], [2]), "text 1 is empty"),
        (body([1], [1]), "text 0 must be a string, got int"),
        (body(["a"], "1"), "shape must be a list of integers"),
        (
            body(["a"], [1], outputs=[{"name": "logits"}]),
            "unknown output 'logits'",
        ),
        (
            body(["a"], [1], parameters={"return_probabilities": "yes"}),
            "return_probabilities must be a boolean",
        ),
    ],
)
def test_malformed_json_requests_are_invalid_input_naming_the_problem(
    payload: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_json_infer("m", payload, LIMITS)

    assert message in info.value.message
    assert info.value.http_status == 400


def test_non_utf8_bytes_are_invalid_input() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"\xff\xfe")

    with pytest.raises(InvalidInput, match="text 0 is not valid UTF-8"):
        parse_grpc_infer(request, LIMITS)


def test_torn_binary_tensor_is_invalid_input() -> None:
    # A length prefix of 10 followed by only 3 bytes.
    with pytest.raises(InvalidInput, match="runs past the end"):
        decode_bytes_tensor(struct.pack("<I", 10) + b"abc")


def test_too_many_texts_is_payload_too_large() -> None:
    # LIMITS allow 4 texts; 5 are sent.
    with pytest.raises(PayloadTooLarge, match="5 texts in one request; the limit is 4"):
        parse_json_infer("m", body(["x"] * 5, [5]), LIMITS)


def test_over_long_text_is_clipped_and_flagged_not_refused() -> None:
    # max_chars_per_text is 20: a 25-character text keeps its first 20.
    request = parse_json_infer("m", body(["y" * 25, "short"], [2]), LIMITS)

    assert request.texts == ("y" * 20, "short")
    assert request.clipped == (True, False)


def test_probabilities_are_added_by_parameter_or_requested_output() -> None:
    by_param = parse_json_infer(
        "m", body(["a"], [1], parameters={"return_probabilities": True}), LIMITS
    )
    by_output = parse_json_infer(
        "m", body(["a"], [1], outputs=[{"name": "probabilities"}]), LIMITS
    )

    assert by_param.outputs == ("label", "score", "truncated", "probabilities")
    assert by_output.outputs == ("probabilities",)


def test_grpc_raw_input_contents_and_bytes_contents_agree() -> None:
    raw_request = pb.ModelInferRequest(model_name="m")
    raw_request.inputs.add(name="text", datatype="BYTES", shape=[1, 2])
    raw_request.raw_input_contents.append(encode_bytes_tensor([b"one", b"two"]))
    contents_request = pb.ModelInferRequest(model_name="m")
    tensor = contents_request.inputs.add(name="any", datatype="BYTES", shape=[2, 1])
    tensor.contents.bytes_contents.extend([b"one", b"two"])
    contents_request.parameters["return_probabilities"].bool_param = True

    raw = parse_grpc_infer(raw_request, LIMITS)
    contents = parse_grpc_infer(contents_request, LIMITS)

    assert raw.texts == contents.texts == ("one", "two")
    assert contents.return_probabilities and not raw.return_probabilities


def test_grpc_input_with_both_contents_and_raw_contents_is_refused() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"one")
    request.raw_input_contents.append(encode_bytes_tensor([b"two"]))

    with pytest.raises(InvalidInput, match="both contents and raw_input_contents"):
        parse_grpc_infer(request, LIMITS)


RESULT = InferResult(
    model="m",
    cloud="aws-us-east-1",
    results=(
        TextResult("greet", 0.75, False, 5, (0.75, 0.25)),
        TextResult("bye", 0.5, True, 512, (0.5, 0.5)),
    ),
    labels=("greet", "bye"),
    outputs=("label", "score", "truncated", "probabilities"),
    request_id="r1",
)


def test_json_response_has_every_output_and_the_cloud() -> None:
    doc = encode_json_infer(RESULT)

    outputs = {o["name"]: o for o in doc["outputs"]}
    assert doc["parameters"] == {"cloud": "aws-us-east-1"}
    assert doc["id"] == "r1"
    assert outputs["label"]["data"] == ["greet", "bye"]
    assert outputs["truncated"] == {
        "name": "truncated",
        "datatype": "BOOL",
        "shape": [2],
        "data": [False, True],
    }
    # Two texts times two labels, row-major.
    assert outputs["probabilities"]["shape"] == [2, 2]
    assert outputs["probabilities"]["data"] == [0.75, 0.25, 0.5, 0.5]


def test_grpc_response_carries_every_output_as_raw_contents() -> None:
    response = encode_grpc_infer(RESULT)

    names = [o.name for o in response.outputs]
    raw = dict(zip(names, response.raw_output_contents, strict=True))
    assert response.parameters["cloud"].string_param == "aws-us-east-1"
    assert decode_bytes_tensor(raw["label"]) == [b"greet", b"bye"]
    assert struct.unpack("<2f", raw["score"]) == (0.75, 0.5)
    assert raw["truncated"] == b"\x00\x01"
    assert struct.unpack("<4f", raw["probabilities"]) == (0.75, 0.25, 0.5, 0.5)


def test_classify_route_round_trip() -> None:
    request = parse_classify(
        json.dumps(
            {"model": "m", "texts": ["hi"], "return_probabilities": True}
        ).encode(),
        lambda model: LIMITS,
    )
    doc = encode_classify(RESULT)

    assert request.texts == ("hi",) and request.return_probabilities
    assert doc["cloud"] == "aws-us-east-1"
    assert doc["results"][0] == {
        "label": "greet",
        "score": 0.75,
        "truncated": False,
        "probabilities": {"greet": 0.75, "bye": 0.25},
    }


def test_classify_route_rejects_a_missing_model() -> None:
    with pytest.raises(InvalidInput, match="field model must be a non-empty string"):
        parse_classify(b'{"texts": ["a"]}', lambda model: LIMITS)


def test_only_the_served_version_or_none_is_accepted() -> None:
    check_version("demo", "")
    check_version("demo", "1")
    with pytest.raises(VersionNotFound, match="model 'demo' has no version '2'"):
        check_version("demo", "2")
