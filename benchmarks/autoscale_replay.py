"""The live autoscaling replay, offline: many schedules through the pure autoscaler.

`benchmarks/autoscale_live.py` replays one schedule against the real gateway, a few
minutes a run, and one schedule of ~700 requests is noisy. This replays the same
trace window with the same settings (configs/local.yaml, the live benchmark's
floors, caps and compressed delays) through `router.autoscaler.Autoscaler` alone,
built as the gateway builds it, for many seeds of the schedule, in seconds:

- every `--step-s` the requests sent in that step are counted into the
  autoscaler, as the gateway's replicas report them;
- every decision interval it decides; a replica asked for is running
  `--ready-s` later (the live replicas start in a few seconds on this machine),
  one taken away stops at once;
- replica-hours = sum of running replicas x step / 3600.

It says nothing about latency (no requests are served); it shows where the policy
spends replica-hours, and compares it with a hindsight count: for each decision
interval, the fewest whole replicas (cheapest clouds first, as the autoscaler's
capacity tables give them) that carry the rate seen in the 10 s around it.
The gateway's default sizes the forecast margin by an overload budget, the SLO's
miss allowance (0.01 at its 0.99 quantile): the expected share of requests above
capacity. A second arm runs the upper bound without its provisional margin
(router.autoscaler_bound: the forecaster's own bound until 30 errors are learnt, as
before the margin came); a third sizes the margin by the 0.95 quantile of the
errors (`overload_budget: null`, the default before).

    python benchmarks/autoscale_replay.py [--seeds 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import autoscale_live as live  # noqa: E402 - the live benchmark's settings

from gateway.autoscaling import SnapshotClock, build_fleet, model_shape  # noqa: E402
from loadtest.arrivals import load_trace, trace_schedule  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
HINDSIGHT_WINDOW_S = 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--step-s", type=float, default=0.5)
    parser.add_argument("--ready-s", type=float, default=5.0)
    parser.add_argument("--out", default=str(RESULTS / "autoscale_replay.json"))
    return parser.parse_args()


def live_args() -> argparse.Namespace:
    """The live benchmark's defaults (its own parser, no arguments)."""
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        return live.parse_args()
    finally:
        sys.argv = argv


