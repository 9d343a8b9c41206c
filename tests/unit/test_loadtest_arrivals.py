"""Arrival schedules: trace expansion, compression, rate scaling and shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest import arrivals
from loadtest.arrivals import BinnedTrace, RequestTrace

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_binned_trace_file_fills_missing_minutes_with_zero(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text(
        "minute_utc,requests\n"
        "2020-01-01 00:00:00,5\n"
        "2020-01-01 00:01:00,7\n"
        "2020-01-01 00:03:00,9\n"  # 00:02 is missing
    )
    trace = arrivals.load_trace(path)
    assert isinstance(trace, BinnedTrace)
    assert trace.bin_s == 60.0
    assert trace.counts.tolist() == [5, 7, 0, 9]


def test_request_trace_file_gives_offsets_from_first_request(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:00.0000000,10,1\n"
        "2023-11-16 18:00:00.2500000,10,1\n"
        "2023-11-16 18:00:02.0000000,10,1\n"
    )
    trace = arrivals.load_trace(path)
    assert isinstance(trace, RequestTrace)
    assert trace.offsets_s.tolist() == pytest.approx([0.0, 0.25, 2.0])
    assert trace.span_s == pytest.approx(2.0)


def test_binned_expansion_keeps_counts_per_bin_within_poisson_tolerance() -> None:
    counts = np.array([100, 400, 50, 900, 0, 250, 600, 30] * 4, dtype=float)
    trace = BinnedTrace(counts=counts, bin_s=60.0)
    # 32 trace minutes played in 32 s: each minute becomes a 1 s bin.
    schedule = arrivals.trace_schedule(
        trace, duration_s=32.0, rng=_rng(), window_min=32
    )
    per_bin, _ = np.histogram(schedule, bins=np.arange(33.0))
    # A Poisson count has sd sqrt(c); 4.5 sd leaves a 32-bin test a ~1e-4 false alarm.
    assert np.all(np.abs(per_bin - counts) <= 4.5 * np.sqrt(counts) + 1)
    assert per_bin[4] == 0  # an empty minute stays empty
    assert np.all(np.diff(schedule) >= 0)


def test_binned_expansion_scales_to_target_mean_rate() -> None:
    trace = BinnedTrace(counts=np.array([10.0, 30.0, 20.0, 40.0]), bin_s=300.0)
    # 20 trace minutes in 10 s at 500 rps mean: 5,000 arrivals expected, sd ~71.
    schedule = arrivals.trace_schedule(
        trace, duration_s=10.0, rng=_rng(), window_min=20, target_rps=500.0
    )
    assert abs(len(schedule) - 5000) <= 4 * np.sqrt(5000)
    # The shape survives: bin 4 (40/100 of the requests) holds ~2,000 in [7.5, 10) s.
    last = np.sum(schedule >= 7.5)
    assert abs(last - 2000) <= 4 * np.sqrt(2000)


def test_partial_window_counts_edge_bins_pro_rata() -> None:
    trace = BinnedTrace(counts=np.array([600.0, 1200.0]), bin_s=60.0)
    lo_s, hi_s, counts = arrivals.window_bins(trace, start_s=30.0, window_s=60.0)
    # Half of bin 0 (300 of 600) then half of bin 1 (600 of 1200).
    assert lo_s.tolist() == [0.0, 30.0]
    assert hi_s.tolist() == [30.0, 60.0]
    assert counts.tolist() == [300.0, 600.0]


def test_request_trace_compression_keeps_every_request_in_the_window() -> None:
    trace = RequestTrace(
        offsets_s=np.array([0.0, 30.0, 61.0, 90.0, 150.0]), span_s=150.0
    )
    # Window [60, 120) s holds 61 and 90; 1 minute in 6 s divides offsets by 10.
    schedule = arrivals.trace_schedule(
        trace, duration_s=6.0, rng=_rng(), window_min=1, start_min=1
    )
    assert schedule.tolist() == pytest.approx([0.1, 3.0])


@pytest.mark.parametrize("target_rps", [20.0, 350.0])
def test_request_trace_rescale_hits_the_exact_target_count(target_rps: float) -> None:
    rng = _rng()
    base = np.sort(rng.uniform(0.0, 10.0, 1000))
    scaled = arrivals.rescale_requests(base, 10.0, target_rps, rng)
    # round(target_rps * 10 s) arrivals, whether thinned (200) or replicated (3,500).
    assert len(scaled) == round(target_rps * 10)
    assert scaled.min() >= 0.0 and scaled.max() < 10.0
    assert np.all(np.diff(scaled) >= 0)


def test_window_past_the_trace_end_is_refused() -> None:
    trace = BinnedTrace(counts=np.ones(10), bin_s=60.0)
    with pytest.raises(ValueError, match="exceeds the trace length"):
        arrivals.trace_schedule(trace, duration_s=5.0, rng=_rng(), window_min=11)


def test_constant_poisson_mean_is_the_target() -> None:
    schedule = arrivals.shape_schedule(
        "constant", duration_s=20.0, mean_rps=1000.0, rng=_rng()
    )
    # 20,000 expected, Poisson sd ~141.
    assert abs(len(schedule) - 20_000) <= 4 * np.sqrt(20_000)
    gaps = np.diff(schedule)
    # Exponential gaps: the coefficient of variation is 1.
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)


def test_uniform_process_gives_the_exact_count_evenly_spaced() -> None:
    schedule = arrivals.shape_schedule(
        "constant", duration_s=2.0, mean_rps=500.0, rng=_rng(), process="uniform"
    )
    assert len(schedule) == 1000
    # Arrival k at (k + 0.5) / 500 s.
    assert schedule[:3].tolist() == pytest.approx([0.001, 0.003, 0.005])


def test_ramp_puts_the_expected_share_in_each_half() -> None:
    schedule = arrivals.shape_schedule(
        "ramp", duration_s=10.0, mean_rps=1000.0, rng=_rng(), process="uniform"
    )
    # Rate 0.1 -> 1.9 (mean 1): first half holds (0.1 + 1.0) / 2 * 0.5 = 0.275.
    assert np.mean(schedule < 5.0) == pytest.approx(0.275, abs=0.001)


def test_burst_puts_the_expected_share_in_the_burst() -> None:
    params = arrivals.ShapeParams(
        burst_factor=4.0, burst_at_ratio=0.5, burst_length_ratio=0.1
    )
    schedule = arrivals.shape_schedule(
        "burst",
        duration_s=10.0,
        mean_rps=1000.0,
        rng=_rng(),
        process="uniform",
        params=params,
    )
    # Mean relative rate 0.9 * 1 + 0.1 * 4 = 1.3; the burst holds 0.4 / 1.3 = 0.3077.
    inside = np.mean((schedule >= 5.0) & (schedule < 6.0))
    assert inside == pytest.approx(0.4 / 1.3, abs=0.002)
    assert len(schedule) == 10_000


def test_diurnal_starts_at_the_trough_and_peaks_mid_run() -> None:
    schedule = arrivals.shape_schedule(
        "diurnal", duration_s=100.0, mean_rps=200.0, rng=_rng(), process="uniform"
    )
    first, _ = np.histogram(schedule, bins=[0.0, 1.0, 49.5, 50.5])
    # Rate at t=0 is 200 * (1 - 0.5) = 100/s, at t=50 s it is 200 * 1.5 = 300/s.
    assert first[0] == pytest.approx(100, abs=2)
    assert first[2] == pytest.approx(300, abs=2)


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        arrivals.shape_schedule("square", duration_s=1.0, mean_rps=1.0, rng=_rng())


@pytest.mark.skipif(not TRACES.is_dir(), reason="shared trace data not present")
def test_real_worldcup_minutes_survive_expansion() -> None:
    trace = arrivals.load_trace(TRACES / "worldcup98_requests_per_minute.csv")
    assert isinstance(trace, BinnedTrace) and trace.bin_s == 60.0
    # 30 minutes from minute 100, one second per minute.
    schedule = arrivals.trace_schedule(
        trace, duration_s=30.0, rng=_rng(), window_min=30, start_min=100
    )
    expected = trace.counts[100:130]
    per_bin, _ = np.histogram(schedule, bins=np.arange(31.0))
    assert np.all(np.abs(per_bin - expected) <= 4.5 * np.sqrt(expected) + 1)


@pytest.mark.skipif(not TRACES.is_dir(), reason="shared trace data not present")
def test_real_azure_trace_window_keeps_its_requests() -> None:
    trace = arrivals.load_trace(TRACES / "azure_llm_inference_2023_code.csv")
    assert isinstance(trace, RequestTrace)
    in_window = int(np.sum((trace.offsets_s >= 600) & (trace.offsets_s < 1200)))
    schedule = arrivals.trace_schedule(
        trace, duration_s=60.0, rng=_rng(), window_min=10, start_min=10
    )
    assert len(schedule) == in_window
    assert schedule.max() < 60.0
