"""Live routing on the local three-cloud gateway: spill, fault shift, policy costs.

Starts the gateway with configs/local.yaml (three emulated clouds with catalogue
prices and measured RTTs) on loopback ports, sends BANKING77 test texts to the demo
model with the project's open-loop harness, and measures, in one run:

1. calibration: each cloud's texts per second through the gateway, closed loop,
   pinned with `x-bertgw-allowed-regions`; it prices a text (below);
2. a staircase of Poisson rates under "slo_cost": each cloud's share per level;
3. 200 ms of extra RTT on the cheapest cloud mid-run (admin emulation route), then
   removed: `shift_seconds` and `return_seconds` (definitions in `shift_times`);
4. the same Poisson load under each policy (the ingress is redeployed with
   `routing_policy` set): `slo_attainment` and `usd_per_million`.

Cost of a text on cloud c (the pool's price over its measured throughput, i.e. what
the replica time it used costs):

    usd_per_text_c  = replica_usd_per_hour_c / (3600 * calibrated_seq_per_s_c)
    usd_per_million = 1e6 * sum_c(ok_texts_c * usd_per_text_c) / sum_c(ok_texts_c)

The fleet here is fixed (one replica per cloud), so the provisioned cost of a run
(`fleet_usd_per_million`: every replica's price times the run time over the texts
served) is reported too; it differs between policies only through texts served.

    python benchmarks/routing_live.py
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import GatewayConfig, load_config
from loadtest.arrivals import shape_schedule
from loadtest.demo_gateway import http_url, with_ports
from loadtest.plan import build_plan, load_texts, parse_mix
from loadtest.protocols import TargetConfig
from loadtest.records import OK, Record
from loadtest.runner import RunLimits, run_load
from loadtest.summary import summarize
from router.routing_settings import RouterSettings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
TEXTS_CSV = REPO_ROOT.parent / "shared" / "data" / "intent" / "banking77_test.csv"
MODEL = "demo-intents"
POLICIES = ("slo_cost", "round_robin", "least_latency", "cheapest_first", "p2c_queue")
REGIONS_HEADER = "x-bertgw-allowed-regions"
# The run's clock starts this long after run_load is called (loadtest.runner).
HARNESS_START_DELAY_S = 0.3
# Share-over-time windows for the shift measurement; a change counts once it has
# held for HOLD_S.
WINDOW_S = 2.0
STEP_S = 0.25
HOLD_S = 5.0
SHIFT_GOAL_S = 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "local.yaml"))
    parser.add_argument("--http-port", type=int, default=8400)
    parser.add_argument("--grpc-port", type=int, default=9400)
    parser.add_argument(
        "--half-life-s",
        type=float,
        default=None,
        help="router.half_life_s for this run (default: the config's)",
    )
    parser.add_argument(
        "--probe-interval-s",
        type=float,
        default=None,
        help="router.probe_interval_s for this run (default: the config's)",
    )
    parser.add_argument("--calibrate-s", type=float, default=6.0)
    parser.add_argument("--calibrate-concurrency", type=int, default=16)
    parser.add_argument("--rates", default="2,4,6,8,10,13,16,20")
    parser.add_argument("--level-s", type=float, default=16.0)
    parser.add_argument("--settle-s", type=float, default=4.0)
    parser.add_argument("--shift-rps", type=float, default=5.0)
    parser.add_argument("--shift-before-s", type=float, default=15.0)
    parser.add_argument("--fault-s", type=float, default=20.0)
    parser.add_argument("--shift-after-s", type=float, default=40.0)
    parser.add_argument("--extra-latency-ms", type=float, default=200.0)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--policy-rps", type=float, default=12.0)
    parser.add_argument("--policy-s", type=float, default=30.0)
    parser.add_argument("--policy-warmup-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "routing_live.json"))
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="redraw the table and plot from the JSON at --out; measure nothing",
    )
    return parser.parse_args()


@dataclass(frozen=True)
class Phase:
    """One open-loop run's records, the clock of its start and its length."""

    records: list[Record]
    start_monotonic_s: float
    duration_s: float


