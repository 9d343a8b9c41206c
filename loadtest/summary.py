"""Turns a run's records and scrapes into the summary JSON and a short text report.

Percentiles interpolate linearly between order statistics (numpy's default), so the
p50 of 1..10 is 5.5 and the p90 is 9.1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from loadtest.records import LOST, NOT_SENT, OK, Record
from loadtest.scrape import ScrapeSample, run_cost_usd

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9, mean and max of `values`; all None when empty."""
    if len(values) == 0:
        empty: dict[str, float | None] = {name: None for name, _ in PERCENTILES}
        return empty | {"mean": None, "max": None}
    array = np.asarray(values, dtype=float)
    result: dict[str, float | None] = {
        name: float(np.percentile(array, q)) for name, q in PERCENTILES
    }
    result["mean"] = float(array.mean())
    result["max"] = float(array.max())
    return result


def _scaled(stats: dict[str, float | None], factor: float) -> dict[str, float | None]:
    return {k: None if v is None else v * factor for k, v in stats.items()}


def _replicas_summary(scrapes: list[ScrapeSample]) -> dict[str, Any]:
    clouds = sorted({cloud for s in scrapes for cloud in s.replicas})
    timeline = [{"t_s": round(s.t_s, 3), "replicas": s.replicas} for s in scrapes]
    per_cloud: dict[str, dict[str, float]] = {}
    for cloud in clouds:
        counts = [s.replicas.get(cloud, 0.0) for s in scrapes]
        per_cloud[cloud] = {
            "mean": float(np.mean(counts)),
            "max": float(np.max(counts)),
        }
    costs = [s.cost_usd_per_hour for s in scrapes if s.cost_usd_per_hour is not None]
    return {
        "samples": len(scrapes),
        "per_cloud": per_cloud,
        "timeline": timeline,
        "cost_usd": run_cost_usd(scrapes),
        "cost_usd_per_hour_mean": float(np.mean(costs)) if costs else None,
    }


def summarize(
    records: list[Record],
    *,
    duration_s: float | None,
    slo_ms: float | None,
    scrapes: list[ScrapeSample] | None = None,
    metrics_available: bool | None = None,
) -> dict[str, Any]:
    """The run's figures.

    Args:
        duration_s: the planned schedule length (open loop), for the offered rate.
        slo_ms: a request attains the SLO when answered ok within this latency.
    """
    sent = [r for r in records if r.kind != NOT_SENT]
    ok = [r for r in sent if r.kind == OK]
    lost = sum(1 for r in sent if r.kind == LOST)
    answered = [r for r in sent if r.latency_s is not None]
    errors = Counter(r.kind for r in answered if r.kind != OK)

    # Rates are measured from the run's start to the last send or the last answer.
    last_send_s = max((r.send_s for r in sent if r.send_s is not None), default=0.0)
    last_answer_s = max(
        (
            r.send_s + r.latency_s
            for r in answered
            if r.send_s is not None and r.latency_s is not None
        ),
        default=0.0,
    )
    scheduled = [r for r in records if r.scheduled_s is not None]
    open_loop = bool(scheduled)
    lags_s = [
        r.send_s - r.scheduled_s
        for r in scheduled
        if r.send_s is not None and r.scheduled_s is not None
    ]

    clouds = Counter(r.cloud or "unknown" for r in ok)
    latency_ms = _scaled(
        percentiles([r.latency_s for r in ok if r.latency_s is not None]), 1e3
    )
    slo: dict[str, Any] | None = None
    if slo_ms is not None:
        within = sum(
            1 for r in ok if r.latency_s is not None and r.latency_s * 1e3 <= slo_ms
        )
        slo = {"slo_ms": slo_ms, "attainment": within / len(sent) if sent else None}

    return {
        "mode": "open_loop" if open_loop else "closed_loop",
        "protocols": sorted({r.protocol for r in records}),
        "requests": {
            "planned": len(records),
            "sent": len(sent),
            "ok": len(ok),
            "failed": sum(errors.values()),
            "lost": lost,
            "not_sent": len(records) - len(sent),
        },
        "texts_sent": int(sum(r.num_texts for r in sent)),
        "offered_rps": len(scheduled) / duration_s
        if open_loop and duration_s
        else None,
        "sent_rps": len(sent) / last_send_s if last_send_s > 0 else None,
        "throughput_rps": len(ok) / last_answer_s if last_answer_s > 0 else None,
        "texts_per_s": (
            sum(r.num_texts for r in ok) / last_answer_s if last_answer_s > 0 else None
        ),
        "latency_ms": latency_ms,
        "errors_by_kind": dict(sorted(errors.items())),
        "lost": lost,
        "share_per_cloud": {c: n / len(ok) for c, n in sorted(clouds.items())},
        "slo": slo,
        "send_lag_ms": _scaled(percentiles(lags_s), 1e3) if open_loop else None,
        "metrics": {
            "available": metrics_available,
            **_replicas_summary(scrapes or []),
        },
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_report(summary: dict[str, Any]) -> str:
    """A few lines for a terminal or a text file."""
    req = summary["requests"]
    lat = summary["latency_ms"]
    lines = [
        f"mode {summary['mode']}, protocol {', '.join(summary['protocols'])}",
        f"requests: planned {req['planned']}, sent {req['sent']}, ok {req['ok']}, "
        f"failed {req['failed']}, lost {req['lost']}, not sent {req['not_sent']}",
        f"rates: offered {_fmt(summary['offered_rps'])} rps, sent "
        f"{_fmt(summary['sent_rps'])} rps, ok {_fmt(summary['throughput_rps'])} rps "
        f"({_fmt(summary['texts_per_s'])} texts/s)",
        f"latency ms (ok): p50 {_fmt(lat['p50'], 2)}, p90 {_fmt(lat['p90'], 2)}, "
        f"p99 {_fmt(lat['p99'], 2)}, p99.9 {_fmt(lat['p99_9'], 2)}, "
        f"max {_fmt(lat['max'], 2)}",
    ]
    lag = summary["send_lag_ms"]
    if lag is not None:
        lines.append(
            f"send lag ms: p50 {_fmt(lag['p50'], 2)}, p99 {_fmt(lag['p99'], 2)}, "
            f"max {_fmt(lag['max'], 2)}"
        )
    if summary["errors_by_kind"]:
        errors = ", ".join(f"{k} {v}" for k, v in summary["errors_by_kind"].items())
        lines.append(f"errors: {errors}")
    if summary["share_per_cloud"]:
        share = ", ".join(
            f"{c} {100 * s:.1f}%" for c, s in summary["share_per_cloud"].items()
        )
        lines.append(f"share per cloud: {share}")
    if summary["slo"] is not None:
        attained = summary["slo"]["attainment"]
        share = "n/a" if attained is None else f"{100 * attained:.2f}%"
        lines.append(
            f"SLO {summary['slo']['slo_ms']:g} ms attained by {share} of sent requests"
        )
    metrics = summary["metrics"]
    if metrics["samples"]:
        replicas = ", ".join(
            f"{c} mean {v['mean']:.2f} max {v['max']:g}"
            for c, v in metrics["per_cloud"].items()
        )
        lines.append(f"replicas: {replicas or 'none reported'}")
        lines.append(
            f"cost: {_fmt(metrics['cost_usd'], 6)} USD over the run "
            f"(mean {_fmt(metrics['cost_usd_per_hour_mean'], 3)} USD/h)"
        )
    elif metrics["available"] is not None:
        lines.append("replicas and cost: /metrics not available")
    return "\n".join(lines) + "\n"
