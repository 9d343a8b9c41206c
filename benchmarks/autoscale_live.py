"""Our autoscaler through Ray Serve against Serve's own queue-length autoscaler, live.

Starts the gateway with configs/local.yaml, lets each cloud scale between a floor
and a small `max_replicas` (2-3: this machine has 2 cores), and replays a real
trace (WorldCup98 requests per minute, a 4-hour window around a match, played in a
few minutes, scaled to a mean rate) against it twice with the same schedule: once
with `autoscaling_policy: bertgw` (router.autoscaler through gateway/autoscaling.py)
and once with `ray_default` (Serve's default policy, given the same upscale and
downscale delays, metrics interval and look-back). Serve's policy aims at a number
of requests in flight per replica (`target_ongoing_requests`, 2 by default), but
the ingress coalesces requests into batches and keeps at most two calls in flight
per replica, so at the default target it never scales up; further runs
(`--ray-targets`) give it lower targets, as a user tuning it would.

The floors: GCP, the middle cloud, keeps one replica; the dear near cloud (AWS,
on-demand) and the cheap far one (Azure) may scale to zero. With a floor of one in
every cloud (configs/local.yaml as shipped) the floor alone holds all that two cores
compute, so Serve's default never leaves it and no policy can run fewer replicas;
what a policy decides is then only whether to add more. With burst clouds at zero
the question is the one an operator pays for: which replicas to keep, and when to
bring one back before the load needs it. The autoscaler's delays and its memory of
short peaks are compressed with the trace (30 s decisions -> 2 s, 270 s lead -> 8 s,
600 s downscale delay -> 15 s, a 300 s peak memory -> 20 s).

Replica counts, cost rate and the
autoscaler's forecast are read from the gateway's /metrics once a second.

    ours.replica_hours = sum over samples of running replicas x dt / 3600
    ours.usd           = sum over samples of the live cost rate (running replicas x
                         replica price) x dt / 3600
    ours.slo_attainment = requests answered ok within the SLO / requests sent

    python benchmarks/autoscale_live.py
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import GatewayConfig, autoscaler_settings, load_config
from loadtest.arrivals import load_trace, trace_schedule
from loadtest.demo_gateway import http_url, with_ports
from loadtest.machine import describe as describe_machine
from loadtest.plan import build_plan, load_texts, parse_mix
from loadtest.protocols import TargetConfig
from loadtest.records import Record
from loadtest.runner import RunLimits, run_load
from loadtest.summary import summarize

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
DATA = REPO_ROOT.parent / "shared" / "data"
TRACE = DATA / "traces" / "worldcup98_requests_per_minute.csv"
TEXTS_CSV = DATA / "intent" / "banking77_test.csv"
MODEL = "demo-intents"
SAMPLE_INTERVAL_S = 1.0
MISS_BUCKET_S = 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "local.yaml"))
    parser.add_argument("--http-port", type=int, default=8410)
    parser.add_argument("--grpc-port", type=int, default=9410)
    parser.add_argument(
        "--max-replicas",
        default="azure-westus2=3,gcp-us-central1=2,aws-us-east-1=2",
        help="cloud=max pairs",
    )
    parser.add_argument(
        "--min-replicas",
        default="azure-westus2=0,gcp-us-central1=1,aws-us-east-1=0",
        help="cloud=min pairs; a cloud not named keeps its configured min_replicas",
    )
    parser.add_argument("--replica-num-cpus", type=float, default=0.25)
    parser.add_argument(
        "--ray-num-cpus",
        type=float,
        default=8.0,
        help="logical CPUs the local node offers (reservations, not cores)",
    )
    parser.add_argument("--start-min", type=float, default=99210.0)
    parser.add_argument("--window-min", type=float, default=240.0)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--mean-rps", type=float, default=4.0)
    parser.add_argument("--texts-per-request", type=int, default=4)
    parser.add_argument("--decision-interval-s", type=float, default=2.0)
    parser.add_argument("--provisioning-lead-s", type=float, default=8.0)
    parser.add_argument("--downscale-delay-s", type=float, default=15.0)
    parser.add_argument("--drain-s", type=float, default=2.0)
    parser.add_argument("--peak-window-s", type=float, default=4.0)
    parser.add_argument("--peak-memory-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument(
        "--ray-targets",
        default="1,0.5",
        help="extra runs of Serve's policy with these target_ongoing_requests "
        "(comma list; empty for none)",
    )
    parser.add_argument(
        "--overload-budgets",
        default="",
        help="extra runs of ours with autoscaler.overload_budget at these values "
        "(comma list; label bertgw_budget_B): the margin sized so the expected "
        "share of requests above capacity stays within B (by default 1 - the SLO "
        "quantile); 'none' (label bertgw_quantile) sizes it by the 0.95 quantile "
        "of the errors instead",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only this label (repeat): bertgw, bertgw_budget_B, "
        "bertgw_quantile, ray_default, ray_default_target_T",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default=str(RESULTS / "autoscale_live.json"))
    parser.add_argument("--render-only", action="store_true")
    return parser.parse_args()


def bench_config(
    args: argparse.Namespace,
    policy: str,
    ray_target: float | None = None,
    autoscaler_overrides: dict[str, Any] | None = None,
) -> GatewayConfig:
    """configs/local.yaml with loopback ports, scaling bounds and compressed delays."""
    config = with_ports(load_config(args.config), args.http_port, args.grpc_port)
    maxima = dict(pair.split("=") for pair in args.max_replicas.split(",") if pair)
    minima = dict(pair.split("=") for pair in args.min_replicas.split(",") if pair)
    clouds = tuple(
        c.model_copy(
            update={
                "min_replicas": int(minima.get(c.name, c.min_replicas)),
                "max_replicas": max(
                    int(minima.get(c.name, c.min_replicas)),
                    int(maxima.get(c.name, 1)),
                ),
                "replica_num_cpus": args.replica_num_cpus,
            }
        )
        for c in config.clouds
    )
    autoscaler = {
        **config.autoscaler,
        "decision_interval_s": args.decision_interval_s,
        "provisioning_lead_s": args.provisioning_lead_s,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": args.downscale_delay_s,
        "drain_s": args.drain_s,
        "peak_window_s": args.peak_window_s,
        "peak_memory_s": args.peak_memory_s,
        **(autoscaler_overrides or {}),
    }
    return config.model_copy(
        update={
            "clouds": clouds,
            "autoscaler": autoscaler,
            "autoscaling_policy": policy,
            "ray_target_ongoing_requests": ray_target,
            "metrics": config.metrics.model_copy(update={"poll_interval_s": 1.0}),
        }
    )


class MetricsSampler:
    """Reads the gateway's gauges once a second in a thread until stopped."""

    def __init__(self, url: str, start_s: float) -> None:
        self.url = url
        self.start_s = start_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        wanted = {
            "bertgw_replicas",
            "bertgw_cost_usd_per_hour",
            "bertgw_autoscaler_observed_rps",
            "bertgw_autoscaler_forecast_rps",
            "bertgw_autoscaler_forecast_upper_rps",
            "bertgw_autoscaler_target_replicas",
            "bertgw_autoscaler_replica_seq_per_s",
        }
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                t_s = time.monotonic() - self.start_s
                try:
                    text = client.get(f"{self.url}/metrics").text
                except httpx.HTTPError:
                    text = ""
                sample: dict[str, Any] = {"t_s": round(t_s, 3)}
                for family in text_string_to_metric_families(text):
                    if family.name not in wanted:
                        continue
                    for s in family.samples:
                        cloud = s.labels.get("cloud")
                        key = family.name if cloud is None else f"{family.name}:{cloud}"
                        sample[key] = s.value
                self.samples.append(sample)
                self._stop.wait(SAMPLE_INTERVAL_S)


