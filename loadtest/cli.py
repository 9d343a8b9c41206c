"""`bertgw loadtest`: replay a trace or a synthetic shape against a gateway.

Writes into `--out`: records.jsonl (one line per planned request), summary.json,
report.txt and PNG plots. Every run is capped in requests and in time.
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

from loadtest import arrivals
from loadtest.plan import build_plan, load_texts, parse_mix
from loadtest.protocols import (
    DEFAULT_GRPC_CHANNELS,
    DEFAULT_HTTP_CONNECTIONS,
    PROTOCOLS,
    TargetConfig,
    is_loopback,
    target_host,
)
from loadtest.records import write_records
from loadtest.runner import RunLimits, run_load
from loadtest.summary import render_report, summarize

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEXTS = REPO_ROOT / "data" / "demo_intents" / "test.csv"
DEFAULT_SLO_MS = 100.0
TOKEN_ENV = "BERTGW_TOKEN"
_REDACTED_FLAGS = ("--token",)


def configure(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--protocol", choices=PROTOCOLS, default="http-oip")
    target.add_argument("--url", default="http://127.0.0.1:8000", help="HTTP base URL")
    target.add_argument(
        "--grpc-target", default="127.0.0.1:9000", help="gRPC host:port"
    )
    target.add_argument("--model", default="demo-intents")
    target.add_argument("--timeout-s", type=float, default=10.0, help="per request")
    target.add_argument(
        "--send-deadline",
        action="store_true",
        help="send the timeout as x-bertgw-timeout-ms (gRPC always sends a deadline)",
    )
    target.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token (or ${TOKEN_ENV})",
    )
    target.add_argument("--allowed-regions", help="comma-separated region names")
    target.add_argument(
        "--header", action="append", default=[], help="NAME=VALUE, repeatable"
    )
    target.add_argument("--return-probabilities", action="store_true")
    target.add_argument("--input-name", default="text", help="OIP input tensor name")
    target.add_argument(
        "--grpc-raw", action="store_true", help="use raw_input_contents"
    )
    target.add_argument(
        "--http-connections",
        type=int,
        default=DEFAULT_HTTP_CONNECTIONS,
        help="HTTP keep-alive pool per process; when all are busy, requests wait "
        "(that wait counts as latency)",
    )
    target.add_argument(
        "--grpc-channels", type=int, default=DEFAULT_GRPC_CHANNELS, help="per process"
    )
    target.add_argument(
        "--template", help="JSON body template file ({{texts}}, {{model}})"
    )
    target.add_argument("--template-path", default="/", help="URL path for --template")
    target.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a target that is not loopback (refused by default)",
    )

    load = parser.add_argument_group("load")
    source = load.add_mutually_exclusive_group()
    source.add_argument("--trace", help="trace CSV (per-request or per-bin counts)")
    source.add_argument("--shape", choices=arrivals.SHAPES, default="constant")
    source.add_argument(
        "--closed-loop", type=int, metavar="N", help="N workers instead of a schedule"
    )
    load.add_argument("--duration-s", type=float, default=60.0)
    load.add_argument("--target-rps", type=float, help="mean rate (needed for shapes)")
    load.add_argument(
        "--window-min", type=float, help="trace minutes played in duration"
    )
    load.add_argument("--trace-start-min", type=float, default=0.0)
    load.add_argument("--process", choices=arrivals.PROCESSES, default="poisson")
    params = arrivals.ShapeParams()
    for name in params.__dataclass_fields__:
        load.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(params, name)
        )
    load.add_argument(
        "--texts",
        default=str(DEFAULT_TEXTS),
        help="CSV with a text column (default: the repository's "
        "data/demo_intents/test.csv)",
    )
    load.add_argument("--text-column", default="text")
    load.add_argument(
        "--text-mix", default="1:1", help="texts:weight, e.g. 1:0.8,4:0.2"
    )
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--max-requests", type=int, default=200_000, help="hard cap")
    load.add_argument("--drain-timeout-s", type=float, default=10.0)
    load.add_argument("--shards", type=int, default=1, help="worker processes")

    out = parser.add_argument_group("results")
    out.add_argument("--out", default="runs/loadtest", help="output folder")
    out.add_argument(
        "--slo-ms",
        type=float,
        help=f"latency SLO for attainment (default: the --config file's, else "
        f"{DEFAULT_SLO_MS:g})",
    )
    out.add_argument(
        "--config", help="the gateway's YAML config, to take its SLO (slo.latency_ms)"
    )
    out.add_argument(
        "--metrics-url",
        help="Prometheus endpoint to scrape ('none' to skip); default: <url>/metrics",
    )
    out.add_argument("--scrape-interval-s", type=float, default=1.0)
    out.add_argument("--no-plots", action="store_true")
    out.add_argument("--no-progress", action="store_true")


def slo_ms(args: argparse.Namespace) -> float:
    """--slo-ms, else the gateway config's SLO, else the default."""
    if args.slo_ms is not None:
        return float(args.slo_ms)
    if args.config:
        from gateway.config import load_config
        from gateway.errors import ConfigError

        try:
            return load_config(args.config).slo.latency_ms
        except ConfigError as error:
            raise ValueError(str(error)) from error
    return DEFAULT_SLO_MS


