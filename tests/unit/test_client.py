"""`bertgw classify`'s HTTP client when nothing answers."""

from __future__ import annotations

import socket

import pytest

from gateway.client import ClientError, classify_http


def test_an_unreachable_gateway_is_one_unavailable_error() -> None:
    # A port bound but never listened on refuses connections on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"

        with pytest.raises(ClientError) as caught:
            classify_http(url, "demo-intents", ["hello"])

    assert caught.value.status == "UNAVAILABLE"
    assert caught.value.message.startswith(f"{url}: ")
    assert len(caught.value.message) > len(f"{url}: ")
