"""Forecast accuracy on the real arrival traces: our forecaster against last-value.

For every trace in ../shared/data/traces the rate per slot is replayed into the
forecaster online; after each slot both methods forecast the slot `horizon_s` ahead
(the autoscaler's provisioning lead plus decision interval), and the errors are
scored when that slot arrives. Both are scored on the same slots, after the same
warm-up. Beside them, on the same slots: the Holt-Winters member alone (no online
combination with the last value) and the same forecaster fitted on rates instead
of their logs. Writes benchmarks/results/forecast_accuracy.{json,md}.

    python benchmarks/forecast_accuracy.py [--data-dir DIR] [--traces NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from router.autoscaler import AutoscalerSettings, forecaster_settings  # noqa: E402
from router.clock import ManualClock  # noqa: E402
from router.forecast import Forecaster  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DAY_S = 86_400.0


@dataclass(frozen=True)
class TraceSpec:
    name: str
    file: str
    slot_s: float
    season_s: float | None
    warmup_slots: int
    load: Callable[[Path, float], dict[int, float]]
    note: str


def _epoch_s(text: str) -> float:
    # Trace times carry no zone (the SOURCE.md says UTC/GMT or unstated); read as UTC.
    # timezone.utc rather than datetime.UTC keeps the line readable on 3.11.
    utc = timezone.utc  # noqa: UP017
    stamp = datetime.fromisoformat(text[:26]).replace(tzinfo=utc)
    return stamp.timestamp()


def load_counts(path: Path, slot_s: float, time_col: str, count_col: str) -> dict:
    """Per-slot rates from a file of (time, count) rows."""
    rates: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            index = round(_epoch_s(row[time_col]) / slot_s)
            rates[index] = rates.get(index, 0.0) + float(row[count_col]) / slot_s
    return rates


def load_arrivals(path: Path, slot_s: float) -> dict[int, float]:
    """Per-slot rates from a file with one row per request (TIMESTAMP column)."""
    counts: Counter[int] = Counter()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            counts[math.floor(_epoch_s(row["TIMESTAMP"]) / slot_s)] += 1
    first, last = min(counts), max(counts)
    # The first and last slots are cut by the trace's edges: leave them out.
    return {i: counts.get(i, 0) / slot_s for i in range(first + 1, last)}


TRACES = (
    TraceSpec(
        "worldcup98",
        "worldcup98_requests_per_minute.csv",
        60.0,
        DAY_S,
        2 * 1440,
        lambda p, s: load_counts(p, s, "minute_utc", "requests"),
        "per-minute counts, 88 days; scored after 2 days",
    ),
    TraceSpec(
        "nab_aws_elb",
        "nab_aws_elb_request_count_5min.csv",
        300.0,
        DAY_S,
        2 * 288,
        lambda p, s: load_counts(p, s, "timestamp", "request_count"),
        "5-minute counts, 14 days; scored after 2 days",
    ),
    TraceSpec(
        "azure_llm_conv",
        "azure_llm_inference_2023_conv.csv",
        30.0,
        None,
        30,
        load_arrivals,
        "per-request arrivals in 30 s slots, 1 hour; scored after 15 minutes",
    ),
    TraceSpec(
        "azure_llm_code",
        "azure_llm_inference_2023_code.csv",
        30.0,
        None,
        30,
        load_arrivals,
        "per-request arrivals in 30 s slots, 1 hour; scored after 15 minutes",
    ),
)


def evaluate(spec: TraceSpec, data_dir: Path, settings: AutoscalerSettings) -> dict:
    rates = spec.load(data_dir / spec.file, spec.slot_s)
    horizon_s = settings.horizon_s
    f_settings = forecaster_settings(
        settings, slot_s=spec.slot_s, season_s=spec.season_s
    )
    clock = ManualClock()
    forecaster = Forecaster(f_settings, clock)
    # The same model fitted on rates instead of their logs, for comparison.
    linear = Forecaster(replace(f_settings, log_scale=False), clock)
    # The Holt-Winters member alone, without the combination with the last value.
    alone = Forecaster(replace(f_settings, combine_with_last_value=False), clock)
    steps = f_settings.fit_horizon_slots

    first = min(rates)
    ours: dict[int, tuple[float, float]] = {}
    naive: dict[int, float] = {}
    linear_mean: dict[int, float] = {}
    alone_mean: dict[int, float] = {}
    abs_pct, naive_abs_pct, linear_abs_pct, alone_abs_pct = [], [], [], []
    abs_err = naive_abs_err = actual_sum = 0.0
    covered = zero_skipped = 0
    upper_over_actual = []
    started = time.perf_counter()
    for index in sorted(rates):
        actual = rates[index]
        if index in ours and index in naive and index - first >= spec.warmup_slots:
            if actual > 0:
                mean, upper = ours[index]
                abs_pct.append(abs(actual - mean) / actual)
                naive_abs_pct.append(abs(actual - naive[index]) / actual)
                linear_abs_pct.append(abs(actual - linear_mean[index]) / actual)
                alone_abs_pct.append(abs(actual - alone_mean[index]) / actual)
                abs_err += abs(actual - mean)
                naive_abs_err += abs(actual - naive[index])
                actual_sum += actual
                covered += actual <= upper
                upper_over_actual.append(upper / actual)
            else:
                zero_skipped += 1
        ours.pop(index, None)
        naive.pop(index, None)
        linear_mean.pop(index, None)
        alone_mean.pop(index, None)

        forecaster.observe(index * spec.slot_s, actual)
        linear.observe(index * spec.slot_s, actual)
        alone.observe(index * spec.slot_s, actual)
        # Now is the end of this slot; ask for the slot horizon_s ahead.
        clock.set((index + 1) * spec.slot_s)
        forecast = forecaster.forecast(horizon_s)
        ours[index + steps] = (forecast.mean_rps, forecast.upper_rps)
        naive[index + steps] = actual
        linear_mean[index + steps] = linear.forecast(horizon_s).mean_rps
        alone_mean[index + steps] = alone.forecast(horizon_s).mean_rps
    elapsed_s = time.perf_counter() - started

    n = len(abs_pct)
    params = forecaster.params
    return {
        "trace": spec.name,
        "file": spec.file,
        "note": spec.note,
        "slot_s": spec.slot_s,
        "season_s": spec.season_s,
        "horizon_slots": steps,
        "slots": len(rates),
        "scored_slots": n,
        "zero_actual_slots_skipped": zero_skipped,
        "mean_rate_rps": sum(rates.values()) / len(rates),
        "mape": 100 * sum(abs_pct) / n,
        "naive_mape": 100 * sum(naive_abs_pct) / n,
        "linear_scale_mape": 100 * sum(linear_abs_pct) / n,
        "holt_winters_only_mape": 100 * sum(alone_abs_pct) / n,
        "median_ape": 100 * _median(abs_pct),
        "naive_median_ape": 100 * _median(naive_abs_pct),
        "wape": 100 * abs_err / actual_sum,
        "naive_wape": 100 * naive_abs_err / actual_sum,
        "upper_coverage": covered / n,
        "median_upper_over_actual": _median(upper_over_actual),
        "final_params": None if params is None else vars(params),
        "final_holt_winters_weight": forecaster.holt_winters_weight,
        "beats_naive": sum(abs_pct) < sum(naive_abs_pct),
        **paired_test(abs_pct, naive_abs_pct, steps),
        "seconds": elapsed_s,
    }


def paired_test(ours: list[float], naive: list[float], horizon: int) -> dict:
    """Diebold-Mariano test of equal MAPE, with the small-sample correction of
    Harvey, Leybourne and Newbold (1997), and a check with a wider window.

    The loss difference d_t = APE_ours - APE_naive is autocorrelated over up to
    `horizon` - 1 slots (forecasts h slots ahead overlap), so its long-run variance
    sums the autocovariances up to that lag. The statistic is read against
    Student's t with n - 1 degrees of freedom; negative means ours is better.
    `dm_p_value` is two-sided: below 0.05, the gap would rarely come by chance
    from two equally accurate forecasts. Forecasts that are not optimal leave
    errors correlated for longer, so `dm_p_value_wide` sums autocovariances up to
    max(h - 1, n^(1/3)) lags with Bartlett weights (Newey-West), without the
    small-sample factor. None where n < 2 or the differences never vary.
    """
    from scipy import stats

    d = np.asarray(ours, dtype=float) - np.asarray(naive, dtype=float)
    n = len(d)
    none = {"dm_statistic": None, "dm_p_value": None, "dm_p_value_wide": None}
    if n < 2:
        return none
    mean = float(d.mean())
    centred = d - mean

    def autocovariance(lag: int) -> float:
        return float(np.dot(centred[lag:], centred[: n - lag]) / n)

    gamma0 = autocovariance(0)
    if gamma0 <= 1e-12 * mean * mean + 1e-30:  # every difference the same
        return none if mean != 0 else {**none, "dm_statistic": 0.0, "dm_p_value": 1.0}

    def p_value(variance: float, factor: float) -> tuple[float, float]:
        # Truncated autocovariances can sum below zero; fall back to lag 0 alone.
        variance = variance if variance > 1e-9 * gamma0 else gamma0
        statistic = mean / math.sqrt(variance / n) * factor
        return statistic, float(2 * stats.t.sf(abs(statistic), df=n - 1))

    short = gamma0 + 2 * sum(autocovariance(k) for k in range(1, min(horizon, n)))
    factor = math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic, p = p_value(short, factor)
    width = min(n - 1, max(horizon - 1, math.ceil(n ** (1 / 3))))
    wide = gamma0 + 2 * sum(
        (1 - k / (width + 1)) * autocovariance(k) for k in range(1, width + 1)
    )
    _, p_wide = p_value(wide, 1.0)
    return {"dm_statistic": statistic, "dm_p_value": p, "dm_p_value_wide": p_wide}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _significant(result: dict) -> bool:
    p_values = (result["dm_p_value"], result["dm_p_value_wide"])
    return all(p is not None and p < 0.05 for p in p_values)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: list[dict], settings: AutoscalerSettings) -> str:
    lines = [
        f"Forecast horizon {settings.horizon_s:.0f} s (provisioning lead "
        f"{settings.provisioning_lead_s:.0f} s + decision interval "
        f"{settings.decision_interval_s:.0f} s); upper bound at confidence "
        f"{settings.forecast_confidence}.",
        "",
        "| trace | slot (s) | scored slots | MAPE % | naive MAPE % "
        "| Holt-Winters only MAPE % | linear-scale MAPE % | median APE % "
        "| naive median APE % | WAPE % | naive WAPE % | upper coverage "
        "| median upper/actual | DM statistic | DM p | DM p, wide window |",
        "|---|" + "---:|" * 15,
    ]
    for r in results:
        lines.append(
            f"| {r['trace']} | {r['slot_s']:.0f} | {r['scored_slots']} "
            f"| {r['mape']:.2f} | {r['naive_mape']:.2f} "
            f"| {r['holt_winters_only_mape']:.2f} | {r['linear_scale_mape']:.2f} "
            f"| {r['median_ape']:.2f} "
            f"| {r['naive_median_ape']:.2f} | {r['wape']:.2f} "
            f"| {r['naive_wape']:.2f} | {r['upper_coverage']:.3f} "
            f"| {r['median_upper_over_actual']:.3f} "
            f"| {_fmt(r['dm_statistic'], '.2f')} | {_fmt(r['dm_p_value'], '.3g')} "
            f"| {_fmt(r['dm_p_value_wide'], '.3g')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data" / "traces",
    )
    parser.add_argument("--traces", nargs="*", default=[t.name for t in TRACES])
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    if not args.data_dir.is_dir():
        print(f"no trace folder at {args.data_dir}; nothing to measure")
        return 1
    settings = AutoscalerSettings()
    results = []
    for spec in TRACES:
        if spec.name in args.traces:
            results.append(evaluate(spec, args.data_dir, settings))
            print(f"{spec.name}: done in {results[-1]['seconds']:.1f} s", flush=True)

    table = markdown(results, settings)
    beaten = [r["trace"] for r in results if r["beats_naive"]]
    clearly = [r["trace"] for r in results if r["beats_naive"] and _significant(r)]
    summary = (
        f"forecaster MAPE below last-value MAPE on {len(beaten)} of {len(results)} "
        f"traces at a {settings.horizon_s:.0f} s horizon; on {len(clearly)} of them "
        "by more than chance (Diebold-Mariano p < 0.05 with both windows)"
    )
    print(table)
    print(summary)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "horizon_s": settings.horizon_s,
        "provisioning_lead_s": settings.provisioning_lead_s,
        "decision_interval_s": settings.decision_interval_s,
        "confidence": settings.forecast_confidence,
        "metric_notes": (
            "mape: mean |actual - forecast| / actual over scored slots with actual > 0;"
            " median_ape: the median of the same ratios;"
            " wape: sum |error| / sum actual;"
            " naive: the last observed slot's rate; holt_winters_only: the "
            "forecaster's Holt-Winters member without the online combination with "
            "the last value; upper_coverage: share of scored slots with actual <= "
            "upper bound; dm_statistic, dm_p_value: Diebold-Mariano test of equal "
            "MAPE against last value (absolute percentage errors, autocovariances "
            "up to horizon - 1 slots, Harvey-Leybourne-Newbold correction, "
            "Student's t with n - 1 degrees of freedom; negative: ours better); "
            "dm_p_value_wide: the same test with autocovariances up to "
            "max(h - 1, n^(1/3)) lags, Bartlett weights, no small-sample factor"
        ),
        "traces": results,
        "summary": summary,
    }
    (args.out_dir / "forecast_accuracy.json").write_text(
        json.dumps(record, indent=2) + "\n"
    )
    (args.out_dir / "forecast_accuracy.md").write_text(table + "\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
