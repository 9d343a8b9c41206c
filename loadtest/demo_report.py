"""The demo's report: the harness's summary per protocol and overall, and a verdict.

The verdict holds the demo's promises below capacity: no lost request, no error,
every answer from a named cloud, and p99 latency within the gateway's SLO.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from loadtest.records import OK, Record, write_records
from loadtest.scrape import ScrapeSample
from loadtest.summary import render_report, summarize

logger = logging.getLogger(__name__)

# What plot_run writes -> the name the published copy takes.
PUBLISHED_PLOTS = {
    "latency.png": "demo_latency.png",
    "throughput.png": "demo_throughput.png",
    "cloud_share.png": "demo_share.png",
    "replicas.png": "demo_replicas.png",
}
PUBLISHED_SUMMARY = "demo_report.json"


def build_summary(
    records: list[Record],
    *,
    duration_s: float,
    slo_ms: float,
    scrapes: list[ScrapeSample],
    metrics_available: bool | None,
) -> dict[str, Any]:
    """Overall figures (with replicas and cost), the same per protocol, a verdict."""
    overall = summarize(
        records,
        duration_s=duration_s,
        slo_ms=slo_ms,
        scrapes=scrapes,
        metrics_available=metrics_available,
    )
    by_protocol = {}
    for protocol in sorted({r.protocol for r in records}):
        part = summarize(
            [r for r in records if r.protocol == protocol],
            duration_s=duration_s,
            slo_ms=slo_ms,
        )
        # Replicas and cost belong to the gateway, not to one protocol.
        part.pop("metrics")
        by_protocol[protocol] = part
    return {
        "overall": overall,
        "by_protocol": by_protocol,
        "verdict": verdict(records, overall, slo_ms),
    }


def verdict(
    records: list[Record], overall: dict[str, Any], slo_ms: float
) -> dict[str, Any]:
    """Each promise of the demo, checked, and whether all hold."""
    requests = overall["requests"]
    p99_ms = overall["latency_ms"]["p99"]
    ok_without_cloud = sum(1 for r in records if r.kind == OK and not r.cloud)
    checks = {
        "every_request_sent": requests["not_sent"] == 0,
        "zero_lost": requests["lost"] == 0,
        "zero_errors": requests["failed"] == 0,
        "every_answer_names_a_cloud": ok_without_cloud == 0 and requests["ok"] > 0,
        "p99_within_slo": p99_ms is not None and p99_ms <= slo_ms,
    }
    return {
        "checks": checks,
        "passed": all(checks.values()),
        "slo_ms": slo_ms,
        "p99_ms": p99_ms,
        "ok_without_cloud": ok_without_cloud,
    }


def render(demo: dict[str, Any]) -> str:
    """The text report: what ran, the overall figures, per protocol, the verdict."""
    run = demo["run"]
    lines = [
        "bert-gateway demo",
        f"gateway: {run['config']} ({len(run['clouds'])} emulated clouds: "
        f"{', '.join(run['clouds'])}), SLO p{100 * run['slo_quantile']:g} "
        f"{run['slo_ms']:g} ms",
        f"arrivals: {run['arrivals_from']}, mean {run['rate_rps']:g} rps, split over "
        f"{' and '.join(run['protocols'])}",
        f"texts: {run['texts_from']}",
    ]
    labels = demo.get("label_check")
    if labels:
        lines.append(
            f"label check on {labels['texts']} held-out demo texts: accuracy "
            f"{100 * labels['http_accuracy']:.1f}% (HTTP), "
            f"{100 * labels['grpc_accuracy']:.1f}% (gRPC), model card "
            f"{_percent(run.get('model_card_test_accuracy'))}; protocols agree: "
            f"{labels['protocols_agree']}"
        )
    lines += ["", "overall:", render_report(demo["overall"]).rstrip()]
    for protocol, part in demo["by_protocol"].items():
        lat = part["latency_ms"]
        req = part["requests"]
        lines.append(
            f"{protocol}: sent {req['sent']}, ok {req['ok']}, failed {req['failed']}, "
            f"lost {req['lost']}, p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}"
        )
    verdict_ = demo["verdict"]
    failed = [name for name, held in verdict_["checks"].items() if not held]
    lines += [
        "",
        f"stopped: {demo['shutdown']['cut_off_requests']} request(s) cut off, "
        f"{_count(demo['shutdown']['processes_left'])} process(es) left running",
        "verdict: PASS (zero lost, zero errors, p99 within the SLO)"
        if verdict_["passed"]
        else f"verdict: FAIL ({', '.join(failed)})",
    ]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _count(value: list[int] | None) -> str:
    return "unknown" if value is None else str(len(value))


def write_outputs(
    demo: dict[str, Any],
    records: list[Record],
    scrapes: list[ScrapeSample],
    out_dir: Path,
) -> list[Path]:
    """Writes summary.json, records.jsonl, report.txt and the plots into `out_dir`."""
    from loadtest.plots import plot_run

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(demo, indent=2) + "\n")
    write_records(records, out_dir / "records.jsonl")
    (out_dir / "report.txt").write_text(render(demo))
    return plot_run(records, scrapes, out_dir)


def publish(out_dir: Path, results_dir: Path) -> list[Path]:
    """Copies the summary and plots into `results_dir` under their published names."""
    results_dir.mkdir(parents=True, exist_ok=True)
    written = [results_dir / PUBLISHED_SUMMARY]
    shutil.copyfile(out_dir / "summary.json", written[0])
    for name, published in PUBLISHED_PLOTS.items():
        if (out_dir / name).exists():
            shutil.copyfile(out_dir / name, results_dir / published)
            written.append(results_dir / published)
    return written
