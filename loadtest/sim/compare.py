"""Run setups side by side on one trace against the lower bound, and report them.

Shared by `bertgw simulate` and `benchmarks/simulation.py`: one function runs the
comparison, one turns it into JSON-ready rows, one into a markdown table, one into
plots of replicas and cost over time per setup.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.sim.bound import BoundResult, lower_bound
from loadtest.sim.engine import EngineSettings, SimResult, run
from loadtest.sim.scenario import Scenario
from loadtest.sim.setups import SETUPS
from loadtest.sim.traces import RateTrace

logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    trace: RateTrace
    bound: BoundResult
    results: dict[str, SimResult]
    # The same program with whole replicas: still a lower bound, and the gap
    # between the two is what rounding alone costs any real policy.
    integer_bound: BoundResult | None = None


def compare(
    scenario: Scenario,
    trace: RateTrace,
    setups: Sequence[str],
    settings: EngineSettings | None = None,
    integer_bound: bool = False,
) -> Comparison:
    """Simulate each named setup on the trace and solve the bound once (and its
    whole-replica version if asked)."""
    bound = lower_bound(scenario, trace)
    whole = lower_bound(scenario, trace, integer=True) if integer_bound else None
    results = {}
    for name in setups:
        result = run(scenario, trace, SETUPS[name], settings)
        logger.info(
            "event=sim_done trace=%s setup=%s wall_s=%.1f attainment=%.5f",
            trace.name,
            name,
            result.wall_s,
            result.slo_attainment,
        )
        results[name] = result
    return Comparison(trace, bound, results, whole)


def rows(comparison: Comparison) -> dict:
    """The JSON block of one trace: the bound and each setup's figures."""
    bound = comparison.bound
    whole = comparison.integer_bound
    trace = comparison.trace
    policies = {}
    for name, r in comparison.results.items():
        arrivals = r.arrivals or 1.0
        policies[name] = {
            "usd_per_million": round(r.usd_per_million, 6),
            "slo_attainment": round(r.slo_attainment, 6),
            "replica_hours": round(r.replica_hours, 3),
            "cost_ratio_to_bound": round(r.usd / bound.usd, 4) if bound.usd else None,
            **(
                {"cost_ratio_to_integer_bound": round(r.usd / whole.usd, 4)}
                if whole is not None and whole.usd
                else {}
            ),
            "usd": round(r.usd, 4),
            "late_share": round(r.outcome.late / arrivals, 6),
            "dropped_share": round(r.outcome.dropped / arrivals, 6),
            "failed_share": round(r.outcome.failed / arrivals, 6),
            "mean_latency_ms": (
                None
                if r.outcome.mean_latency_s is None
                else round(r.outcome.mean_latency_s * 1000, 2)
            ),
            "preemptions": r.preemptions,
            "wall_s": round(r.wall_s, 1),
            "sim_seconds_per_day": round(r.wall_s * 86400 / r.sim_s, 1),
            "slo_attainment_by_metro": {
                m: round(o.in_slo / o.total, 6) if o.total else None
                for m, o in r.by_metro.items()
            },
        }
    return {
        "start": trace.start_label,
        "source_slot_s": trace.source_slot_s,
        "simulated_s": trace.sim_s,
        "mean_rps": round(float(trace.sim_rates_rps.mean()), 1),
        "peak_rps": round(float(trace.sim_rates_rps.max()), 1),
        "scale": trace.scale,
        "requests": round(bound.arrivals),
        "lower_bound": {
            "usd_per_million": round(bound.usd_per_million, 6),
            "usd": round(bound.usd, 4),
            "replica_hours": round(bound.replica_hours, 3),
            "slot_s": bound.slot_s,
            "replicas": "integer" if bound.integer else "fractional",
        },
        **(
            {
                "integer_lower_bound": {
                    "usd_per_million": round(whole.usd_per_million, 6),
                    "usd": round(whole.usd, 4),
                    "replica_hours": round(whole.replica_hours, 3),
                }
            }
            if whole is not None
            else {}
        ),
        "policies": policies,
    }


def markdown(blocks: dict[str, dict]) -> str:
    lines = [
        "| trace | policy | USD per million | SLO attainment | replica-hours | "
        "cost / bound | wall s per day |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for trace, block in blocks.items():
        lb = block["lower_bound"]
        lines.append(
            f"| {trace} | lower bound (LP) | {lb['usd_per_million']:.5f} | 1 | "
            f"{lb['replica_hours']:.1f} | 1.000 | |"
        )
        for name, p in block["policies"].items():
            ratio = p["cost_ratio_to_bound"]
            lines.append(
                f"| {trace} | {name} | {p['usd_per_million']:.5f} | "
                f"{p['slo_attainment']:.5f} | {p['replica_hours']:.1f} | "
                f"{'' if ratio is None else f'{ratio:.3f}'} | "
                f"{p['sim_seconds_per_day']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(comparison: Comparison, path: Path) -> None:
    """Replicas and cost rate over time, one line per setup, the bound dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rep, ax_cost) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, r in comparison.results.items():
        hours = [t / 3600 for t in r.series_t_s]
        totals = [
            sum(series[i] for series in r.series_replicas.values())
            for i in range(len(r.series_t_s))
        ]
        ax_rep.plot(hours, totals, label=name, linewidth=1)
        ax_cost.plot(hours, r.series_usd_per_hour, label=name, linewidth=1)
    bound = comparison.bound
    bound_hours = [i * bound.slot_s / 3600 for i in range(len(bound.usd_per_hour))]
    ax_cost.plot(bound_hours, bound.usd_per_hour, "k--", label="lower bound", lw=1)
    ax_rep.set_ylabel("replicas billed")
    ax_cost.set_ylabel("USD per hour")
    ax_cost.set_xlabel("hours into the simulated window")
    ax_rep.set_title(f"{comparison.trace.name} from {comparison.trace.start_label}")
    ax_rep.legend(fontsize=8)
    ax_cost.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
