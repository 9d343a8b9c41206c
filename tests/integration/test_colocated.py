"""A cloud colocated with the ingress, next to one behind a replica deployment.

Real Ray Serve, real HTTP and gRPC on loopback, the real demo model: the colocated
cloud answers from the ingress process itself, the other through its replica
deployment, and the router treats both as pools.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.config import parse_config
from gateway.ingress import CLOUD_HEADER, REGIONS_HEADER
from gateway.protocol import encode_bytes_tensor
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.integration.conftest import cloud, free_port

MODEL = "demo-intents"


@pytest.fixture(scope="module")
def colocated_gateway(demo_model_dir: Path) -> Iterator[dict]:
    import ray
    from ray import serve

    from gateway.app import build_app, start_serve
    from gateway.serve import start_ray, wait_ready

    local = cloud("local", "local-1", 0.1, "cloud_local", 0.0)
    del local["emulation"]
    local |= {"colocated": True, "replica_num_cpus": 0.25}
    remote = cloud("gcp-us-central1", "us-central1", 0.2231, "cloud_gcp_usc1", 2.0)
    data = {
        "app_name": "bertgw-colocated",
        "models": [
            {
                "name": MODEL,
                "checkpoint": str(demo_model_dir),
                "num_threads": 1,
                "max_batch_wait_ms": 0,
            }
        ],
        "clouds": [local, remote],
        "slo": {"latency_ms": 2000},
        "http": {"port": free_port()},
        "grpc": {"port": free_port()},
        "ingress": {"num_cpus": 0.25},
    }
    config = parse_config(data)
    start_ray(config)
    try:
        start_serve(config)
        handle = serve.run(build_app(config), name=config.app_name, route_prefix="/")
        assert wait_ready(handle, timeout_s=300)
        yield {
            "config": config,
            "url": f"http://127.0.0.1:{config.http.port}",
            "grpc": f"127.0.0.1:{config.grpc.port}",
        }
    finally:
        serve.shutdown()
        ray.shutdown()


def test_only_the_remote_cloud_has_a_replica_deployment(
    colocated_gateway: dict,
) -> None:
    from ray import serve

    app = colocated_gateway["config"].app_name
    names = set(serve.status().applications[app].deployments)

    assert names == {"ingress", f"replica-{MODEL}-gcp-us-central1"}


@pytest.mark.parametrize(
    ("region", "cloud_name"),
    [("local-1", "local"), ("us-central1", "gcp-us-central1")],
)
def test_both_pools_answer_over_http_with_the_same_labels(
    colocated_gateway: dict,
    demo_test_texts: list[tuple[str, str]],
    region: str,
    cloud_name: str,
) -> None:
    texts = [text for text, _ in demo_test_texts[:12]]
    response = httpx.post(
        f"{colocated_gateway['url']}/v1/classify",
        json={"model": MODEL, "texts": texts},
        headers={REGIONS_HEADER: region},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    assert response.headers[CLOUD_HEADER] == cloud_name
    labels = [row["label"] for row in response.json()["results"]]
    # The demo model is right on most of its held-out texts either way.
    right = sum(a == b for a, (_, b) in zip(labels, demo_test_texts[:12], strict=True))
    assert right >= 9


def test_colocated_pool_answers_grpc_and_is_counted_as_a_replica(
    colocated_gateway: dict,
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(
        encode_bytes_tensor([b"I lost my card", b"what is my balance"])
    )
    with grpc.insecure_channel(colocated_gateway["grpc"]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(
            request, metadata=((REGIONS_HEADER, "local-1"),), timeout=60
        )

    assert [o.name for o in reply.outputs][:2] == ["label", "score"]
    assert reply.parameters["cloud"].string_param == "local"
    metrics = httpx.get(f"{colocated_gateway['url']}/metrics", timeout=10).text
    replicas = [
        line for line in metrics.splitlines() if line.startswith("bertgw_replicas{")
    ]
    assert 'bertgw_replicas{cloud="local"} 1.0' in replicas, replicas