def replay(
    config: Any,
    shape: Any,
    offsets_s: np.ndarray,
    settings: argparse.Namespace,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One schedule through a fresh autoscaler; replica-hours and the hindsight."""
    clock = SnapshotClock(0.0)
    autoscaler = build_fleet(config, live.MODEL, clock, shape).autoscaler
    names = [c.name for c in config.clouds]
    running = {c.name: c.min_replicas for c in config.clouds}
    starting: dict[str, tuple[float, int]] = {}
    decide_every = round(config.autoscaler["decision_interval_s"] / args.step_s)
    duration_s = settings.duration_s
    replica_s = hindsight_s = 0.0
    sent = 0
    for step in range(1, round(duration_s / args.step_s) + 1):
        now_s = step * args.step_s
        clock.now_s = now_s
        arrived = int(np.searchsorted(offsets_s, now_s, side="right")) - sent
        sent += arrived
        if arrived:
            texts = arrived * settings.texts_per_request
            autoscaler.observe(arrived, texts, texts * 12)
        for name, (ready_s, count) in list(starting.items()):
            if now_s >= ready_s:
                running[name] = count
                del starting[name]
        if step % decide_every == 0:
            decision = autoscaler.decide(dict(running))
            for name in names:
                target = decision.targets[name]
                if target < running[name]:
                    running[name] = target
                    starting.pop(name, None)
                elif target > running[name] and name not in starting:
                    starting[name] = (now_s + args.ready_s, target)
            hindsight_s = hindsight_s + decide_every * args.step_s * fewest_replicas(
                autoscaler, names, config, offsets_s, now_s
            )
        replica_s += sum(running.values()) * args.step_s
    return {"replica_hours": replica_s / 3600, "hindsight_hours": hindsight_s / 3600}


def fewest_replicas(
    autoscaler: Any, names: list[str], config: Any, offsets_s: np.ndarray, now_s: float
) -> int:
    """Fewest whole replicas over the clouds (floors kept) that carry the rate
    seen in the window around `now_s`, by the autoscaler's capacity tables."""
    half = HINDSIGHT_WINDOW_S / 2
    seen = np.count_nonzero((offsets_s >= now_s - half) & (offsets_s < now_s + half))
    rate_rps = seen / HINDSIGHT_WINDOW_S
    limits = {c.name: (c.min_replicas, c.max_replicas) for c in config.clouds}
    best: int | None = None
    for counts in np.ndindex(*(hi + 1 for _, hi in limits.values())):
        if any(n < limits[name][0] for name, n in zip(names, counts, strict=True)):
            continue
        carried = sum(
            autoscaler.capacity_rps(name, n)
            for name, n in zip(names, counts, strict=True)
        )
        if carried >= rate_rps and (best is None or sum(counts) < best):
            best = sum(counts)
    return best if best is not None else sum(hi for _, hi in limits.values())


def run_arm(
    settings: argparse.Namespace,
    args: argparse.Namespace,
    trace: Any,
    ablate: bool,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Every seed's schedule through a fresh autoscaler; `ablate` runs the upper
    bound without its provisional margin, `overrides` set autoscaler settings."""
    from router.autoscaler_bound import UpperTracker

    config = live.bench_config(settings, "bertgw", None, overrides)
    shape = model_shape(config, live.MODEL)
    without = mock.patch.object(UpperTracker, "_provisional_margin", lambda _: None)
    runs = []
    with without if ablate else contextlib.nullcontext():
        for seed in range(args.seeds):
            offsets_s = trace_schedule(
                trace,
                duration_s=settings.duration_s,
                rng=np.random.default_rng(seed),
                window_min=settings.window_min,
                start_min=settings.start_min,
                target_rps=settings.mean_rps,
            )
            one = replay(config, shape, np.sort(offsets_s), settings, args)
            runs.append({"seed": seed, **one})
    hours = [r["replica_hours"] for r in runs]
    return {
        "replica_hours_mean": round(statistics.fmean(hours), 4),
        "replica_hours_sd": round(statistics.pstdev(hours), 4),
        "hindsight_hours_mean": round(
            statistics.fmean(r["hindsight_hours"] for r in runs), 4
        ),
        "runs": runs,
    }


# (key, ablate the provisional margin, autoscaler overrides, label)
ARMS: tuple[tuple[str, bool, dict[str, Any], str], ...] = (
    ("ours", False, {}, "ours (margin by an overload budget of 0.01)"),
    (
        "without_provisional_margin",
        True,
        {},
        "ours, the forecaster's own bound until 30 errors are learnt",
    ),
    (
        "quantile_margin",
        False,
        {"overload_budget": None},
        "ours, margin by the 0.95 quantile of the errors (autoscale_live "
        "--overload-budgets none)",
    ),
)


def main() -> int:
    args = parse_args()
    if not live.TRACE.exists():
        print("autoscale_replay: shared data not found; nothing measured")
        return 2
    settings = live_args()
    trace = load_trace(live.TRACE)
    arms = {
        name: run_arm(settings, args, trace, ablate, overrides)
        for name, ablate, overrides, _ in ARMS
    }
    result = {
        "benchmark": "autoscale_replay",
        "command": f"python benchmarks/autoscale_replay.py --seeds {args.seeds} "
        f"--step-s {args.step_s} --ready-s {args.ready_s}",
        "seeds": args.seeds,
        "step_s": args.step_s,
        "ready_s": args.ready_s,
        "hindsight_window_s": HINDSIGHT_WINDOW_S,
        "arms": arms,
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "| arm | replica-hours, mean | sd | hindsight whole replicas, mean |",
        "|---|---:|---:|---:|",
    ]
    for name, _, _, label in ARMS:
        arm = arms[name]
        rows.append(
            f"| {label} | {arm['replica_hours_mean']:.4f} | "
            f"{arm['replica_hours_sd']:.4f} | {arm['hindsight_hours_mean']:.4f} |"
        )
    table = "\n".join(rows) + "\n"
    out.with_suffix(".md").write_text(
        "# Live autoscaling replay, offline: the pure autoscaler, many schedules\n\n"
        f"Command: `{result['command']}`\n\n{table}"
    )
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
