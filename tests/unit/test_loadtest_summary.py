"""Summary figures from hand-built records, with the arithmetic shown."""

from __future__ import annotations

import pytest

from loadtest.records import Record, read_records, write_records
from loadtest.scrape import ScrapeSample
from loadtest.summary import percentiles, render_report, summarize


def _record(
    i: int,
    *,
    kind: str = "ok",
    scheduled_s: float | None = None,
    send_s: float | None = 0.0,
    latency_s: float | None = 0.01,
    cloud: str | None = "aws",
    num_texts: int = 1,
) -> Record:
    return Record(
        id=i,
        scheduled_s=scheduled_s,
        send_s=send_s,
        latency_s=latency_s,
        kind=kind,
        status=None,
        protocol="grpc",
        cloud=cloud,
        num_texts=num_texts,
        shard=0,
    )


def test_percentiles_interpolate_between_order_statistics() -> None:
    stats = percentiles([float(v) for v in range(10, 0, -1)])
    # Sorted 1..10: rank q/100 * 9; p50 -> 4.5 -> 5.5, p90 -> 8.1 -> 9.1,
    # p99 -> 8.91 -> 9.91, p99.9 -> 8.991 -> 9.991.
    assert stats["p50"] == pytest.approx(5.5)
    assert stats["p90"] == pytest.approx(9.1)
    assert stats["p99"] == pytest.approx(9.91)
    assert stats["p99_9"] == pytest.approx(9.991)
    assert stats["mean"] == pytest.approx(5.5)
    assert stats["max"] == 10.0


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == {
        "p50": None,
        "p90": None,
        "p99": None,
        "p99_9": None,
        "mean": None,
        "max": None,
    }


def test_summary_counts_errors_lost_share_slo_rates_and_lag() -> None:
    records = [
        # Eight ok answers at 10 ms scheduled every 0.5 s, each sent 2 ms late.
        *[
            _record(
                i,
                scheduled_s=0.5 * i,
                send_s=0.5 * i + 0.002,
                latency_s=0.010,
                cloud="aws" if i < 6 else "gcp",
                num_texts=2,
            )
            for i in range(8)
        ],
        _record(8, kind="http_503", scheduled_s=4.0, send_s=4.002, latency_s=0.001),
        _record(9, kind="timeout", scheduled_s=4.5, send_s=4.502, latency_s=1.0),
        _record(10, kind="lost", scheduled_s=5.0, send_s=5.002, latency_s=None),
        _record(11, kind="not_sent", scheduled_s=5.5, send_s=None, latency_s=None),
    ]
    records[7] = _record(7, scheduled_s=3.5, send_s=3.502, latency_s=0.2, cloud="gcp")

    summary = summarize(records, duration_s=6.0, slo_ms=50.0)

    assert summary["mode"] == "open_loop"
    assert summary["requests"] == {
        "planned": 12,
        "sent": 11,
        "ok": 8,
        "failed": 2,
        "lost": 1,
        "not_sent": 1,
    }
    assert summary["errors_by_kind"] == {"http_503": 1, "timeout": 1}
    assert summary["lost"] == 1
    # ok answers: aws 6 of 8, gcp 2 of 8.
    assert summary["share_per_cloud"] == {"aws": 0.75, "gcp": 0.25}
    # Within 50 ms: the 7 ok answers at 10 ms, out of 11 sent.
    assert summary["slo"]["attainment"] == pytest.approx(7 / 11)
    # Offered: 12 scheduled over 6 s. Sent: 11 by the last send at 5.002 s.
    assert summary["offered_rps"] == pytest.approx(2.0)
    assert summary["sent_rps"] == pytest.approx(11 / 5.002)
    # Last answer: the timeout, sent at 4.502 s and ended 1 s later; 8 ok in 5.502 s.
    assert summary["throughput_rps"] == pytest.approx(8 / 5.502)
    # Texts: 7 ok requests with 2 texts and one with 1 = 15.
    assert summary["texts_per_s"] == pytest.approx(15 / 5.502)
    # Every send was 2 ms late (lag is over the 11 sent requests).
    assert summary["send_lag_ms"]["p50"] == pytest.approx(2.0)
    assert summary["send_lag_ms"]["max"] == pytest.approx(2.0)
    # ok latencies: seven of 10 ms and one of 200 ms; p50 is 10 ms.
    assert summary["latency_ms"]["p50"] == pytest.approx(10.0)
    assert summary["latency_ms"]["max"] == pytest.approx(200.0)
    assert "lost 1" in render_report(summary)


def test_closed_loop_summary_has_no_offered_rate_or_lag() -> None:
    records = [_record(i, send_s=0.1 * i, latency_s=0.1) for i in range(10)]
    summary = summarize(records, duration_s=1.0, slo_ms=None)
    assert summary["mode"] == "closed_loop"
    assert summary["offered_rps"] is None
    assert summary["send_lag_ms"] is None
    assert summary["slo"] is None
    # 10 ok, the last answered at 0.9 + 0.1 = 1.0 s.
    assert summary["throughput_rps"] == pytest.approx(10.0)


def test_summary_reports_replicas_and_cost_from_scrapes() -> None:
    scrapes = [
        ScrapeSample(t_s=0.0, replicas={"aws": 1.0}, cost_usd_per_hour=3.6),
        ScrapeSample(
            t_s=10.0, replicas={"aws": 3.0, "gcp": 1.0}, cost_usd_per_hour=7.2
        ),
    ]
    summary = summarize([_record(0)], duration_s=None, slo_ms=None, scrapes=scrapes)
    metrics = summary["metrics"]
    # (3.6 + 7.2) / 2 USD/h over 10 s = 5.4 * 10 / 3600 = 0.015 USD.
    assert metrics["cost_usd"] == pytest.approx(0.015)
    assert metrics["per_cloud"]["aws"] == {"mean": 2.0, "max": 3.0}
    # gcp absent from the first scrape counts as 0 replicas then.
    assert metrics["per_cloud"]["gcp"] == {"mean": 0.5, "max": 1.0}
    assert metrics["cost_usd_per_hour_mean"] == pytest.approx(5.4)


def test_records_round_trip_through_jsonl(tmp_path) -> None:
    records = [_record(0), _record(1, kind="lost", latency_s=None, cloud=None)]
    write_records(records, tmp_path / "r.jsonl")
    assert read_records(tmp_path / "r.jsonl") == records
