"""The gateway end to end on loopback: both protocols, errors, auth, load, stop.

One gateway serves the whole module (see conftest.py); tests that flip emulated
faults put them back. The last test stops the gateway with requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as thttp

from gateway.protocol import decode_bytes_tensor, encode_bytes_tensor
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import RATE_TOKEN, TOKEN, Gateway

pytestmark = pytest.mark.integration

MODEL = "demo-intents"
CLOUDS = ("azure-westus2", "gcp-us-central1", "aws-us-east-1")


@pytest.fixture
def faults(gateway: Gateway) -> Iterator[Any]:
    """Sets emulated faults through the admin route; clears them afterwards."""

    def set_faults(cloud: str, **values: Any) -> None:
        response = httpx.post(
            f"{gateway.http_url}/admin/emulation/{cloud}",
            json=values,
            headers=gateway.headers(),
        )
        assert response.status_code == 200, response.text

    yield set_faults
    try:
        for name in CLOUDS:
            set_faults(name, outage=False, extra_latency_ms=0)
    except httpx.TransportError:
        pass  # the graceful-stop test has stopped the gateway


@pytest.fixture(scope="module")
def reference(
    demo_model_dir: Any, demo_test_texts: list
) -> dict[str, tuple[str, float]]:
    """Each test text classified alone, in this process: the answer it must get."""
    from replicas.runtime import load_runtime

    runtime = load_runtime(demo_model_dir, num_threads=1)
    texts = sorted({t for t, _ in demo_test_texts})
    return {
        t: (p.label, p.score)
        for t, p in zip(texts, runtime.classify(texts), strict=True)
    }


def infer_doc(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
        ],
        **extra,
    }


# Serve's proxies, and the ingress replica's own ports (direct ingress).
ROUTES = ("proxy", "direct")


def post_infer(
    gw: Gateway, body: Any, model: str = MODEL, route: str = "proxy", **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{gw.url(route)}/v2/models/{model}/infer",
        content=content,
        headers=gw.headers(**headers),
        timeout=60.0,
    )


def test_readiness_turns_true_only_after_start_up(gateway: Gateway) -> None:
    statuses = [status for _, status in gateway.startup_readiness]

    # Not ready (no answer, no route yet, or 503) at first, then ready.
    assert statuses[0] != 200
    assert statuses[-1] == 200
    assert 200 not in statuses[:-1]
    assert httpx.get(f"{gateway.http_url}/v2/health/live").json() == {"live": True}


@pytest.mark.parametrize("route", ROUTES)
def test_http_infer_through_tritonclient(
    gateway: Gateway, reference: dict, route: str
) -> None:
    texts = list(reference)[:3]
    client = thttp.InferenceServerClient(gateway.url(route).removeprefix("http://"))
    tensor = thttp.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))

    result = client.infer(MODEL, [tensor], headers=gateway.headers())

    labels = [
        x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")
    ]
    assert labels == [reference[t][0] for t in texts]
    assert result.as_numpy("score").dtype == np.float32
    assert not result.as_numpy("truncated").any()
    assert result.get_response()["parameters"]["cloud"] in CLOUDS
    assert client.is_server_ready() and client.is_model_ready(MODEL)


# tritonclient.grpc registers Triton's own `inference.*` protobuf messages, which
# clash with this project's stubs of the same package in one process; so its calls
# run in a child process that imports tritonclient only.
TRITON_GRPC_SCRIPT = """
import json, sys
import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

target, token, model = sys.argv[1], sys.argv[2], sys.argv[3]
texts = json.loads(sys.stdin.read())
headers = {"authorization": "Bearer " + token}
client = tgrpc.InferenceServerClient(target)
tensor = tgrpc.InferInput("text", [1, len(texts)], "BYTES")
tensor.set_data_from_numpy(np.array([[t.encode() for t in texts]], dtype=object))
outputs = [tgrpc.InferRequestedOutput(n) for n in ("label", "probabilities")]
result = client.infer(model, [tensor], outputs=outputs, headers=headers)
metadata = client.get_model_metadata(model, headers=headers)
try:
    client.infer("no-such-model", [tensor], headers=headers)
    missing = None
except InferenceServerException as err:
    missing = err.status()
