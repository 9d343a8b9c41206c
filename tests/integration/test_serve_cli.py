"""`bertgw serve` as an operator runs it: up, answering, and stopped by SIGTERM.

Service managers stop a process with SIGTERM; Ray and the gRPC core it loads install
their own SIGTERM handlers, which must not win over the gateway's drain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.serve import SERVE_TUNING_ENV
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 90.0


def test_serve_answers_then_drains_and_exits_cleanly_on_sigterm(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load((REPO_ROOT / "configs" / "local.yaml").read_text())
    data["models"][0]["checkpoint"] = str(demo_model_dir)
    data["http"]["port"] = free_port()
    data["grpc"]["port"] = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data))
    # As from an operator's shell that exports Serve's tuning itself: with the
    # handle router on the caller's loop, the CLI's own calls to the ingress must
    # still be answered.
    env = dict(os.environ) | SERVE_TUNING_ENV
    env |= {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}

    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        lines = []
        deadline_s = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline_s:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "drains and stops" in line:
                break
        assert any("ready=True" in line for line in lines), "".join(lines[-20:])
        assert any("gRPC  0.0.0.0:" in line for line in lines)

        url = f"http://127.0.0.1:{data['http']['port']}/v1/classify"
        doc = {"model": "demo-intents", "texts": ["my card was declined"]}
        assert httpx.post(url, json=doc, timeout=30).status_code == 200

        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)

    assert server.returncode == 0, rest[-2000:]
    assert "bertgw: stopped (0 request(s) cut off)" in rest
    assert "AbslFailureSignalHandler" not in rest