class Bench:
    """The gateway under test and the texts sent to it."""

    def __init__(self, config: GatewayConfig, texts: list[str], seed: int) -> None:
        self.config = config
        self.texts = texts
        self.rng = np.random.default_rng(seed)
        self.url = http_url(config)
        self.handle: Any = None

    def target(self, regions: str | None = None) -> TargetConfig:
        headers = ((REGIONS_HEADER, regions),) if regions else ()
        return TargetConfig(
            protocol="http-oip",
            url=self.url,
            model=MODEL,
            timeout_s=5.0,
            headers=headers,
        )

    def deploy(self, policy: str) -> None:
        from gateway.app import deploy
        from gateway.serve import wait_ready

        config = self.config.model_copy(update={"routing_policy": policy})
        self.handle = deploy(config)
        if not wait_ready(self.handle, 300.0):
            raise TimeoutError(f"gateway not ready with routing_policy={policy}")

    def open_loop(
        self,
        offsets_s: np.ndarray,
        duration_s: float,
        during: Any = None,
    ) -> Phase:
        """Runs the schedule; `during(start_s)` runs in a thread alongside it."""
        plan = build_plan(
            num_requests=len(offsets_s),
            pool_size=len(self.texts),
            mix=parse_mix("1:1"),
            rng=self.rng,
            offsets_s=offsets_s,
        )
        start_s = time.monotonic() + HARNESS_START_DELAY_S
        side = None
        if during is not None:
            side = threading.Thread(target=during, args=(start_s,), daemon=True)
            side.start()
        result = run_load(
            self.target(),
            plan,
            self.texts,
            limits=RunLimits(max_duration_s=duration_s + 1.0, drain_timeout_s=10.0),
        )
        if side is not None:
            side.join(timeout=30.0)
        return Phase(result.records, start_s, duration_s)

    def poisson(self, rps: float, duration_s: float) -> np.ndarray:
        return shape_schedule(
            "constant", duration_s=duration_s, mean_rps=rps, rng=self.rng
        )

    def set_extra_latency(self, cloud: str, extra_ms: float) -> None:
        import httpx

        response = httpx.post(
            f"{self.url}/admin/emulation/{cloud}",
            json={"extra_latency_ms": extra_ms},
            timeout=5.0,
        )
        response.raise_for_status()


def calibrate(bench: Bench, seconds: float, concurrency: int) -> dict[str, float]:
    """Texts per second each cloud answers when it gets all the load (closed loop)."""
    result: dict[str, float] = {}
    for cloud in bench.config.clouds:
        plan = build_plan(
            num_requests=int(seconds * 2000),
            pool_size=len(bench.texts),
            mix=parse_mix("1:1"),
            rng=bench.rng,
        )
        run = run_load(
            bench.target(regions=cloud.region),
            plan,
            bench.texts,
            limits=RunLimits(max_duration_s=seconds, drain_timeout_s=10.0),
            concurrency=concurrency,
        )
        summary = summarize(run.records, duration_s=None, slo_ms=None)
        ok_other = sum(1 for r in run.records if r.kind == OK and r.cloud != cloud.name)
        if ok_other:
            raise RuntimeError(f"calibration of {cloud.name} served elsewhere")
        result[cloud.name] = float(summary["texts_per_s"] or 0.0)
        logger.info(
            "event=calibrated cloud=%s seq_per_s=%.1f", cloud.name, result[cloud.name]
        )
    return result


def shares(records: list[Record], clouds: list[str]) -> dict[str, float]:
    ok = [r for r in records if r.kind == OK]
    return {
        c: (sum(1 for r in ok if r.cloud == c) / len(ok) if ok else 0.0) for c in clouds
    }


