"""Locust users that send OIP v2 infer requests with real texts to the gateway.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 20 --spawn-rate 20 --run-time 60s

Settings come from the environment: BERTGW_MODEL (default demo-intents),
BERTGW_TEXTS (a CSV with a `text` column), BERTGW_TEXT_MIX (e.g. `1:0.8,4:0.2`),
BERTGW_USER_RPS (requests per second per user, default 1), BERTGW_TOKEN and
BERTGW_ALLOWED_REGIONS (sent as headers when set). Locust is closed loop per user;
for open-loop replay of traces use `bertgw loadtest`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import HttpUser, constant_throughput, task

from loadtest.plan import load_texts, parse_mix
from loadtest.protocols import CLOUD_HEADER, oip_body

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = os.environ.get("BERTGW_MODEL", "demo-intents")
TEXTS = load_texts(
    os.environ.get(
        "BERTGW_TEXTS", str(REPO_ROOT / "data" / "demo_intents" / "test.csv")
    )
)
MIX = parse_mix(os.environ.get("BERTGW_TEXT_MIX", "1:1"))
USER_RPS = float(os.environ.get("BERTGW_USER_RPS", "1"))


def _headers() -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if token := os.environ.get("BERTGW_TOKEN"):
        headers["authorization"] = f"Bearer {token}"
    if regions := os.environ.get("BERTGW_ALLOWED_REGIONS"):
        headers["x-bertgw-allowed-regions"] = regions
    return headers


class InferUser(HttpUser):
    """Sends one infer request with 1..N texts, at BERTGW_USER_RPS per user."""

    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.headers = _headers()

    @task
    def infer(self) -> None:
        size = random.choices(MIX.sizes, weights=MIX.weights)[0]
        texts = random.choices(TEXTS, k=size)
        with self.client.post(
            f"/v2/models/{MODEL}/infer",
            data=oip_body(texts, "text", return_probabilities=False),
            headers=self.headers,
            name=f"infer {MODEL} x{size}",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif (
                not response.headers.get(CLOUD_HEADER)
                and b'"cloud"' not in response.content
            ):
                response.failure("answer names no cloud")
            else:
                response.success()
