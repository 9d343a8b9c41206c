"""Real request traces turned into per-second arrival rates scaled to a target mean.

Count traces (WorldCup98 per minute, NAB ELB per 5 minutes) are interpolated linearly
between slot centres, so they carry no burstiness inside a slot. The two Azure LLM
traces are per-request, 2.6 and 5.5 requests/s: scaling their per-second counts by
thousands would turn one second with 67 requests into 500,000 requests/s, far
burstier than many independent clients at 20,000/s, so their rate is a 10 s moving
average of the counts (bursts keep a 10 s footprint, still up to ~4x the mean). The
warm-up part before the simulated window feeds the
forecasters' history; the scale is set so the simulated window averages the target.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

_PER_REQUEST_SMOOTHING_S = 10

TRACE_FILES: dict[str, str] = {
    "worldcup98": "worldcup98_requests_per_minute.csv",
    "nab_elb": "nab_aws_elb_request_count_5min.csv",
    "azure_conv": "azure_llm_inference_2023_conv.csv",
    "azure_code": "azure_llm_inference_2023_code.csv",
}


@dataclass(frozen=True)
class RateTrace:
    """Arrival rate per second over warm-up plus the simulated window."""

    name: str
    source_slot_s: float
    rates_rps: np.ndarray
    warmup_s: int
    scale: float
    start_label: str

    @property
    def sim_s(self) -> int:
        return len(self.rates_rps) - self.warmup_s

    @property
    def sim_rates_rps(self) -> np.ndarray:
        return self.rates_rps[self.warmup_s :]


def _parse_time(text: str) -> datetime:
    # The Azure stamps carry 7 fractional digits; datetime takes at most 6.
    head, _, frac = text.partition(".")
    stamp = datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
    if frac:
        stamp = stamp.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return stamp


def _count_series(path: Path) -> tuple[list[datetime], np.ndarray]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [(_parse_time(r[0]), float(r[1])) for r in reader]
    return [r[0] for r in rows], np.array([r[1] for r in rows])


def _interpolate(
    stamps: list[datetime], counts: np.ndarray, slot_s: float, start: datetime, n_s: int
) -> np.ndarray:
    """Per-second rates from slot counts; missing slots read as zero requests."""
    t0 = stamps[0]
    offsets_s = np.array([(s - t0).total_seconds() for s in stamps])
    full_slots = int(round(offsets_s[-1] / slot_s)) + 1
    per_slot = np.zeros(full_slots)
    per_slot[np.round(offsets_s / slot_s).astype(int)] = counts / slot_s
    centres_s = np.arange(full_slots) * slot_s + slot_s / 2
    seconds = (start - t0).total_seconds() + np.arange(n_s) + 0.5
    return np.interp(seconds, centres_s, per_slot)


def load_trace(
    name: str,
    traces_dir: Path,
    *,
    target_mean_rps: float,
    sim_days: float = 1.0,
    warmup_days: float = 7.0,
    day: str | None = None,
) -> RateTrace:
    """Load a named trace as per-second rates.

    Count traces simulate `sim_days` starting at `day` (default: the last whole day
    with `warmup_days` before it, or 1998-06-24 for WorldCup98, a match day with a
    week of tournament traffic before it). Per-request traces (one hour long)
    simulate everything after their first 10 minutes, which are the warm-up.
    """
    path = traces_dir / TRACE_FILES[name]
    if name.startswith("azure"):
        stamps, _ = _request_times(path)
        t0 = stamps[0]
        offsets = np.array([(s - t0).total_seconds() for s in stamps])
        n_s = int(offsets[-1]) + 1
        counts = np.bincount(offsets.astype(int), minlength=n_s).astype(float)
        # A 10 s moving average: see the module docstring.
        window = np.ones(_PER_REQUEST_SMOOTHING_S) / _PER_REQUEST_SMOOTHING_S
        rates = np.convolve(counts, window, mode="same")
        warmup_s = 600
        slot_s = 1.0
        label = t0.strftime("%Y-%m-%d %H:%M:%S")
    else:
        stamps, counts = _count_series(path)
        slot_s = 60.0 if name == "worldcup98" else 300.0
        if day is None and name == "worldcup98":
            day = "1998-06-24"
        if day is None:
            last = stamps[-1].replace(hour=0, minute=0, second=0)
            start = last - _days(sim_days)
        else:
            start = datetime.strptime(day, "%Y-%m-%d")
        begin = max(start - _days(warmup_days), _midnight_after(stamps[0]))
        warmup_s = int((start - begin).total_seconds())
        n_s = warmup_s + int(sim_days * 86400)
        rates = _interpolate(stamps, counts, slot_s, begin, n_s)
        label = start.strftime("%Y-%m-%d")
    sim_mean = float(rates[warmup_s:].mean())
    if sim_mean <= 0:
        raise ValueError(f"trace {name}: no requests in the simulated window")
    scale = target_mean_rps / sim_mean
    return RateTrace(name, slot_s, rates * scale, warmup_s, scale, label)


def _days(n: float) -> timedelta:
    return timedelta(days=n)


def _midnight_after(stamp: datetime) -> datetime:
    midnight = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == stamp else midnight + _days(1)


def _request_times(path: Path) -> tuple[list[datetime], np.ndarray]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [(_parse_time(r[0]), int(r[1])) for r in reader]
    return [r[0] for r in rows], np.array([r[1] for r in rows])


def load_token_lengths(traces_dir: Path, max_tokens: int) -> np.ndarray:
    """Prompt lengths of the Azure conversation trace, cut at the model's limit.

    The simulated requests classify LLM prompts (moderation or routing in front of
    an LLM service), so the trace's own prompt lengths are their token counts.
    """
    _, tokens = _request_times(traces_dir / TRACE_FILES["azure_conv"])
    return np.minimum(tokens, max_tokens)