print(json.dumps({
    "labels": [x.decode() for x in result.as_numpy("label")],
    "probability_sums": result.as_numpy("probabilities").sum(axis=1).tolist(),
    "cloud": result.get_response().parameters["cloud"].string_param,
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "outputs": [o.name for o in metadata.outputs],
    "missing_model_status": missing,
}))
"""


@pytest.mark.parametrize("route", ROUTES)
def test_grpc_through_unmodified_tritonclient(
    gateway: Gateway, reference: dict, route: str
) -> None:
    texts = list(reference)[3:7]

    done = subprocess.run(
        [sys.executable, "-c", TRITON_GRPC_SCRIPT, gateway.target(route), TOKEN, MODEL],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(done.stdout)

    assert seen["labels"] == [reference[t][0] for t in texts]
    assert seen["probability_sums"] == pytest.approx([1.0] * len(texts), abs=1e-4)
    assert seen["cloud"] in CLOUDS
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["outputs"][:3] == ["label", "score", "truncated"]
    assert seen["missing_model_status"] == "StatusCode.NOT_FOUND"


def test_plain_classify_route_returns_probabilities_by_label(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.http_url}/v1/classify",
        json={
            "model": MODEL,
            "texts": ["my parcel never arrived"],
            "return_probabilities": True,
        },
        headers=gateway.headers(),
    )

    body = response.json()
    assert response.status_code == 200
    assert response.headers["x-bertgw-cloud"] == body["cloud"]
    (result,) = body["results"]
    assert result["label"] in result["probabilities"]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("body", "model", "status", "message"),
    [
        (infer_doc(["hello"]), "no-such-model", 404, "unknown model 'no-such-model'"),
        (b'{"inputs": [', MODEL, 400, "malformed JSON"),
        (
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]},
            MODEL,
            400,
            "datatype must be BYTES",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "BYTES", "shape": [3], "data": ["a"]}
                ]
            },
            MODEL,
            400,
            "holds 3 elements but the data has 1",
        ),
        (infer_doc([]), MODEL, 400, "holds no texts"),
        (infer_doc(["fine", ""]), MODEL, 400, "text 1 is empty"),
        (infer_doc(["x"] * 65), MODEL, 413, "65 texts in one request; the limit is 64"),
        (infer_doc(["y" * 1_100_000]), MODEL, 413, "the limit is 1000000"),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_http_errors_map_to_their_status(
    gateway: Gateway, body: Any, model: str, status: int, message: str, route: str
) -> None:
    response = post_infer(gateway, body, model=model, route=route)

    assert response.status_code == status
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_non_utf8_text_in_binary_tensor_is_400(gateway: Gateway) -> None:
    raw = encode_bytes_tensor([b"ok", b"\xff\xfe\xfd"])
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()

    response = post_infer(
        gateway, head + raw, **{"inference-header-content-length": str(len(head))}
    )

    assert response.status_code == 400
    assert response.json() == {"error": "text 1 is not valid UTF-8"}


def grpc_infer(
    gw: Gateway,
    texts: list[bytes],
    model: str = MODEL,
    metadata: list | None = None,
    route: str = "proxy",
) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(encode_bytes_tensor(texts))
    with grpc.insecure_channel(gw.target(route)) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        md = [("authorization", f"Bearer {TOKEN}")] if metadata is None else metadata
        return stub.ModelInfer(request, metadata=md, timeout=60)


@pytest.mark.parametrize(
    ("texts", "model", "metadata", "code"),
    [
        ([b"hi"], "no-such-model", None, grpc.StatusCode.NOT_FOUND),
        ([b"\xff"], MODEL, None, grpc.StatusCode.INVALID_ARGUMENT),
        ([], MODEL, None, grpc.StatusCode.INVALID_ARGUMENT),
        ([b"x"] * 65, MODEL, None, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ([b"hi"], MODEL, [], grpc.StatusCode.UNAUTHENTICATED),
        (
            [b"hi"],
            MODEL,
            [("authorization", f"Bearer {TOKEN}"), ("x-bertgw-timeout-ms", "1")],
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_grpc_errors_map_to_their_code(
    gateway: Gateway,
    texts: list[bytes],
    model: str,
    metadata: Any,
    code: Any,
    route: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(gateway, texts, model, metadata, route)

    assert info.value.code() == code
    assert "Traceback" not in (info.value.details() or "")


@pytest.mark.parametrize("route", ROUTES)
def test_a_version_other_than_the_served_one_is_not_found(
    gateway: Gateway, route: str
) -> None:
    base = f"{gateway.url(route)}/v2/models/{MODEL}/versions"
    body = json.dumps(infer_doc(["hello"])).encode()
    headers = gateway.headers()

    served = httpx.post(f"{base}/1/infer", content=body, headers=headers, timeout=60)
    assert served.status_code == 200
    assert served.json()["model_version"] == "1"
    for response in (
        httpx.post(f"{base}/7/infer", content=body, headers=headers, timeout=60),
        httpx.get(f"{base}/7", headers=headers, timeout=60),
        httpx.get(f"{base}/7/ready", headers=headers, timeout=60),
    ):
        assert response.status_code == 404
        assert "has no version '7'" in response.json()["error"]
    assert httpx.get(f"{base}/1/ready", headers=headers, timeout=60).json() == {
        "name": MODEL,
        "ready": True,
    }

    request = pb.ModelInferRequest(model_name=MODEL, model_version="7")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(encode_bytes_tensor([b"hello"]))
    md = [("authorization", f"Bearer {TOKEN}")]
    with grpc.insecure_channel(gateway.target(route)) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, message in (
            (stub.ModelInfer, request),
            (stub.ModelReady, pb.ModelReadyRequest(name=MODEL, version="7")),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version="7")),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(message, metadata=md, timeout=60)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "has no version '7'" in (info.value.details() or "")
        assert stub.ModelReady(
            pb.ModelReadyRequest(name=MODEL, version="1"), metadata=md, timeout=60
        ).ready


def test_passed_deadline_is_504(gateway: Gateway) -> None:
    # Every emulated cloud adds at least 1 ms of round trip; 1 ms of budget is gone
    # before any answer can come back.
    response = post_infer(gateway, infer_doc(["hello"]), **{"x-bertgw-timeout-ms": "1"})

    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


def test_missing_or_wrong_token_is_401_and_health_stays_open(gateway: Gateway) -> None:
    url = f"{gateway.http_url}/v2/models/{MODEL}/infer"
    doc = infer_doc(["hello"])

    no_token = httpx.post(url, json=doc)
    wrong = httpx.post(url, json=doc, headers={"authorization": "Bearer nope"})

    assert no_token.status_code == wrong.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{gateway.http_url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{gateway.http_url}/metrics").status_code == 200


def test_token_over_its_rate_is_429_with_retry_after(gateway: Gateway) -> None:
    url = f"{gateway.http_url}/v2/models/{MODEL}"
    headers = gateway.headers(token=RATE_TOKEN)
    statuses = []
    # The bucket holds 600 requests and refills at 1/s; 700 tries must hit the end.
    with httpx.Client(headers=headers) as client:
        for _ in range(700):
            response = client.get(url)
            statuses.append(response.status_code)
            if response.status_code != 200:
                break

    assert statuses[-1] == 429
    assert int(response.headers["retry-after"]) >= 1
    assert set(statuses[:-1]) == {200}
    # Another token is unaffected.
    assert httpx.get(url, headers=gateway.headers()).status_code == 200


def test_allowed_regions_are_never_violated(gateway: Gateway) -> None:
    clouds = set()
    for _ in range(10):
        response = post_infer(
            gateway,
            infer_doc(["reset my password"]),
            **{"x-bertgw-allowed-regions": "us-central1"},
        )
        assert response.status_code == 200
        clouds.add(response.json()["parameters"]["cloud"])

    assert clouds == {"gcp-us-central1"}
    unknown = post_infer(
        gateway, infer_doc(["x"]), **{"x-bertgw-allowed-regions": "mars-1"}
    )
    assert unknown.status_code == 400


def test_outage_fails_over_within_the_allowed_regions(
    gateway: Gateway, faults: Any
) -> None:
    faults("gcp-us-central1", outage=True)
    regions = {"x-bertgw-allowed-regions": "us-central1,us-east-1"}

    responses = [
        post_infer(gateway, infer_doc(["where is my order"]), **regions)
        for _ in range(8)
    ]

    assert [r.status_code for r in responses] == [200] * 8
    assert {r.json()["parameters"]["cloud"] for r in responses} == {"aws-us-east-1"}

    faults("aws-us-east-1", outage=True)
    refused = post_infer(gateway, infer_doc(["where is my order"]), **regions)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1


def test_full_queue_is_refused_fast_with_503(gateway: Gateway, faults: Any) -> None:
    # aws holds each call 3 s; its queue takes 1000 texts, so of twenty 64-text
    # requests only 15 fit (15 * 64 = 960) and the rest are refused at once.
    faults("aws-us-east-1", extra_latency_ms=3000)
    regions = {"x-bertgw-allowed-regions": "us-east-1"}
    doc = infer_doc([f"cancel order {i}" for i in range(64)])

    def send(_: int) -> tuple[int, float, httpx.Response]:
        start_s = time.monotonic()
        response = post_infer(gateway, doc, **regions)
        return response.status_code, time.monotonic() - start_s, response

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(send, range(20)))

    refused = [(s, t, r) for s, t, r in results if s == 503]
    assert len(refused) >= 5
    assert all(t < 2.0 and int(r.headers["retry-after"]) >= 1 for _, t, r in refused)
    assert {s for s, _, _ in results} <= {200, 503}


def test_200_concurrent_mixed_requests_each_get_their_own_answers(
    gateway: Gateway, reference: dict
) -> None:
    texts = list(reference)

    def request_texts(i: int) -> list[str]:
        size = 1 + (i * 7) % 8  # 1..8 texts, mixed
        return [texts[(i * 13 + k) % len(texts)] for k in range(size)]

    async def via_http(client: httpx.AsyncClient, i: int) -> tuple[int, list[str]]:
        response = await client.post(
            f"/v2/models/{MODEL}/infer", json=infer_doc(request_texts(i))
        )
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        return i, outputs["label"]

    async def via_grpc(stub: Any, i: int) -> tuple[int, list[str]]:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="text", datatype="BYTES", shape=[len(request_texts(i))])
        request.raw_input_contents.append(
            encode_bytes_tensor(t.encode() for t in request_texts(i))
        )
        response = await stub.ModelInfer(
            request, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=120
        )
        labels = [
            b.decode() for b in decode_bytes_tensor(response.raw_output_contents[0])
        ]
        return i, labels

    async def run_all() -> list[tuple[int, list[str]]]:
        limits = httpx.Limits(max_connections=200)
        async with (
            httpx.AsyncClient(
                base_url=gateway.http_url,
                headers=gateway.headers(),
                limits=limits,
                timeout=120,
            ) as client,
            grpc.aio.insecure_channel(gateway.grpc_target) as channel,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            calls = [
                via_grpc(stub, i) if i % 4 == 0 else via_http(client, i)
                for i in range(200)
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(run_all())

    assert len(answers) == 200
    for i, labels in answers:
        assert labels == [reference[t][0] for t in request_texts(i)], f"request {i}"


def test_bad_and_over_long_items_do_not_disturb_their_neighbours(
    gateway: Gateway, reference: dict
) -> None:
    texts = list(reference)[:20]
    long_text = "please help me with my order " * 5000  # ~145k chars, clipped to 4096
    bodies = [infer_doc([t]) for t in texts]
    bodies.insert(5, infer_doc([texts[0], long_text]))
    bodies.insert(10, infer_doc(["fine", ""]))

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda b: post_infer(gateway, b), bodies))

    assert responses[10].status_code == 400
    mixed = {o["name"]: o["data"] for o in responses[5].json()["outputs"]}
    assert mixed["truncated"] == [False, True]
    assert mixed["label"][0] == reference[texts[0]][0]
    singles = [r for i, r in enumerate(responses) if i not in (5, 10)]
    for text, response in zip(texts, singles, strict=True):
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["label"] == [reference[text][0]]
        # Same label; the score may move a little with the batch it ran in (padding
        # and, where the CPU has it, bf16 arithmetic), never by a whole class.
        assert outputs["score"][0] == pytest.approx(reference[text][1], abs=0.02)


def test_metrics_expose_bounded_series(gateway: Gateway) -> None:
    post_infer(gateway, infer_doc(["hello"]), model="made-up-model")

    text = httpx.get(f"{gateway.http_url}/metrics").text

    assert 'protocol="http"' in text and 'protocol="grpc"' in text
    assert 'model="unknown"' in text and "made-up-model" not in text
    for name in CLOUDS:
        assert f'bertgw_replicas{{cloud="{name}"}} 1.0' in text
    assert "bertgw_cost_usd_per_hour" in text
    assert "bertgw_routing_decisions_total" in text
    assert "bertgw_replica_batch_size_texts_bucket" in text
    assert "bertgw_replica_queue_wait_seconds_bucket" in text


def test_admin_route_needs_a_token_and_checks_its_body(gateway: Gateway) -> None:
    url = f"{gateway.http_url}/admin/emulation/aws-us-east-1"

    assert httpx.post(url, json={"outage": True}).status_code == 401
    bad = httpx.post(url, json={"outage": "yes"}, headers=gateway.headers())
    unknown = httpx.post(
        f"{gateway.http_url}/admin/emulation/nowhere",
        json={},
        headers=gateway.headers(),
    )

    assert bad.status_code == 400 and "outage must be a boolean" in bad.json()["error"]
    assert unknown.status_code == 400


def test_graceful_stop_finishes_in_flight_requests_and_refuses_new(
    gateway: Gateway, faults: Any
) -> None:
    from gateway.serve import shutdown

    for name in CLOUDS:
        faults(name, extra_latency_ms=1500)
    in_flight: list[httpx.Response] = []

    def send() -> None:
        in_flight.append(post_infer(gateway, infer_doc(["I was charged twice"])))

    senders = [threading.Thread(target=send) for _ in range(8)]
    for sender in senders:
        sender.start()
    time.sleep(0.5)
    stopper = threading.Thread(target=shutdown, args=(gateway.handle, 30.0))
    stopper.start()
    time.sleep(0.3)
    try:
        late = post_infer(gateway, infer_doc(["hello"])).status_code
    except httpx.TransportError:
        late = None
    for sender in senders:
        sender.join(timeout=60)
    stopper.join(timeout=90)

    assert [r.status_code for r in in_flight] == [200] * 8
    assert late in (503, None)
    assert not stopper.is_alive()
