"""Arrival schedules for the open-loop generator: real traces and synthetic shapes.

A schedule is a sorted float64 array of send offsets in seconds from the run start.
Per-request traces (Azure LLM 2023) keep their own timestamps; binned traces
(WorldCup98 per minute, NAB ELB per 5 minutes) are expanded as a Poisson process with
a piecewise-constant rate. Both are compressed in time (a window of W trace minutes
played in D seconds) and, on request, scaled so the mean rate hits a target.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHAPES = ("constant", "ramp", "diurnal", "burst")
PROCESSES = ("poisson", "uniform")

# Grid used to integrate and normalise synthetic rate shapes.
_GRID_POINTS = 20_001


@dataclass(frozen=True)
class RequestTrace:
    """Per-request arrivals: offsets in seconds from the trace's first request."""

    offsets_s: np.ndarray
    span_s: float


@dataclass(frozen=True)
class BinnedTrace:
    """Request counts per fixed-width bin; missing bins in the file count as zero."""

    counts: np.ndarray
    bin_s: float


@dataclass(frozen=True)
class ShapeParams:
    """Unitless parameters of the synthetic shapes; the mean is set separately."""

    ramp_start_ratio: float = 0.1
    ramp_end_ratio: float = 1.9
    diurnal_amplitude: float = 0.5
    diurnal_cycles: float = 1.0
    burst_factor: float = 4.0
    burst_at_ratio: float = 0.5
    burst_length_ratio: float = 0.1


def load_trace(path: str | Path) -> RequestTrace | BinnedTrace:
    """Reads a trace CSV, telling per-request from binned files by their header."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for row in reader if row]
    if not rows:
        raise ValueError(f"trace {path.name} has no rows")
    columns = [name.strip() for name in header]

    if columns[0] == "TIMESTAMP":
        stamps = np.array([row[0] for row in rows], dtype="datetime64[ns]")
        offsets_s = (stamps - stamps[0]).astype(np.int64) / 1e9
        offsets_s = np.sort(offsets_s)
        return RequestTrace(offsets_s=offsets_s, span_s=float(offsets_s[-1]))

    if len(columns) < 2:
        raise ValueError(f"trace {path.name}: expected timestamp,count columns")
    stamps = np.array([row[0] for row in rows], dtype="datetime64[s]")
    values = np.array([float(row[1]) for row in rows])
    steps_s = np.diff(stamps).astype(np.int64)
    if len(steps_s) == 0 or int(steps_s.min()) <= 0:
        raise ValueError(f"trace {path.name}: timestamps must be strictly increasing")
    # The smallest step is the bin width; longer steps are gaps of empty bins.
    bin_s = float(steps_s.min())
    index = ((stamps - stamps[0]).astype(np.int64) // int(bin_s)).astype(np.int64)
    counts = np.zeros(int(index[-1]) + 1)
    counts[index] = values
    return BinnedTrace(counts=counts, bin_s=bin_s)


def trace_schedule(
    trace: RequestTrace | BinnedTrace,
    *,
    duration_s: float,
    rng: np.random.Generator,
    window_min: float | None = None,
    start_min: float = 0.0,
    target_rps: float | None = None,
) -> np.ndarray:
    """Plays `window_min` trace minutes from `start_min` in `duration_s` seconds.

    Args:
        window_min: trace minutes to play; None plays `duration_s` in real time.
        target_rps: scale the number of arrivals so their mean rate is this;
            None keeps the trace's own counts (compression raises the rate).
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    window_s = duration_s if window_min is None else window_min * 60.0
    start_s = start_min * 60.0
    if window_s <= 0 or start_s < 0:
        raise ValueError(f"window_min and start_min must be >= 0: {window_min=}")
    span_s = trace.span_s if isinstance(trace, RequestTrace) else _binned_span(trace)
    if start_s + window_s > span_s + 1e-9:
        raise ValueError(
            f"trace window [{start_min}, {start_min + window_s / 60:.2f}] min exceeds "
            f"the trace length {span_s / 60:.2f} min"
        )
    time_factor = duration_s / window_s

    if isinstance(trace, RequestTrace):
        offsets = trace.offsets_s
        inside = offsets[(offsets >= start_s) & (offsets < start_s + window_s)]
        schedule = (inside - start_s) * time_factor
        if target_rps is None:
            return schedule
        return rescale_requests(schedule, duration_s, target_rps, rng)

    lo_s, hi_s, counts = window_bins(trace, start_s, window_s)
    total = float(counts.sum())
    scale = 1.0
    if target_rps is not None:
        if total <= 0:
            raise ValueError("trace window holds no requests; cannot scale to target")
        scale = target_rps * duration_s / total
    return expand_counts(counts * scale, lo_s * time_factor, hi_s * time_factor, rng)


def _binned_span(trace: BinnedTrace) -> float:
    return len(trace.counts) * trace.bin_s