def integrate(samples: list[dict[str, Any]], prefix: str) -> float:
    """Sum of the `prefix*` series, integrated over time (trapezoids), per hour."""
    total = 0.0
    for a, b in zip(samples, samples[1:], strict=False):
        va = sum(v for k, v in a.items() if k.startswith(prefix))
        vb = sum(v for k, v in b.items() if k.startswith(prefix))
        total += (va + vb) / 2 * (b["t_s"] - a["t_s"]) / 3600.0
    return total


# (label, autoscaling_policy, target_ongoing_requests, autoscaler overrides)
Arm = tuple[str, str, float | None, dict[str, Any]]


def budget_arm(text: str) -> Arm:
    """An extra run of ours: `none` sizes the margin by a quantile, a number B by
    an overload budget of B."""
    if text.strip().lower() == "none":
        return ("bertgw_quantile", "bertgw", None, {"overload_budget": None})
    budget = float(text)
    return (f"bertgw_budget_{budget:g}", "bertgw", None, {"overload_budget": budget})


def arms(args: argparse.Namespace) -> list[Arm]:
    """Each run, in order."""
    targets = [float(t) for t in args.ray_targets.split(",") if t.strip()]
    budgets = [b for b in args.overload_budgets.split(",") if b.strip()]
    every: list[Arm] = [
        ("bertgw", "bertgw", None, {}),
        *(budget_arm(b) for b in budgets),
        ("ray_default", "ray_default", None, {}),
        *((f"ray_default_target_{t:g}", "ray_default", t, {}) for t in targets),
    ]
    return [arm for arm in every if not args.only or arm[0] in args.only]


