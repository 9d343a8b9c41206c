"""Request bodies and answer classification, without a network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from loadtest.cli import DEFAULT_SLO_MS, configure, redacted_command, slo_ms
from loadtest.noop_server import count_json_texts, count_raw_texts
from loadtest.protocols import (
    HttpSender,
    TargetConfig,
    classify_body,
    cloud_from_json,
    encode_raw_bytes,
    grpc_outcome,
    grpc_request,
    is_loopback,
    oip_body,
    template_body,
)


def test_oip_body_is_one_bytes_input_of_shape_n() -> None:
    body = json.loads(oip_body(["a", "b"], "text", return_probabilities=False))
    assert body == {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
        ]
    }
    with_probs = json.loads(oip_body(["a"], "text", return_probabilities=True))
    assert with_probs["parameters"] == {"return_probabilities": True}
    assert count_json_texts(body) == 2


def test_classify_and_template_bodies() -> None:
    assert json.loads(classify_body("m", ["x"], False)) == {
        "model": "m",
        "texts": ["x"],
        "return_probabilities": False,
    }
    filled = template_body('{"m": {{model}}, "q": {{texts}}}', "demo", ['say "hi"'])
    assert json.loads(filled) == {"m": "demo", "q": ['say "hi"']}


def test_http_sender_targets_the_route_of_its_protocol() -> None:
    oip = HttpSender(
        TargetConfig(protocol="http-oip", url="http://127.0.0.1:8000/", model="m")
    )
    assert oip._url == "http://127.0.0.1:8000/v2/models/m/infer"
    plain = TargetConfig(
        protocol="http-classify",
        url="http://127.0.0.1:8000",
        model="m",
        send_deadline=True,
        timeout_s=2.5,
    )
    sender = HttpSender(plain)
    assert sender._url == "http://127.0.0.1:8000/v1/classify"
    assert sender._headers["x-bertgw-timeout-ms"] == "2500"
    with pytest.raises(ValueError, match="needs a template"):
        HttpSender(
            TargetConfig(protocol="http-template", url="http://127.0.0.1:1", model="m")
        )


@pytest.mark.parametrize(
    ("payload", "cloud"),
    [
        (b'{"parameters": {"cloud": "aws"}, "outputs": []}', "aws"),
        (b'{"model": "m", "cloud": "gcp", "results": []}', "gcp"),
        (b'{"outputs": []}', None),
        (b"not json", None),
        (b"[1, 2]", None),
    ],
)
def test_cloud_is_read_from_either_answer_shape(
    payload: bytes, cloud: str | None
) -> None:
    assert cloud_from_json(payload) == cloud


def test_raw_bytes_are_length_prefixed_little_endian() -> None:
    raw = encode_raw_bytes(["hi", "", "é"])
    # 2 bytes "hi", 0 bytes, 2 bytes for é in UTF-8.
    assert (
        raw == b"\x02\x00\x00\x00hi" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
    )
    assert count_raw_texts(raw) == 3


def test_grpc_request_carries_texts_in_either_encoding() -> None:
    plain = grpc_request("demo", ["a", "bb"], return_probabilities=True)
    assert plain.model_name == "demo"
    assert list(plain.inputs[0].shape) == [2]
    assert list(plain.inputs[0].contents.bytes_contents) == [b"a", b"bb"]
    assert plain.parameters["return_probabilities"].bool_param is True
    raw = grpc_request("demo", ["a", "bb"], raw=True)
    assert not raw.inputs[0].contents.bytes_contents
    assert count_raw_texts(raw.raw_input_contents[0]) == 2


@pytest.mark.parametrize(
    ("code", "details", "elapsed_s", "kind"),
    [
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", 1.0, "timeout"),
        ("DEADLINE_EXCEEDED", "gateway deadline", 0.2, "grpc_DEADLINE_EXCEEDED"),
        ("UNAVAILABLE", "failed to connect to all addresses", 0.01, "connection"),
        ("UNAVAILABLE", "no cloud available for regions eu", 0.01, "grpc_UNAVAILABLE"),
        ("RESOURCE_EXHAUSTED", "rate limited", 0.01, "grpc_RESOURCE_EXHAUSTED"),
    ],
)
def test_grpc_failures_are_classified(
    code: str, details: str, elapsed_s: float, kind: str
) -> None:
    assert grpc_outcome(code, details, elapsed_s, timeout_s=1.0).kind == kind


def test_only_loopback_targets_count_as_local() -> None:
    assert is_loopback(TargetConfig(protocol="grpc", url="127.0.0.1:9000", model="m"))
    assert is_loopback(
        TargetConfig(protocol="http-oip", url="http://localhost:8000", model="m")
    )
    assert not is_loopback(
        TargetConfig(protocol="grpc", url="10.0.0.5:9000", model="m")
    )
    assert not is_loopback(
        TargetConfig(protocol="http-oip", url="http://example.com:8000", model="m")
    )


def test_command_line_in_the_summary_hides_the_token() -> None:
    shown = redacted_command(
        ["loadtest", "--token", "s3cret", "--token=abc", "--seed", "1"]
    )
    assert "s3cret" not in shown and "abc" not in shown
    assert shown == "bertgw loadtest --token REDACTED --token=REDACTED --seed 1"


def test_the_slo_comes_from_the_flag_else_the_gateway_config(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    local = str(Path(__file__).resolve().parents[2] / "configs" / "local.yaml")
    assert slo_ms(parser.parse_args([])) == DEFAULT_SLO_MS
    assert slo_ms(parser.parse_args(["--config", local])) == 150.0
    assert slo_ms(parser.parse_args(["--config", local, "--slo-ms", "80"])) == 80.0
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        Path(local).read_text().replace("latency_ms: 150", "latency_ms: -1")
    )
    with pytest.raises(ValueError, match="latency_ms"):
        slo_ms(parser.parse_args(["--config", str(broken)]))
