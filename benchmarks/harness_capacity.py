"""How fast can the load harness itself go? Open-loop ladder against no-op servers.

For each protocol and each number of generator processes, offers a rising constant
Poisson rate for a few seconds at a time to the no-op server (a separate process on
127.0.0.1; client and server share this machine's cores) and keeps the highest rate
at which the harness still keeps up:

    achieved ok rate >= 98 % of the offered rate, p99 send lag <= the limit,
    zero errors and zero lost requests.

Prints a markdown table and writes benchmarks/results/harness_capacity.{json,md}.

    python benchmarks/harness_capacity.py
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.arrivals import shape_schedule
from loadtest.machine import describe as describe_machine
from loadtest.noop_server import NoopServerProcess
from loadtest.plan import build_plan, load_texts, parse_mix
from loadtest.protocols import TargetConfig
from loadtest.runner import RunLimits, run_load
from loadtest.summary import summarize

REPO_ROOT = Path(__file__).resolve().parent.parent

RESULTS = REPO_ROOT / "benchmarks" / "results"
TEXT_SOURCES = (
    REPO_ROOT.parent / "shared" / "data" / "intent" / "banking77_test.csv",
    REPO_ROOT / "data" / "demo_intents" / "test.csv",
)
ACHIEVED_RATIO = 0.98


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocols", default="http-oip,grpc")
    parser.add_argument(
        "--shards", default="1,2", help="generator processes to compare"
    )
    parser.add_argument(
        "--rates",
        default="1000,1500,2000,2500,3000,3500,4000,5000,6000",
        help="offered rps",
    )
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--lag-limit-ms", type=float, default=10.0, help="p99 send lag")
    parser.add_argument("--text-mix", default="1:1")
    parser.add_argument("--http-connections", type=int, default=64)
    parser.add_argument("--grpc-channels", type=int, default=2)
    parser.add_argument("--trials", type=int, default=2, help="tries per rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "harness_capacity.json"))
    return parser.parse_args()


def run_step(
    server: NoopServerProcess,
    protocol: str,
    shards: int,
    rate_rps: float,
    texts: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    offsets_s = shape_schedule(
        "constant", duration_s=args.step_s, mean_rps=rate_rps, rng=rng
    )
    plan = build_plan(
        num_requests=0,
        pool_size=len(texts),
        mix=parse_mix(args.text_mix),
        rng=rng,
        offsets_s=offsets_s,
    )
    url = server.grpc_target if protocol == "grpc" else server.http_url
    target = TargetConfig(
        protocol=protocol,
        url=url,
        model="demo-intents",
        connections=args.grpc_channels if protocol == "grpc" else args.http_connections,
    )
    load_before = os.getloadavg()[0]
    result = run_load(
        target,
        plan,
        texts,
        limits=RunLimits(max_duration_s=args.step_s + 5.0, drain_timeout_s=10.0),
        shards=shards,
    )
    summary = summarize(result.records, duration_s=args.step_s, slo_ms=None)
    offered = summary["offered_rps"]
    achieved = summary["throughput_rps"] or 0.0
    lag_p99_ms = summary["send_lag_ms"]["p99"]
    errors = sum(summary["errors_by_kind"].values())
    passed = (
        achieved >= ACHIEVED_RATIO * offered
        and lag_p99_ms is not None
        and lag_p99_ms <= args.lag_limit_ms
        and errors == 0
        and summary["lost"] == 0
        and summary["requests"]["not_sent"] == 0
    )
    return {
        "protocol": protocol,
        "shards": shards,
        "nominal_rps": rate_rps,
        "offered_rps": offered,
        "achieved_rps": achieved,
        "achieved_ratio": achieved / offered if offered else None,
        "requests": summary["requests"]["planned"],
        "errors": errors,
        "errors_by_kind": summary["errors_by_kind"],
        "lost": summary["lost"],
        "latency_p50_ms": summary["latency_ms"]["p50"],
        "latency_p99_ms": summary["latency_ms"]["p99"],
        "send_lag_p50_ms": summary["send_lag_ms"]["p50"],
        "send_lag_p99_ms": lag_p99_ms,
        "loadavg_1m_before": load_before,
        "wall_s": result.wall_s,
        "passed": passed,
    }


def markdown(rows: list[dict[str, Any]], max_rps: dict[str, Any]) -> str:
    def fmt(value: float | None, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "| protocol | shards | offered rps | achieved rps | ratio | p50 ms | p99 ms "
        "| lag p99 ms | errors | lost | try | pass |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['shards']} | {fmt(r['offered_rps'])} "
            f"| {fmt(r['achieved_rps'])} | {fmt(r['achieved_ratio'], 3)} "
            f"| {fmt(r['latency_p50_ms'], 2)} | {fmt(r['latency_p99_ms'], 2)} "
            f"| {fmt(r['send_lag_p99_ms'], 2)} | {r['errors']} | {r['lost']} "
            f"| {r.get('trial', 0) + 1} | {'yes' if r['passed'] else 'no'} |"
        )
    lines.append("")
    lines.append("| protocol | max_rps | with shards |")
    lines.append("|---|---|---|")
    for protocol, best in max_rps.items():
        lines.append(f"| {protocol} | {fmt(best['max_rps'], 0)} | {best['shards']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    protocols = args.protocols.split(",")
    shard_counts = [int(s) for s in args.shards.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    source = next((p for p in TEXT_SOURCES if p.exists()), None)
    if source is None:
        print("no text data found (BANKING77 test split or demo data)", file=sys.stderr)
        return 2
    texts = load_texts(source)

    rows: list[dict[str, Any]] = []
    started = time.time()
    for protocol in protocols:
        with NoopServerProcess(
            http=protocol != "grpc", grpc=protocol == "grpc"
        ) as server:
            for shards in shard_counts:
                failures_in_a_row = 0
                for rate in rates:
                    # Another process on the machine can stall a trial; a rate
                    # passes when any of its trials does (all are recorded).
                    for trial in range(args.trials):
                        row = run_step(server, protocol, shards, rate, texts, args)
                        row["trial"] = trial
                        rows.append(row)
                        print(
                            f"{protocol} shards={shards} "
                            f"offered={row['offered_rps']:.0f} "
                            f"achieved={row['achieved_rps']:.0f} "
                            f"lag_p99_ms={row['send_lag_p99_ms']:.2f} "
                            f"errors={row['errors']} pass={row['passed']}",
                            flush=True,
                        )
                        if row["passed"]:
                            break
                    # Two failed rates in a row: higher rates will not pass either.
                    failures_in_a_row = 0 if row["passed"] else failures_in_a_row + 1
                    if failures_in_a_row == 2:
                        break

    max_rps: dict[str, Any] = {}
    for protocol in protocols:
        passing = [r for r in rows if r["protocol"] == protocol and r["passed"]]
        best = max(passing, key=lambda r: r["offered_rps"], default=None)
        max_rps[protocol] = {
            "max_rps": None if best is None else best["offered_rps"],
            "shards": None if best is None else best["shards"],
            "by_shards": {
                str(s): max(
                    (r["offered_rps"] for r in passing if r["shards"] == s),
                    default=None,
                )
                for s in shard_counts
            },
        }

    result = {
        "benchmark": "harness_capacity",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started_unix_s": started,
        "method": (
            "Open-loop constant-rate Poisson arrivals for step_s seconds per offered "
            "rate, rising; the no-op server (loadtest/noop_server.py) runs in its own "
            "process on 127.0.0.1 and answers a valid OIP v2 response at once. A rate "
            f"passes when the ok rate >= {ACHIEVED_RATIO:.0%} of the offered rate "
            "(offered = scheduled requests / step_s; achieved = ok answers / time of "
            "the last answer), the p99 send lag (actual minus scheduled send time) is "
            "within lag_limit_ms, and no request failed or was lost. max_rps is the "
            "highest passing offered rate. Each rate gets up to `trials` tries and "
            "passes if one does (other processes on the machine can stall a try); the "
            "ladder stops after two failed rates in a row. "
            "Client and server share the machine's cores."
        ),
        "criteria": {
            "achieved_ratio_min": ACHIEVED_RATIO,
            "lag_p99_limit_ms": args.lag_limit_ms,
            "errors": 0,
            "lost": 0,
        },
        "settings": {
            "step_s": args.step_s,
            "rates": rates,
            "shards": shard_counts,
            "text_mix": args.text_mix,
            "texts": source.name,
            "http_connections": args.http_connections,
            "grpc_channels": args.grpc_channels,
            "seed": args.seed,
            "trials": args.trials,
        },
        "machine": describe_machine(),
        "max_rps": {p: v["max_rps"] for p, v in max_rps.items()},
        "max_rps_detail": max_rps,
        "steps": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows, max_rps)
    out.with_suffix(".md").write_text(
        "# Harness capacity against no-op servers\n\n"
        f"Command: `{result['command']}`\n\n{table}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
