"""The harness against the no-op servers on loopback, over HTTP and gRPC."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main as bertgw
from loadtest.arrivals import shape_schedule
from loadtest.noop_server import NoopServerProcess
from loadtest.plan import RequestPlan, build_plan, parse_mix
from loadtest.protocols import TargetConfig
from loadtest.runner import RunLimits, run_load
from loadtest.summary import summarize

pytestmark = pytest.mark.integration

TEXTS = ["where is my card?", "I was charged twice", "change my PIN please"]


@pytest.fixture(scope="module")
def noop() -> Iterator[NoopServerProcess]:
    with NoopServerProcess(
        args=["--clouds", "aws,gcp", "--cost-usd-per-hour", "3.6"]
    ) as s:
        yield s


def _open_plan(rate_rps: float, duration_s: float, seed: int = 0) -> RequestPlan:
    rng = np.random.default_rng(seed)
    offsets_s = shape_schedule(
        "constant", duration_s=duration_s, mean_rps=rate_rps, rng=rng
    )
    return build_plan(
        num_requests=0,
        pool_size=len(TEXTS),
        mix=parse_mix("1:0.7,4:0.3"),
        rng=rng,
        offsets_s=offsets_s,
    )


def _target(noop: NoopServerProcess, protocol: str, **kwargs: object) -> TargetConfig:
    url = noop.grpc_target if protocol == "grpc" else noop.http_url
    return TargetConfig(
        protocol=protocol,  # type: ignore[arg-type]
        url=url,
        model="demo-intents",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("protocol", "shards", "grpc_raw"),
    [
        ("http-oip", 1, False),
        ("http-classify", 1, False),
        ("grpc", 1, False),
        ("grpc", 1, True),
        ("grpc", 2, False),
        ("http-oip", 2, False),
    ],
)
def test_open_loop_answers_every_request_with_none_lost(
    noop: NoopServerProcess, protocol: str, shards: int, grpc_raw: bool
) -> None:
    plan = _open_plan(rate_rps=200.0, duration_s=2.0)
    result = run_load(
        _target(noop, protocol, grpc_raw=grpc_raw, connections=4),
        plan,
        TEXTS,
        limits=RunLimits(max_duration_s=10.0, drain_timeout_s=5.0),
        shards=shards,
        metrics_url=f"{noop.http_url}/metrics",
        scrape_interval_s=0.5,
    )
    summary = summarize(
        result.records, duration_s=2.0, slo_ms=1000.0, scrapes=result.scrapes
    )

    assert len(result.records) == len(plan)
    assert [r.id for r in result.records] == list(range(len(plan)))
    assert summary["requests"]["ok"] == len(plan)
    assert summary["lost"] == 0
    assert summary["errors_by_kind"] == {}
    assert {r.shard for r in result.records} == set(range(shards))
    # The server names clouds in turn, so each gets about half of the answers.
    assert set(summary["share_per_cloud"]) == {"aws", "gcp"}
    assert summary["share_per_cloud"]["aws"] == pytest.approx(0.5, abs=0.1)
    # Scrapes at 0.5 s over a ~2 s run, plus a last one after the load.
    assert summary["metrics"]["samples"] >= 3
    assert summary["metrics"]["per_cloud"]["aws"]["max"] == 1.0
    assert summary["metrics"]["cost_usd_per_hour_mean"] == pytest.approx(3.6)
    # Sends keep to the schedule: the generator is far from its limit at 200 rps.
    assert summary["send_lag_ms"]["p50"] < 20.0


def test_closed_loop_keeps_n_in_flight_and_stops_at_the_cap(
    noop: NoopServerProcess,
) -> None:
    plan = build_plan(
        num_requests=300,
        pool_size=len(TEXTS),
        mix=parse_mix("1:1"),
        rng=np.random.default_rng(1),
    )
    result = run_load(
        _target(noop, "grpc"),
        plan,
        TEXTS,
        limits=RunLimits(max_duration_s=20.0, drain_timeout_s=5.0),
        concurrency=4,
    )
    summary = summarize(result.records, duration_s=None, slo_ms=None)
    # 300 requests planned, none scheduled: all sent by 4 workers, all answered.
    assert summary["mode"] == "closed_loop"
    assert summary["requests"]["ok"] == 300
    assert summary["lost"] == 0


@pytest.mark.parametrize("protocol", ["http-oip", "grpc"])
def test_injected_server_errors_are_counted_by_kind(protocol: str) -> None:
    with NoopServerProcess(args=["--error-every", "5"]) as failing:
        plan = _open_plan(rate_rps=100.0, duration_s=1.0, seed=3)
        result = run_load(
            _target(failing, protocol),
            plan,
            TEXTS,
            limits=RunLimits(max_duration_s=10.0, drain_timeout_s=5.0),
        )
    summary = summarize(result.records, duration_s=1.0, slo_ms=None)
    kind = "http_503" if protocol == "http-oip" else "grpc_UNAVAILABLE"
    # Every 5th request the server sees fails: floor(n / 5) of them.
    assert summary["errors_by_kind"] == {kind: len(plan) // 5}
    assert summary["requests"]["ok"] == len(plan) - len(plan) // 5
    assert summary["lost"] == 0


def test_a_refused_closed_loop_worker_waits_its_backoff_before_sending_again() -> None:
    # Every 2nd request the server sees is refused (503): one worker sending 20
    # requests is refused 10 times and, honouring a 0.2 s backoff, waits at least
    # 10 x 0.2 = 2 s in all; answered requests are sent again at once.
    plan = build_plan(
        num_requests=20,
        pool_size=len(TEXTS),
        mix=parse_mix("1:1"),
        rng=np.random.default_rng(2),
    )
    with NoopServerProcess(args=["--error-every", "2"]) as refusing:
        start_s = time.monotonic()
        result = run_load(
            _target(refusing, "http-oip"),
            plan,
            TEXTS,
            limits=RunLimits(
                max_duration_s=20.0, drain_timeout_s=5.0, refusal_backoff_s=0.2
            ),
            concurrency=1,
        )
        elapsed_s = time.monotonic() - start_s
    summary = summarize(result.records, duration_s=None, slo_ms=None)
    assert summary["errors_by_kind"] == {"http_503": 10}
    assert summary["requests"]["ok"] == 10
    assert elapsed_s >= 2.0


@pytest.mark.parametrize("protocol", ["http-oip", "grpc"])
def test_slow_answers_become_client_timeouts(protocol: str) -> None:
    with NoopServerProcess(args=["--delay-ms", "300"]) as slow:
        plan = _open_plan(rate_rps=20.0, duration_s=0.5, seed=4)
        result = run_load(
            _target(slow, protocol, timeout_s=0.1),
            plan,
            TEXTS,
            limits=RunLimits(max_duration_s=5.0, drain_timeout_s=5.0),
        )
    summary = summarize(result.records, duration_s=0.5, slo_ms=None)
    assert summary["errors_by_kind"] == {"timeout": len(plan)}
    assert summary["lost"] == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["http-oip", "grpc"])
def test_refused_connections_are_counted_as_connection_errors(protocol: str) -> None:
    port = _closed_port()
    url = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    plan = _open_plan(rate_rps=20.0, duration_s=0.5, seed=5)
    result = run_load(
        TargetConfig(protocol=protocol, url=url, model="m", timeout_s=2.0),
        plan,
        TEXTS,
        limits=RunLimits(max_duration_s=5.0, drain_timeout_s=5.0),
        metrics_url=f"http://127.0.0.1:{port}/metrics",
    )
    summary = summarize(
        result.records,
        duration_s=0.5,
        slo_ms=None,
        metrics_available=result.metrics_available,
    )
    assert summary["errors_by_kind"] == {"connection": len(plan)}
    assert summary["metrics"]["available"] is False


def test_cli_writes_records_summary_report_and_plots(
    noop: NoopServerProcess, tmp_path: Path
) -> None:
    texts_csv = tmp_path / "texts.csv"
    texts_csv.write_text("text,label\n" + "".join(f'"{t}",x\n' for t in TEXTS))
    out = tmp_path / "run"
    code = bertgw(
        [
            "loadtest",
            "--protocol",
            "http-oip",
            "--url",
            noop.http_url,
            "--shape",
            "ramp",
            "--target-rps",
            "100",
            "--duration-s",
            "2",
            "--texts",
            str(texts_csv),
            "--text-mix",
            "1:0.8,4:0.2",
            "--token",
            "secret-token",
            "--scrape-interval-s",
            "0.5",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == summary["requests"]["planned"] == summary["requests"]["ok"]
    assert summary["lost"] == 0
    assert summary["run"]["source"] == "shape:ramp"
    assert "secret-token" not in json.dumps(summary)
    for name in ("report.txt", "latency.png", "throughput.png", "cloud_share.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "replicas.png").exists()


def test_cli_refuses_a_remote_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts_csv = tmp_path / "texts.csv"
    texts_csv.write_text("text\nhello\n")
    # 192.0.2.1 is a documentation address: the guard refuses before any traffic.
    code = bertgw(
        [
            "loadtest",
            "--url",
            "http://192.0.2.1:8000",
            "--target-rps",
            "1",
            "--no-progress",
        ]
        + ["--texts", str(texts_csv), "--out", str(tmp_path / "run")]
    )
    assert code == 2
    assert "not loopback" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
