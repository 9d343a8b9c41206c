"""`bertgw demo` end to end: a short run on free loopback ports, as a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.demo_report import PUBLISHED_PLOTS, verdict
from loadtest.demo_traffic import choose_source
from loadtest.records import LOST, OK, Record
from loadtest.summary import summarize

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# A 20 s replay at 6 rps is about 120 requests: enough to see both protocols and
# every cloud; gateway start (about a minute on 2 cores) dominates the wall time.
DURATION_S = 20
RATE_RPS = 6
RUN_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo_run(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out_dir = tmp_path_factory.mktemp("demo") / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "demo",
        "--quick",
        "--duration-s",
        str(DURATION_S),
        "--rate-rps",
        str(RATE_RPS),
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        "--out",
        str(out_dir),
    ]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return done, out_dir


def test_demo_answers_every_request_without_error_through_both_protocols(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out_dir = demo_run
    assert (out_dir / "summary.json").exists(), (
        done.stdout[-3000:] + done.stderr[-3000:]
    )
    demo = json.loads((out_dir / "summary.json").read_text())
    requests = demo["overall"]["requests"]

    # About DURATION_S * RATE_RPS = 120 requests planned, all of them sent.
    assert 60 <= requests["planned"] <= 200
    assert requests["sent"] == requests["planned"]
    assert requests["lost"] == 0
    assert requests["failed"] == 0
    assert requests["ok"] == requests["sent"]
    assert demo["overall"]["errors_by_kind"] == {}
    # Requests alternate between the protocols, so each carries half (+-1).
    by_protocol = demo["by_protocol"]
    assert set(by_protocol) == {"http-oip", "grpc"}
    halves = [p["requests"]["ok"] for p in by_protocol.values()]
    assert abs(halves[0] - halves[1]) <= 1


def test_demo_records_name_a_configured_cloud_for_every_answer(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out_dir = demo_run
    demo = json.loads((out_dir / "summary.json").read_text())
    lines = (out_dir / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]

    assert len(records) == demo["overall"]["requests"]["planned"]
    clouds = set(demo["run"]["clouds"])
    assert all(r["kind"] == OK and r["cloud"] in clouds for r in records)
    assert demo["verdict"]["checks"]["every_answer_names_a_cloud"]


def test_demo_serves_the_trained_labels_over_http_and_grpc(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out_dir = demo_run
    demo = json.loads((out_dir / "summary.json").read_text())
    labels = demo["label_check"]
    card_accuracy = demo["run"]["model_card_test_accuracy"]

    # The 196 held-out texts, served in fp32 by the same weights the model card
    # scored after training: accuracy within 3 points of the card's figure.
    assert labels["texts"] == 196
    assert labels["protocols_agree"]
    assert labels["http_accuracy"] == pytest.approx(card_accuracy, abs=0.03)


def test_demo_writes_its_report_and_plots_and_stops_everything(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out_dir = demo_run
    demo = json.loads((out_dir / "summary.json").read_text())

    report = (out_dir / "report.txt").read_text()
    assert "verdict:" in report and "share per cloud" in report
    assert "verdict:" in done.stdout
    for name in PUBLISHED_PLOTS:
        plot = out_dir / name
        assert plot.exists() and plot.stat().st_size > 5_000, name
    assert demo["overall"]["metrics"]["samples"] > 0
    assert demo["shutdown"] == {"cut_off_requests": 0, "processes_left": []}


def test_demo_without_shared_data_says_so_once_and_uses_its_own_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = choose_source(
        duration_s=10.0,
        rate_rps=5.0,
        rng=np.random.default_rng(0),
        shared_dir=tmp_path / "absent",
    )

    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "shared data not found" in printed[0]
    assert not source.shared_data
    # 196 held-out demo texts; a diurnal shape at a mean of 5 rps for 10 s draws
    # about 50 Poisson arrivals.
    assert len(source.texts) == 196
    assert 25 <= len(source.offsets_s) <= 80
    assert float(source.offsets_s.max()) < 10.0


def test_demo_verdict_fails_on_a_lost_request_or_a_slow_p99() -> None:
    def record(i: int, kind: str, latency_s: float | None) -> Record:
        return Record(i, 0.1 * i, 0.1 * i, latency_s, kind, None, "grpc", "aws", 1, 0)

    clean = [record(i, OK, 0.050) for i in range(10)]
    one_lost = [*clean[:9], record(9, LOST, None)]
    slow = [*clean[:9], record(9, OK, 0.400)]

    def judged(records: list[Record]) -> dict:
        overall = summarize(records, duration_s=1.0, slo_ms=150.0)
        return verdict(records, overall, slo_ms=150.0)

    assert judged(clean)["passed"]
    assert not judged(one_lost)["checks"]["zero_lost"]
    # p99 of nine 50 ms and one 400 ms: 50 + 0.91 * 350 = 368.5 ms > 150 ms.
    assert judged(slow)["p99_ms"] == pytest.approx(368.5)
    assert not judged(slow)["checks"]["p99_within_slo"]
