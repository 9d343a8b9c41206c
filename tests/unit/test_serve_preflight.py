"""`bertgw serve` says what would break the deployment before it starts Ray."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.config import parse_config
from gateway.serve import preflight
from tests.unit.test_config import with_change


def _listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_a_missing_checkpoint_is_named_with_the_way_to_make_it(
    tmp_path: Path,
) -> None:
    data = with_change(("models", 0, "checkpoint"), str(tmp_path / "nothing"))
    data["http"] = {"port": 1}
    data["grpc"] = {"enabled": False}

    problems = preflight(parse_config(data), local=False)

    assert len(problems) == 1
    assert problems[0].startswith(f"models[0].checkpoint: {tmp_path / 'nothing'}")
    assert "bertgw finetune -o" in problems[0]


def test_a_port_something_listens_on_is_refused_on_a_local_node(
    demo_model_dir: Path,
) -> None:
    with _listener() as taken:
        port = taken.getsockname()[1]
        data = with_change(("models", 0, "checkpoint"), str(demo_model_dir))
        data["http"] = {"host": "127.0.0.1", "port": port}
        data["grpc"] = {"enabled": False}
        config = parse_config(data)

        assert preflight(config, local=False) == []  # a cluster's proxies are remote
        problems = preflight(config, local=True)

    assert len(problems) == 1
    assert problems[0].startswith(f"http.port: {port} on 127.0.0.1 is taken")


def test_a_taken_direct_ingress_port_is_refused_on_a_local_node(
    demo_model_dir: Path,
) -> None:
    with _listener() as taken:
        port = taken.getsockname()[1]
        data = with_change(("models", 0, "checkpoint"), str(demo_model_dir))
        data["http"] = {"host": "127.0.0.1", "port": _free_port()}
        data["grpc"] = {"enabled": False}
        data["ingress"] = {"direct_http_port": port}

        problems = preflight(parse_config(data), local=True)

    assert len(problems) == 1
    assert problems[0].startswith(f"ingress.direct_http_port: {port} on 127.0.0.1")


def _free_port() -> int:
    with _listener() as probe:
        return probe.getsockname()[1]