def staircase(
    bench: Bench, rates: list[float], level_s: float, settle_s: float
) -> list[dict[str, Any]]:
    """Rates held `level_s` each; shares and SLO per level after `settle_s`."""
    parts = [bench.poisson(rps, level_s) + k * level_s for k, rps in enumerate(rates)]
    phase = bench.open_loop(np.concatenate(parts), level_s * len(rates))
    clouds = [c.name for c in bench.config.clouds]
    rows = []
    for k, rps in enumerate(rates):
        lo_s, hi_s = k * level_s + settle_s, (k + 1) * level_s
        level = [
            r
            for r in phase.records
            if r.scheduled_s is not None and lo_s <= r.scheduled_s < hi_s
        ]
        summary = summarize(
            level, duration_s=hi_s - lo_s, slo_ms=bench.config.slo.latency_ms
        )
        rows.append(
            {
                "offered_rps": rps,
                "requests": len(level),
                "share_per_cloud": shares(level, clouds),
                "slo_attainment": summary["slo"]["attainment"],
                "p95_ms": _p95_ms(level),
                "failed": summary["requests"]["failed"] + summary["requests"]["lost"],
            }
        )
    return rows


def _p95_ms(records: list[Record]) -> float | None:
    values = [r.latency_s for r in records if r.kind == OK and r.latency_s is not None]
    return float(np.percentile(values, 95) * 1e3) if values else None