def window_bins(
    trace: BinnedTrace, start_s: float, window_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window-relative bin edges and counts; edge bins cut by the window count pro rata.

    Returns:
        (lo_s, hi_s, counts) for each bin that overlaps the window.
    """
    edges_s = np.arange(len(trace.counts) + 1) * trace.bin_s
    lo_s = np.clip(edges_s[:-1], start_s, start_s + window_s)
    hi_s = np.clip(edges_s[1:], start_s, start_s + window_s)
    overlap = hi_s > lo_s
    share = (hi_s - lo_s) / trace.bin_s
    return (
        lo_s[overlap] - start_s,
        hi_s[overlap] - start_s,
        (trace.counts * share)[overlap],
    )


def expand_counts(
    expected_counts: np.ndarray,
    lo_s: np.ndarray,
    hi_s: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A Poisson process with a constant rate in each bin: N_i ~ Poisson(c_i) there."""
    numbers = rng.poisson(np.maximum(expected_counts, 0.0))
    starts = np.repeat(lo_s, numbers)
    widths = np.repeat(hi_s - lo_s, numbers)
    return np.sort(starts + rng.uniform(0.0, 1.0, len(starts)) * widths)


def rescale_requests(
    schedule: np.ndarray, duration_s: float, target_rps: float, rng: np.random.Generator
) -> np.ndarray:
    """Thins or replicates per-request arrivals to exactly round(target_rps * D).

    Replicas of an arrival land uniformly between it and the next arrival, so the
    local rate keeps the trace's shape.
    """
    wanted = int(round(target_rps * duration_s))
    have = len(schedule)
    if have == 0:
        raise ValueError("trace window holds no requests; cannot scale to target")
    if wanted <= have:
        keep = np.sort(rng.choice(have, size=wanted, replace=False))
        return schedule[keep]
    gaps = np.diff(np.append(schedule, duration_s))
    copies = wanted // have - 1
    extra = rng.choice(have, size=wanted - (copies + 1) * have, replace=False)
    sources = np.concatenate([np.tile(np.arange(have), copies), extra])
    replicas = schedule[sources] + rng.uniform(0.0, 1.0, len(sources)) * gaps[sources]
    return np.sort(np.concatenate([schedule, replicas]))


def shape_rate(
    shape: str, duration_s: float, params: ShapeParams
) -> Callable[[np.ndarray], np.ndarray]:
    """The relative rate r(t) of a synthetic shape (not yet normalised)."""
    p = params
    if shape == "constant":
        return lambda t: np.ones_like(t)
    if shape == "ramp":
        slope = (p.ramp_end_ratio - p.ramp_start_ratio) / duration_s
        return lambda t: p.ramp_start_ratio + slope * t
    if shape == "diurnal":
        if not 0 <= p.diurnal_amplitude <= 1:
            raise ValueError(
                f"diurnal_amplitude must be in [0, 1]: {p.diurnal_amplitude}"
            )
        omega = 2 * math.pi * p.diurnal_cycles / duration_s
        # Starts at the trough, as a day starts at night.
        return lambda t: 1 + p.diurnal_amplitude * np.sin(omega * t - math.pi / 2)
    if shape == "burst":
        lo = p.burst_at_ratio * duration_s
        hi = lo + p.burst_length_ratio * duration_s
        return lambda t: np.where((t >= lo) & (t < hi), p.burst_factor, 1.0)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def shape_schedule(
    shape: str,
    *,
    duration_s: float,
    mean_rps: float,
    rng: np.random.Generator,
    process: str = "poisson",
    params: ShapeParams | None = None,
) -> np.ndarray:
    """Arrivals whose rate follows `shape` scaled to a mean of `mean_rps`.

    Args:
        process: "poisson" (random, by thinning) or "uniform" (arrival k at the time
            the cumulative rate reaches k + 0.5, so counts match the shape exactly).
    """
    if duration_s <= 0 or mean_rps <= 0:
        raise ValueError(
            f"duration_s and mean_rps must be > 0: {duration_s}, {mean_rps}"
        )
    relative = shape_rate(shape, duration_s, params or ShapeParams())
    grid = np.linspace(0.0, duration_s, _GRID_POINTS)
    values = relative(grid)
    if float(values.min()) < 0:
        raise ValueError(f"shape {shape!r} has a negative rate; check its parameters")
    mean = float(np.trapezoid(values, grid)) / duration_s
    scale = mean_rps / mean

    if process == "poisson":
        peak_rps = float(values.max()) * scale
        candidates = np.sort(
            rng.uniform(0.0, duration_s, rng.poisson(peak_rps * duration_s))
        )
        accept = (
            rng.uniform(0.0, peak_rps, len(candidates)) < relative(candidates) * scale
        )
        return candidates[accept]
    if process == "uniform":
        increments = (values[1:] + values[:-1]) / 2 * np.diff(grid) * scale
        cumulative = np.concatenate([[0.0], np.cumsum(increments)])
        count = int(round(cumulative[-1]))
        return np.interp(np.arange(count) + 0.5, cumulative, grid)
    raise ValueError(f"unknown process {process!r}; expected one of {PROCESSES}")
