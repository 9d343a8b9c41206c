"""`bertgw serve` says what would break the deployment before it starts Ray."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("field", ["http.port", "ingress.direct_http_port"])
def test_a_port_something_listens_on_is_refused_on_a_local_node(
    demo_model_dir: Path, field: str
) -> None:
    with _listener() as taken, _listener() as free_for_now:
        port = taken.getsockname()[1]
        spare = free_for_now.getsockname()[1]
        free_for_now.close()
        data = with_change(("models", 0, "checkpoint"), str(demo_model_dir))
        data["grpc"] = {"enabled": False}
        if field == "http.port":
            data["http"] = {"host": "127.0.0.1", "port": port}
        else:
            data["http"] = {"host": "127.0.0.1", "port": spare}
            data["ingress"] = {"direct_http_port": port}
        config = parse_config(data)

        assert preflight(config, local=False) == []  # a cluster's proxies are remote
        problems = preflight(config, local=True)

    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: {port} on 127.0.0.1 is taken")