def window_counts(
    records: list[Record], cloud: str, span_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step t: answered requests sent in [t, t + WINDOW_S), and `cloud`'s."""
    ok = [r for r in records if r.kind == OK and r.send_s is not None]
    send_s = np.array([r.send_s for r in ok])
    mine = np.array([r.cloud == cloud for r in ok])
    starts = np.arange(0.0, max(0.0, span_s - WINDOW_S) + 1e-9, STEP_S)
    totals = np.zeros(len(starts))
    counts = np.zeros(len(starts))
    for i, t in enumerate(starts):
        inside = (send_s >= t) & (send_s < t + WINDOW_S)
        totals[i] = inside.sum()
        counts[i] = mine[inside].sum()
    return starts, totals, counts


def window_shares(
    records: list[Record], cloud: str, span_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """`cloud`'s share of answered requests sent in [t, t + WINDOW_S), per step."""
    starts, totals, counts = window_counts(records, cloud, span_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return starts, np.where(totals > 0, counts / totals, np.nan)


def shift_times(
    starts: np.ndarray,
    totals: np.ndarray,
    counts: np.ndarray,
    before_share: float,
    probe_interval_s: float,
    fault_on_s: float,
    fault_off_s: float,
    end_s: float,
) -> tuple[float | None, float | None]:
    """Seconds from fault on until >= 90 % of the cloud's traffic has moved, and from
    removal until its share is back to at least half its share before the fault.

    Judged on WINDOW_S windows (the time reported is the window's end), and only
    once the condition has held for HOLD_S. Moved: the cloud got at most 10 % of
    the requests its earlier share would give it, plus the router's probes (one
    per `probe_interval_s`, which it keeps sending on purpose).
    """
    # Probes are whole requests: a window may hold one even at a long interval.
    probes = math.ceil(WINDOW_S / probe_interval_s)

    def moved(i: int) -> bool:
        return counts[i] <= 0.1 * before_share * totals[i] + probes

    def back(i: int) -> bool:
        # Half, not all: a 2 s window holds ~10 requests, too few for a tight bar.
        return totals[i] > 0 and counts[i] >= 0.5 * before_share * totals[i]

    def settle(lo_s: float, hi_s: float, ok: Any) -> float | None:
        idx = [i for i, t in enumerate(starts) if lo_s <= t and t + WINDOW_S <= hi_s]
        for pos, i in enumerate(idx):
            held = [j for j in idx[pos:] if starts[j] <= starts[i] + HOLD_S]
            if starts[i] + HOLD_S + WINDOW_S <= hi_s and all(ok(j) for j in held):
                return float(starts[i] + WINDOW_S - lo_s)
        return None

    return settle(fault_on_s, fault_off_s, moved), settle(fault_off_s, end_s, back)


def fault_run(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Constant load; extra RTT on the cheapest cloud for `fault_s` mid-run."""
    cheap = min(bench.config.clouds, key=lambda c: c.to_spec().replica_usd_per_hour)
    span_s = args.shift_before_s + args.fault_s + args.shift_after_s
    applied: dict[str, float] = {}

    def inject(start_s: float) -> None:
        for key, at_s, extra_ms in (
            ("on", args.shift_before_s, args.extra_latency_ms),
            ("off", args.shift_before_s + args.fault_s, 0.0),
        ):
            time.sleep(max(0.0, start_s + at_s - time.monotonic()))
            bench.set_extra_latency(cheap.name, extra_ms)
            applied[key] = time.monotonic() - start_s

    phase = bench.open_loop(bench.poisson(args.shift_rps, span_s), span_s, inject)
    if set(applied) != {"on", "off"}:
        raise RuntimeError(f"fault switch did not run: {applied}")
    on_s, off_s = applied["on"], applied["off"]
    clouds = [c.name for c in bench.config.clouds]
    before = [
        r
        for r in phase.records
        if r.send_s is not None and on_s - args.shift_before_s / 2 <= r.send_s < on_s
    ]
    before_share = shares(before, clouds)[cheap.name]
    starts, totals, counts = window_counts(phase.records, cheap.name, span_s)
    shift_s, return_s = shift_times(
        starts,
        totals,
        counts,
        before_share,
        args.probe_interval_s,
        on_s,
        off_s,
        span_s,
    )
    timeline = {
        cloud: window_shares(phase.records, cloud, span_s)[1] for cloud in clouds
    }
    summary = summarize(
        phase.records, duration_s=span_s, slo_ms=bench.config.slo.latency_ms
    )
    return {
        "cloud": cheap.name,
        "offered_rps": args.shift_rps,
        "extra_latency_ms": args.extra_latency_ms,
        "fault_on_s": round(on_s, 3),
        "fault_off_s": round(off_s, 3),
        "share_before": before_share,
        "shift_seconds": shift_s,
        "return_seconds": return_s,
        "shift_goal_s": SHIFT_GOAL_S,
        "shift_within_goal": shift_s is not None and shift_s <= SHIFT_GOAL_S,
        # Shift and return only mean something if the cloud carried the load before.
        "cloud_carried_load_before": before_share >= 0.5,
        "slo_attainment": summary["slo"]["attainment"],
        "failed": summary["requests"]["failed"] + summary["requests"]["lost"],
        "window_s": WINDOW_S,
        "hold_s": HOLD_S,
        "timeline": {
            "t_s": [round(float(t), 3) for t in starts],
            "share": {
                cloud: [None if np.isnan(v) else round(float(v), 4) for v in vals]
                for cloud, vals in timeline.items()
            },
        },
    }


def usd_per_text(
    config: GatewayConfig, seq_per_s: dict[str, float]
) -> dict[str, float]:
    return {
        c.name: c.to_spec().replica_usd_per_hour / (3600.0 * seq_per_s[c.name])
        for c in config.clouds
        if seq_per_s.get(c.name)
    }


def policy_run(
    bench: Bench, policy: str, args: argparse.Namespace, prices: dict[str, float]
) -> dict[str, Any]:
    """One policy under the shared load: SLO attainment and the two costs."""
    bench.deploy(policy)
    # Warm the fresh ingress (router estimates, connections), then measure.
    bench.open_loop(
        bench.poisson(args.policy_rps, args.policy_warmup_s), args.policy_warmup_s
    )
    phase = bench.open_loop(
        bench.poisson(args.policy_rps, args.policy_s), args.policy_s
    )
    summary = summarize(
        phase.records, duration_s=args.policy_s, slo_ms=bench.config.slo.latency_ms
    )
    ok = [r for r in phase.records if r.kind == OK and r.cloud in prices]
    ok_texts = sum(r.num_texts for r in ok)
    usage_usd = sum(r.num_texts * prices[r.cloud] for r in ok if r.cloud is not None)
    fleet_usd_per_hour = sum(
        c.to_spec().replica_usd_per_hour * max(1, c.min_replicas)
        for c in bench.config.clouds
    )
    fleet_usd = fleet_usd_per_hour * args.policy_s / 3600.0
    return {
        "policy": policy if policy == "slo_cost" else f"policies.{policy}",
        "offered_rps": args.policy_rps,
        "requests": summary["requests"]["sent"],
        "ok_texts": ok_texts,
        "slo_attainment": summary["slo"]["attainment"],
        "usd_per_million": 1e6 * usage_usd / ok_texts if ok_texts else None,
        "fleet_usd_per_million": 1e6 * fleet_usd / ok_texts if ok_texts else None,
        "p50_ms": summary["latency_ms"]["p50"],
        "p95_ms": _p95_ms(phase.records),
        "p99_ms": summary["latency_ms"]["p99"],
        "failed": summary["requests"]["failed"] + summary["requests"]["lost"],
        "share_per_cloud": shares(phase.records, [c.name for c in bench.config.clouds]),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Share per cloud per load level, and per cloud over time in the fault run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clouds = result["clouds"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    levels = result["staircase"]
    x = np.arange(len(levels))
    bottom = np.zeros(len(levels))
    for cloud in clouds:
        values = np.array([row["share_per_cloud"][cloud] for row in levels])
        left.bar(x, values, bottom=bottom, label=cloud)
        bottom += values
    left.set_xticks(x, [f"{row['offered_rps']:g}" for row in levels])
    left.set_xlabel("offered load (requests/s, 1 text each)")
    left.set_ylabel("share of answered requests")
    left.set_title("slo_cost: share per cloud as load rises")
    left.legend(fontsize=8)

    fault = result["fault"]
    t_s = np.array(fault["timeline"]["t_s"]) + fault["window_s"]
    for cloud in clouds:
        values = [np.nan if v is None else v for v in fault["timeline"]["share"][cloud]]
        right.plot(t_s, values, label=cloud)
    right.axvspan(fault["fault_on_s"], fault["fault_off_s"], color="red", alpha=0.1)
    right.set_xlabel(
        f"time (s); shaded: +{fault['extra_latency_ms']:g} ms RTT on {fault['cloud']}"
    )
    right.set_ylabel(f"share in trailing {fault['window_s']:g} s window")
    right.set_title(
        f"shift {_fmt(fault['shift_seconds'])} s, "
        f"return {_fmt(fault['return_seconds'])} s"
    )
    right.set_ylim(-0.02, 1.02)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    clouds = result["clouds"]
    lines = [
        "# Live routing on the local three-cloud gateway",
        "",
        f"Command: `{result['command']}`",
        "",
        "Router settings for this run: "
        + ", ".join(f"{k}={v}" for k, v in result["router_settings"].items()),
        "",
        "## Calibrated texts/s per cloud (closed loop, pinned by region)",
        "",
        "| cloud | seq/s | replica USD/h | USD per million texts |",
        "|---|---|---|---|",
    ]
    for cloud in clouds:
        lines.append(
            f"| {cloud} | {_fmt(result['calibrated_seq_per_s'][cloud])} | "
            f"{result['replica_usd_per_hour'][cloud]:.4f} | "
            f"{_fmt(result['usd_per_text'][cloud] * 1e6, 3)} |"
        )
    lines += [
        "",
        "## slo_cost as load rises (share per cloud per level)",
        "",
        "| offered rps | "
        + " | ".join(clouds)
        + " | SLO attainment | p95 ms | failed |",
        "|---|" + "---|" * (len(clouds) + 3),
    ]
    for row in result["staircase"]:
        cells = " | ".join(f"{row['share_per_cloud'][c]:.2f}" for c in clouds)
        lines.append(
            f"| {row['offered_rps']:g} | {cells} | {_fmt(row['slo_attainment'], 3)} | "
            f"{_fmt(row['p95_ms'])} | {row['failed']} |"
        )
    fault = result["fault"]
    lines += [
        "",
        f"## +{fault['extra_latency_ms']:g} ms RTT on {fault['cloud']} at "
        f"{fault['offered_rps']:g} rps",
        "",
        "| share before | shift_seconds | return_seconds | goal | SLO attainment |",
        "|---|---|---|---|---|",
        f"| {fault['share_before']:.2f} | {_fmt(fault['shift_seconds'], 2)} | "
        f"{_fmt(fault['return_seconds'], 2)} | shift <= {fault['shift_goal_s']:g} s | "
        f"{_fmt(fault['slo_attainment'], 3)} |",
        "",
        f"## Policies at {result['policies'][0]['offered_rps']:g} rps "
        if result["policies"]
        else "## Policies",
        "",
        "| policy | usd_per_million | fleet_usd_per_million | slo_attainment | "
        "p50 ms | p95 ms | failed | " + " | ".join(clouds) + " |",
        "|---|" + "---|" * (len(clouds) + 6),
    ]
    for row in result["policies"]:
        cells = " | ".join(f"{row['share_per_cloud'][c]:.2f}" for c in clouds)
        lines.append(
            f"| {row['policy']} | {_fmt(row['usd_per_million'], 3)} | "
            f"{_fmt(row['fleet_usd_per_million'], 3)} | "
            f"{_fmt(row['slo_attainment'], 3)} | {_fmt(row['p50_ms'])} | "
            f"{_fmt(row['p95_ms'])} | {row['failed']} | {cells} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if args.render_only:
        return render(json.loads(out.read_text()), out)
    if not TEXTS_CSV.exists():
        print(f"routing_live: {TEXTS_CSV.name} not found; nothing measured")
        return 2
    texts = load_texts(TEXTS_CSV)
    router_block = dict(load_config(args.config).router)
    for name in ("half_life_s", "probe_interval_s"):
        value = getattr(args, name)
        if value is None:
            # The config's value, else the router's default: what a user runs.
            setattr(args, name, router_block.get(name, getattr(RouterSettings, name)))
        router_block[name] = getattr(args, name)
    config = with_ports(load_config(args.config), args.http_port, args.grpc_port)
    config = config.model_copy(update={"router": router_block})
    bench = Bench(config, texts, args.seed)
    clouds = [c.name for c in config.clouds]
    policies = [p for p in args.policies.split(",") if p]
    # slo_cost last: each policy then starts on a freshly deployed ingress.
    policies = [p for p in policies if p != "slo_cost"] + (
        ["slo_cost"] if "slo_cost" in policies else []
    )

    from gateway.serve import shutdown, start_ray

    started_s = time.monotonic()
    start_ray(config)
    try:
        # Pinned runs ignore the policy; a different one forces a fresh ingress next.
        bench.deploy("cheapest_first")
        seq_per_s = calibrate(bench, args.calibrate_s, args.calibrate_concurrency)
        bench.deploy("slo_cost")
        fault = fault_run(bench, args)
        rates = [float(r) for r in args.rates.split(",") if r]
        steps = staircase(bench, rates, args.level_s, args.settle_s)
        prices = usd_per_text(config, seq_per_s)
        rows = [policy_run(bench, p, args, prices) for p in policies]
    finally:
        shutdown(bench.handle, 30.0)

    result = {
        "benchmark": "routing_live",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "config": str(Path(args.config).resolve().relative_to(REPO_ROOT)),
        "model": MODEL,
        "texts": "banking77_test.csv (text column), 1 text per request",
        "protocol": "http-oip",
        "slo_ms": config.slo.latency_ms,
        "slo_quantile": config.slo.quantile,
        "router_settings": router_block,
        "clouds": clouds,
        "replica_usd_per_hour": {
            c.name: c.to_spec().replica_usd_per_hour for c in config.clouds
        },
        "calibrated_seq_per_s": seq_per_s,
        "usd_per_text": prices,
        "cost_formula": (
            "usd_per_million = 1e6 * sum_c(ok_texts_c * usd_per_hour_c / "
            "(3600 * calibrated_seq_per_s_c)) / sum_c(ok_texts_c); "
            "fleet_usd_per_million = 1e6 * sum_c(usd_per_hour_c * replicas_c) * "
            "run_s / 3600 / ok_texts"
        ),
        "slo_attainment_definition": (
            "answered ok within slo_ms, over requests sent (errors count as misses)"
        ),
        "fault": fault,
        "staircase": steps,
        "policies": rows,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "wall_s": round(time.monotonic() - started_s, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return render(result, out)


def render(result: dict[str, Any], out: Path) -> int:
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
