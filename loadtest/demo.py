"""`bertgw demo`: the main job end to end on this machine.

Fine-tunes the demo intent model (cached), serves it with configs/local.yaml (three
emulated clouds on a local Ray node bound to 127.0.0.1), checks the served labels
over HTTP and gRPC, replays real arrivals with real texts through both protocols at
once (half the rate each), then stops everything and reports throughput, latency,
errors, lost requests, share per cloud, replicas and cost. Writes summary.json,
records.jsonl, report.txt and plots into `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "local.yaml"
DEFAULT_DURATION_S = 120.0
QUICK_DURATION_S = 20.0
# Mean offered rate, below what this 2-core machine serves within the SLO with
# every cloud at one replica (benchmarks/results/demo_report.json shows the run).
DEFAULT_RATE_RPS = 8.0
DEFAULT_MODEL = "demo-intents"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="deployment YAML (default: the repository's configs/local.yaml)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help=f"replay length (default {DEFAULT_DURATION_S:g}; "
        f"{QUICK_DURATION_S:g} with --quick)",
    )
    parser.add_argument(
        "--rate-rps",
        type=float,
        default=DEFAULT_RATE_RPS,
        help="mean requests/s over both protocols together",
    )
    parser.add_argument("--quick", action="store_true", help="a short run, e.g. for CI")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/demo-TIME)"
    )
    parser.add_argument("--http-port", type=int, default=None, help="override")
    parser.add_argument("--grpc-port", type=int, default=None, help="override")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="traffic at the demo's mean rate before the measured replay, left out "
        "of the report (default 20; 5 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout-s", type=float, default=10.0, help="per request, client side"
    )
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--drain-timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="also copy the summary and plots here as demo_report.json and "
        "demo_*.png (e.g. benchmarks/results)",
    )


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.errors import ConfigError
    from replicas.finetune import DEMO_MODEL_DIR, ensure_demo_model

    duration_s = args.duration_s or (
        QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    )
    out_dir = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"bertgw demo: {exc.message}", file=sys.stderr)
        return 2
    if config.model(args.model) is None:
        print(f"bertgw demo: {args.config} serves no model {args.model!r}")
        return 2

    started_s = time.monotonic()
    # progress bars only for a person watching, not into a log file
    model_dir = ensure_demo_model(DEMO_MODEL_DIR, progress=sys.stderr.isatty())
    print(f"demo: model {model_dir} ready in {time.monotonic() - started_s:.1f} s")
    demo, records, scrapes, metrics_text = _run_gateway(args, config, duration_s)

    from loadtest.demo_report import publish, render, write_outputs

    demo["run"].update(
        command=shlex.join(["bertgw", *sys.argv[1:]]),
        model_card_test_accuracy=_card_accuracy(model_dir),
        cpu_count=os.cpu_count(),
        total_wall_s=time.monotonic() - started_s,
    )
    plots = write_outputs(demo, records, scrapes, out_dir)
    if metrics_text is not None:
        # The gateway's own view (request and replica histograms) at the end.
        (out_dir / "metrics.prom").write_text(metrics_text)
    print(render(demo), end="")
    print(f"demo: results in {out_dir} ({', '.join(p.name for p in plots)})")
    if args.results_dir is not None:
        written = publish(out_dir, args.results_dir)
        print(f"demo: published {', '.join(str(p) for p in written)}")
    return 0 if demo["verdict"]["passed"] else 1


def _run_gateway(
    args: argparse.Namespace, config: Any, duration_s: float
) -> tuple[dict[str, Any], list[Any], list[Any], str | None]:
    """Starts the gateway, checks labels, replays the traffic, always stops it."""
    from loadtest import demo_gateway as gw
    from loadtest.demo_report import build_summary
    from loadtest.demo_traffic import (
        DEMO_TEST_CSV,
        TEXT_MIX,
        choose_source,
        demo_plan,
        replay_both,
        warm_up,
    )
    from loadtest.driver import RunLimits
    from loadtest.protocols import TargetConfig

    config = gw.with_ports(config, args.http_port, args.grpc_port)
    rng = np.random.default_rng(args.seed)
    source = choose_source(duration_s=duration_s, rate_rps=args.rate_rps, rng=rng)
    plan = demo_plan(source, rng)
    targets = [
        TargetConfig("http-oip", gw.http_url(config), args.model, args.timeout_s),
        TargetConfig("grpc", gw.grpc_target(config), args.model, args.timeout_s),
    ]

    handle = None
    cut_off = 0
    try:
        print(f"demo: starting the gateway ({args.config.name}) on 127.0.0.1 ...")
        ready_started_s = time.monotonic()
        handle = gw.start_gateway(config, args.ready_timeout_s)
        ready_s = time.monotonic() - ready_started_s
        print(
            f"demo: gateway ready in {ready_s:.1f} s: HTTP {gw.http_url(config)}, "
            f"gRPC {gw.grpc_target(config)}"
        )
        labels = gw.check_labels(config, args.model, gw.read_labelled(DEMO_TEST_CSV))
        # First batches in fresh replicas and proxies are slow; keep them out of
        # the measured run, as every benchmark here does.
        warmup_s = (
            args.warmup_s
            if args.warmup_s is not None
            else (5.0 if args.quick else 20.0)
        )
        print(f"demo: warming up for {warmup_s:g} s ...")
        warmup = warm_up(targets, source.texts, warmup_s, len(plan) / duration_s, rng)
        print(
            f"demo: replaying {len(plan)} requests over {duration_s:g} s "
            f"({source.arrivals_from}) through HTTP and gRPC ..."
        )
        traffic = replay_both(
            targets,
            plan,
            source.texts,
            limits=RunLimits(max_duration_s=duration_s, drain_timeout_s=10.0),
            metrics_url=f"{gw.http_url(config)}/metrics",
        )
        metrics_text = gw.fetch_metrics(config)
    finally:
        print("demo: stopping the gateway ...")
        cut_off = gw.stop_gateway(handle, args.drain_timeout_s)
    processes_left = gw.wait_children_gone()

    demo = build_summary(
        traffic.records,
        duration_s=duration_s,
        slo_ms=config.slo.latency_ms,
        scrapes=traffic.scrapes,
        metrics_available=traffic.metrics_available,
    )
    demo["verdict"]["checks"]["clean_shutdown"] = cut_off == 0 and not processes_left
    demo["verdict"]["passed"] = all(demo["verdict"]["checks"].values())
    demo["label_check"] = labels.as_dict()
    demo["warmup"] = warmup
    demo["shutdown"] = {"cut_off_requests": cut_off, "processes_left": processes_left}
    demo["run"] = {
        "config": str(_shown_path(args.config)),
        "clouds": [c.name for c in config.clouds],
        "model": args.model,
        "slo_ms": config.slo.latency_ms,
        "slo_quantile": config.slo.quantile,
        "protocols": [t.protocol for t in targets],
        "http_port": config.http.port,
        "grpc_port": config.grpc.port,
        "duration_s": duration_s,
        "rate_rps": args.rate_rps,
        "seed": args.seed,
        "shared_data": source.shared_data,
        "arrivals_from": source.arrivals_from,
        "texts_from": source.texts_from,
        "text_mix": TEXT_MIX,
        "planned_requests": len(plan),
        "gateway_ready_s": ready_s,
        "replay_wall_s": traffic.wall_s,
    }
    return demo, traffic.records, traffic.scrapes, metrics_text


def _shown_path(path: Path) -> Path:
    """Relative to the repository when inside it, so no machine path is recorded."""
    try:
        return path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return path


def _card_accuracy(model_dir: Path) -> float | None:
    try:
        card = json.loads((model_dir / "model_card.json").read_text())
        return float(card["metrics"]["test_accuracy"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
