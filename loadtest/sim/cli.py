"""`bertgw simulate`: run setups on real traces in the simulator and compare them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from loadtest.sim.catalog import default_data_dir
from loadtest.sim.compare import compare, markdown, plot, rows
from loadtest.sim.engine import EngineSettings
from loadtest.sim.scenario import Outage, build_scenario
from loadtest.sim.setups import SETUPS
from loadtest.sim.traces import TRACE_FILES, load_token_lengths, load_trace

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        action="append",
        choices=sorted(TRACE_FILES),
        help="trace to replay (repeatable; default: worldcup98)",
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=sorted(SETUPS),
        help="setup to simulate (repeatable; default: all)",
    )
    parser.add_argument("--rps", type=float, default=20_000.0, help="mean requests/s")
    parser.add_argument(
        "--hours",
        type=float,
        default=24.0,
        help="simulated hours (the Azure traces hold about 48 minutes after warm-up)",
    )
    parser.add_argument(
        "--slo-ms", type=float, default=150.0, help="latency SLO of a request"
    )
    parser.add_argument(
        "--quantile",
        type=float,
        default=0.999,
        help="share of requests the SLO asks to answer within --slo-ms",
    )
    parser.add_argument(
        "--efficiency",
        type=float,
        default=0.3,
        help="sustained share of FP16 peak assumed for every GPU (not measured here)",
    )
    parser.add_argument(
        "--provisioning-s",
        type=float,
        default=180.0,
        help="from a replica's launch until it serves (billed from the engine "
        "step after the launch)",
    )
    parser.add_argument(
        "--preemptions-per-replica-hour",
        type=float,
        default=0.01,
        help="spot preemption rate (benchmarks/simulation.py uses 0.05 and a "
        "regional outage, so its figures differ from a run of this command as is)",
    )
    parser.add_argument(
        "--outage",
        action="append",
        default=[],
        metavar="REGION:START_S:END_S",
        help="a regional outage, seconds into the window (repeatable)",
    )
    parser.add_argument("--dt-s", type=float, default=5.0, help="engine step")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of preemptions and the routers' random choices",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the shared data folder"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write <out>.json, <out>.md and <out>_<trace>.png",
    )


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "traces").is_dir():
        print(f"no traces under {data_dir}", file=sys.stderr)
        return 2
    outages = tuple(_parse_outage(text) for text in args.outage)
    scenario = build_scenario(
        data_dir,
        lengths_tokens=load_token_lengths(data_dir / "traces", 512),
        slo_ms=args.slo_ms,
        quantile=args.quantile,
        efficiency=args.efficiency,
        outages=outages,
        provisioning_s=args.provisioning_s,
        preemptions_per_replica_hour=args.preemptions_per_replica_hour,
    )
    settings = EngineSettings(dt_s=args.dt_s, seed=args.seed)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    setups = args.policy or list(SETUPS)
    blocks = {}
    for name in args.trace or ["worldcup98"]:
        trace = load_trace(
            name,
            data_dir / "traces",
            target_mean_rps=args.rps,
            sim_days=args.hours / 24.0,
            warmup_days=3.0,
        )
        window_s = int(args.hours * 3600)
        if window_s < trace.sim_s:
            trace = replace(
                trace, rates_rps=trace.rates_rps[: trace.warmup_s + window_s]
            )
        comparison = compare(scenario, trace, setups, settings)
        blocks[name] = rows(comparison)
        if args.out is not None:
            plot(comparison, args.out.with_name(f"{args.out.name}_{name}.png"))
    table = markdown(blocks)
    print(table, end="")
    if args.out is not None:
        document = {
            "command": "bertgw " + " ".join(sys.argv[1:]),
            "scenario": scenario.describe(),
            "traces": blocks,
        }
        args.out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table)
    return 0


def _parse_outage(text: str) -> Outage:
    try:
        region, start, end = text.split(":")
        return Outage(region, float(start), float(end))
    except ValueError:
        raise SystemExit(
            f"--outage must be REGION:START_S:END_S, got {text!r}"
        ) from None