def redacted_command(argv: list[str]) -> str:
    """The command line with secrets replaced, for the summary."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("REDACTED")
            hide_next = False
        elif arg in _REDACTED_FLAGS:
            shown.append(arg)
            hide_next = True
        elif any(arg.startswith(flag + "=") for flag in _REDACTED_FLAGS):
            shown.append(arg.split("=", 1)[0] + "=REDACTED")
        else:
            shown.append(arg)
    return shlex.join(["bertgw", *shown])


def target_config(args: argparse.Namespace) -> TargetConfig:
    headers: list[tuple[str, str]] = []
    if args.token:
        headers.append(("authorization", f"Bearer {args.token}"))
    if args.allowed_regions:
        headers.append(("x-bertgw-allowed-regions", args.allowed_regions))
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--header {item!r} is not NAME=VALUE")
        headers.append((name.strip().lower(), value))
    template = Path(args.template).read_text() if args.template else None
    return TargetConfig(
        protocol=args.protocol,
        url=args.grpc_target if args.protocol == "grpc" else args.url,
        model=args.model,
        timeout_s=args.timeout_s,
        headers=tuple(headers),
        return_probabilities=args.return_probabilities,
        input_name=args.input_name,
        template=template,
        template_path=args.template_path,
        grpc_raw=args.grpc_raw,
        send_deadline=args.send_deadline,
        connections=(
            args.grpc_channels if args.protocol == "grpc" else args.http_connections
        ),
    )


def schedule(args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray | None:
    """Send offsets for an open-loop run, or None for a closed loop."""
    if args.closed_loop is not None:
        return None
    if args.trace:
        trace = arrivals.load_trace(args.trace)
        return arrivals.trace_schedule(
            trace,
            duration_s=args.duration_s,
            rng=rng,
            window_min=args.window_min,
            start_min=args.trace_start_min,
            target_rps=args.target_rps,
        )
    if args.target_rps is None:
        raise ValueError("--shape needs --target-rps")
    params = arrivals.ShapeParams(
        **{
            name: getattr(args, name)
            for name in arrivals.ShapeParams.__dataclass_fields__
        }
    )
    return arrivals.shape_schedule(
        args.shape,
        duration_s=args.duration_s,
        mean_rps=args.target_rps,
        rng=rng,
        process=args.process,
        params=params,
    )


def run(args: argparse.Namespace) -> int:
    try:
        target = target_config(args)
        if not args.allow_remote and not is_loopback(target):
            raise ValueError(
                f"target host {target_host(target)!r} is not loopback; "
                "pass --allow-remote to load a remote server"
            )
        texts = load_texts(args.texts, args.text_column)
        mix = parse_mix(args.text_mix)
        rng = np.random.default_rng(args.seed)
        offsets_s = schedule(args, rng)
        slo = slo_ms(args)
    except (OSError, ValueError) as error:
        print(f"bertgw loadtest: {error}", file=sys.stderr)
        return 2

    capped = False
    if offsets_s is not None and len(offsets_s) > args.max_requests:
        logger.warning(
            "event=schedule_capped planned=%d max_requests=%d",
            len(offsets_s),
            args.max_requests,
        )
        offsets_s = offsets_s[: args.max_requests]
        capped = True
    plan = build_plan(
        num_requests=args.max_requests,
        pool_size=len(texts),
        mix=mix,
        rng=rng,
        offsets_s=offsets_s,
    )
    metrics_url = args.metrics_url or f"{args.url.rstrip('/')}/metrics"
    if metrics_url == "none":
        metrics_url = None

    started_unix_s = time.time()
    result = run_load(
        target,
        plan,
        texts,
        limits=RunLimits(
            max_duration_s=args.duration_s, drain_timeout_s=args.drain_timeout_s
        ),
        shards=args.shards,
        concurrency=args.closed_loop,
        metrics_url=metrics_url,
        scrape_interval_s=args.scrape_interval_s,
        show_progress=not args.no_progress,
    )

    summary = summarize(
        result.records,
        duration_s=args.duration_s,
        slo_ms=slo,
        scrapes=result.scrapes,
        metrics_available=result.metrics_available,
    )
    summary["run"] = run_info(args, target, started_unix_s, result.wall_s, capped)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(result.records, out_dir / "records.jsonl")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = render_report(summary)
    if not args.no_plots:
        from loadtest.plots import plot_run

        written = plot_run(result.records, result.scrapes, out_dir)
        report += "plots: " + ", ".join(p.name for p in written) + "\n"
    (out_dir / "report.txt").write_text(report)
    print(report, end="")
    print(f"results in {out_dir}")
    return 0 if summary["lost"] == 0 else 1


def run_info(
    args: argparse.Namespace,
    target: TargetConfig,
    started_unix_s: float,
    wall_s: float,
    capped: bool,
) -> dict[str, Any]:
    """What was run, for the summary: enough to run it again."""
    return {
        "command": redacted_command(sys.argv[1:]),
        "started_unix_s": started_unix_s,
        "wall_s": wall_s,
        "protocol": target.protocol,
        "target": target.url,
        "model": target.model,
        "source": (
            f"closed_loop:{args.closed_loop}"
            if args.closed_loop is not None
            else f"trace:{Path(args.trace).name}"
            if args.trace
            else f"shape:{args.shape}"
        ),
        "duration_s": args.duration_s,
        "target_rps": args.target_rps,
        "window_min": args.window_min,
        "texts": Path(args.texts).name,
        "text_mix": args.text_mix,
        "seed": args.seed,
        "shards": args.shards,
        "max_requests": args.max_requests,
        "capped_by_max_requests": capped,
    }