def tuned_runs(runs: list[dict[str, Any]], knob: str) -> dict[str, Any]:
    """The runs that set `knob`, by label: the knob and the headline figures."""
    return {
        run["policy"]: {
            k: run.get(k) for k in (knob, "slo_attainment", "replica_hours", "usd")
        }
        for run in runs
        if run.get(knob)
    }


def run_policy(
    arm: Arm,
    args: argparse.Namespace,
    offsets_s: np.ndarray,
    texts: list[str],
) -> dict[str, Any]:
    from gateway.app import deploy
    from gateway.serve import shutdown, start_ray, wait_ready
    from loadtest.demo_gateway import wait_http_ready

    label, policy, ray_target, overrides = arm
    config = bench_config(args, policy, ray_target, overrides)
    url = http_url(config)
    start_ray(config, num_cpus=args.ray_num_cpus)
    handle = None
    try:
        handle = deploy(config)
        if not wait_ready(handle, 300.0):
            raise TimeoutError(f"gateway not ready with autoscaling_policy={policy}")
        wait_http_ready(config, time.monotonic() + 60.0)
        time.sleep(args.settle_s)
        plan = build_plan(
            num_requests=len(offsets_s),
            pool_size=len(texts),
            mix=parse_mix(f"{args.texts_per_request}:1"),
            rng=np.random.default_rng(args.seed),
            offsets_s=offsets_s,
        )
        target = TargetConfig(protocol="http-oip", url=url, model=MODEL, timeout_s=10)
        sampler = MetricsSampler(url, time.monotonic() + 0.3)
        sampler.start()
        try:
            result = run_load(
                target,
                plan,
                texts,
                limits=RunLimits(max_duration_s=args.duration_s + 1.0),
            )
        finally:
            sampler.stop()
    finally:
        shutdown(handle, 30.0)
    run = summarize_policy(label, config, result.records, sampler.samples, args)
    run["target_ongoing_requests"] = ray_target
    run["autoscaler_overrides"] = overrides
    if policy == "bertgw":
        run["overload_budget"] = autoscaler_settings(config).overload_budget
    return run


def summarize_policy(
    policy: str,
    config: GatewayConfig,
    records: list[Record],
    samples: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    summary = summarize(
        records, duration_s=args.duration_s, slo_ms=config.slo.latency_ms
    )
    ok = [r for r in records if r.kind == "ok" and r.latency_s is not None]
    clouds = [c.name for c in config.clouds]
    slo_s = config.slo.latency_ms / 1000.0
    # When the misses happened: requests not answered within the SLO, by the
    # MISS_BUCKET_S of the replay they were scheduled in, and what they were.
    misses: dict[str, dict[str, int]] = {}
    for r in records:
        if r.kind == "ok" and r.latency_s is not None and r.latency_s <= slo_s:
            continue
        start = (r.scheduled_s or 0.0) // MISS_BUCKET_S * MISS_BUCKET_S
        kind = "slow" if r.kind == "ok" else r.kind
        bucket = misses.setdefault(f"{start:g}", {})
        bucket[kind] = bucket.get(kind, 0) + 1
    return {
        "policy": policy,
        "slo_attainment": summary["slo"]["attainment"],
        "replica_hours": integrate(samples, "bertgw_replicas:"),
        "usd": integrate(samples, "bertgw_cost_usd_per_hour:"),
        "requests": summary["requests"],
        "p50_ms": summary["latency_ms"]["p50"],
        "p95_ms": float(np.percentile([r.latency_s for r in ok], 95) * 1e3)
        if ok
        else None,
        "share_per_cloud": summary["share_per_cloud"],
        "misses_by_start_s": misses,
        "max_replicas_seen": {
            c: max((s.get(f"bertgw_replicas:{c}", 0.0) for s in samples), default=0.0)
            for c in clouds
        },
        "samples": samples,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Offered rate, our forecast and bound, and replicas per cloud for each policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clouds = result["clouds"]
    runs = result["runs"]
    fig, axes = plt.subplots(
        len(runs) + 1, 1, figsize=(10, 3.2 * (len(runs) + 1)), sharex=True
    )
    rate_ax = axes[0]
    offsets = np.array(result["schedule_offsets_s"])
    edges = np.arange(0.0, result["duration_s"] + 2.0, 2.0)
    counts, _ = np.histogram(offsets, edges)
    rate_ax.step(edges[:-1], counts / 2.0, where="post", label="offered requests/s")
    ours = next((r for r in runs if r["policy"] == "bertgw"), None)
    if ours is not None:
        t_s = [s["t_s"] for s in ours["samples"]]
        for key, label in (
            ("bertgw_autoscaler_observed_rps", "observed requests/s (autoscaler)"),
            ("bertgw_autoscaler_forecast_rps", "forecast (peak over horizon)"),
            ("bertgw_autoscaler_forecast_upper_rps", "forecast upper bound"),
        ):
            values = [s.get(key, np.nan) for s in ours["samples"]]
            rate_ax.plot(t_s, values, label=label)
    rate_ax.set_ylabel(f"requests/s ({result['texts_per_request']} texts each)")
    rate_ax.set_title(result["trace"])
    rate_ax.legend(fontsize=8)
    for ax, run in zip(axes[1:], runs, strict=True):
        t_s = [s["t_s"] for s in run["samples"]]
        for cloud in clouds:
            values = [s.get(f"bertgw_replicas:{cloud}", np.nan) for s in run["samples"]]
            ax.step(t_s, values, where="post", label=f"{cloud} running")
        if run["policy"] == "bertgw":
            for cloud in clouds:
                key = f"bertgw_autoscaler_target_replicas:{cloud}"
                values = [s.get(key, np.nan) for s in run["samples"]]
                ax.step(
                    t_s, values, where="post", linestyle=":", label=f"{cloud} target"
                )
        ax.set_ylabel("replicas")
        ax.set_title(
            f"{run['policy']}: SLO attainment {run['slo_attainment']:.3f}, "
            f"{run['replica_hours'] * 3600:.0f} replica-s, ${run['usd']:.4f}"
        )
        ax.legend(fontsize=7, ncol=2)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Autoscaling live: ours vs Ray Serve's default, same trace replay",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Trace: {result['trace']}; {result['texts_per_request']} texts per request; "
        f"min replicas {result.get('min_replicas', 'as configured')}; "
        f"max replicas {result['max_replicas']}; SLO {result['slo_ms']:g} ms.",
        "",
        "| policy | slo_attainment | replica_hours | usd | p50 ms | p95 ms | "
        "sent | ok | max replicas seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        p50 = run["p50_ms"]
        p95 = run["p95_ms"]
        lines.append(
            f"| {run['policy']} | {run['slo_attainment']:.3f} | "
            f"{run['replica_hours']:.5f} | {run['usd']:.5f} | "
            f"{'n/a' if p50 is None else f'{p50:.1f}'} | "
            f"{'n/a' if p95 is None else f'{p95:.1f}'} | "
            f"{run['requests']['sent']} | {run['requests']['ok']} | "
            f"{run['max_replicas_seen']} |"
        )
    return "\n".join(lines) + "\n"


def render(result: dict[str, Any], out: Path) -> int:
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table)
    return 0


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if args.render_only:
        return render(json.loads(out.read_text()), out)
    if not TRACE.exists() or not TEXTS_CSV.exists():
        print("autoscale_live: shared data not found; nothing measured")
        return 2
    texts = load_texts(TEXTS_CSV)
    offsets_s = trace_schedule(
        load_trace(TRACE),
        duration_s=args.duration_s,
        rng=np.random.default_rng(args.seed),
        window_min=args.window_min,
        start_min=args.start_min,
        target_rps=args.mean_rps,
    )
    started_s = time.monotonic()
    runs = [run_policy(arm, args, offsets_s, texts) for arm in arms(args)]
    config = bench_config(args, "bertgw")
    by_policy = {run["policy"]: run for run in runs}
    result = {
        "benchmark": "autoscale_live",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "trace": (
            f"worldcup98_requests_per_minute.csv minutes {args.start_min:g}-"
            f"{args.start_min + args.window_min:g} played in {args.duration_s:g} s, "
            f"scaled to {args.mean_rps:g} requests/s mean"
        ),
        "duration_s": args.duration_s,
        "texts_per_request": args.texts_per_request,
        "slo_ms": config.slo.latency_ms,
        "clouds": [c.name for c in config.clouds],
        "min_replicas": {c.name: c.min_replicas for c in config.clouds},
        "max_replicas": {c.name: c.max_replicas for c in config.clouds},
        "autoscaler_settings": config.autoscaler,
        "ray_default_settings": (
            "Serve's default queue-length policy (target_ongoing_requests default, "
            "2), with the same upscale/downscale delays, metrics push interval and "
            "look-back period as ours; the ingress keeps at most two calls (each a "
            "coalesced batch) in flight per replica, so Serve's default target "
            "never scales up, and the ray_default_target_* runs give it lower "
            "targets as a user tuning it would"
        ),
        "schedule_offsets_s": [round(float(t), 4) for t in offsets_s],
        **{
            key: {
                k: by_policy[label][k]
                for k in ("slo_attainment", "replica_hours", "usd")
            }
            for key, label in (("ours", "bertgw"), ("ray_default", "ray_default"))
            if label in by_policy
        },
        "ours_tuned": tuned_runs(runs, "autoscaler_overrides"),
        "ray_default_tuned": tuned_runs(runs, "target_ongoing_requests"),
        "runs": runs,
        "machine": describe_machine(),
        "wall_s": round(time.monotonic() - started_s, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return render(result, out)


if __name__ == "__main__":
    sys.exit(main())
