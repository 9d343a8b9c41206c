"""The router's live latency, throughput and price arithmetic."""

from __future__ import annotations

import math

import pytest

from router.latency import CloudLatency, DecayingRatio, DecayingSketch, queue_wait_s
from router.price import effective_seq_per_s, usd_per_text


def test_mean_weighs_a_newer_observation_double_after_one_half_life() -> None:
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    sketch.add(0.1, now_s=0.0)
    sketch.add(0.4, now_s=10.0)

    # One half-life apart: weights 1 and 2, so (1 * 0.1 + 2 * 0.4) / 3 = 0.3.
    assert sketch.mean_s() == pytest.approx(0.3)


def test_quantiles_move_to_new_observations_as_old_ones_decay() -> None:
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    for _ in range(100):
        sketch.add(0.1, now_s=0.0)
    assert sketch.quantile_s(0.5) == pytest.approx(0.1)

    for _ in range(20):
        sketch.add(0.3, now_s=30.0)

    # Three half-lives later the 100 old ones weigh 100 / 2**3 = 12.5 against 20
    # new ones: the old share is 12.5 / 32.5 = 38 %, so the median is new (0.3) and
    # the 25th percentile still old (0.1).
    assert sketch.quantile_s(0.5) == pytest.approx(0.3)
    assert sketch.quantile_s(0.25) == pytest.approx(0.1)


def test_effective_count_halves_every_half_life() -> None:
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    for _ in range(8):
        sketch.add(0.05, now_s=0.0)

    # 8 observations: 8 / 2**1 = 4 after one half-life, 8 / 2**3 = 1 after three.
    assert sketch.effective_count(10.0) == pytest.approx(4.0)
    assert sketch.effective_count(30.0) == pytest.approx(1.0)


def test_tail_quantile_is_within_bucket_error_of_the_exact_one() -> None:
    sketch = DecayingSketch(half_life_s=60.0, start_s=0.0)
    values_s = [i / 1000.0 for i in range(1, 1001)]  # 1 ms .. 1000 ms, uniform
    for value_s in values_s:
        sketch.add(value_s, now_s=0.0)

    # Exact p95 and p99 are 0.950 s and 0.990 s; buckets are 5 % wide.
    assert sketch.quantile_s(0.95) == pytest.approx(0.95, rel=0.05)
    assert sketch.quantile_s(0.99) == pytest.approx(0.99, rel=0.05)
    assert sketch.quantile_s(0.5) == pytest.approx(0.5, rel=0.05)


def test_an_empty_sketch_has_no_estimate() -> None:
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    assert sketch.mean_s() is None
    assert sketch.quantile_s(0.95) is None


def test_weights_rescale_over_long_runs_without_overflow() -> None:
    sketch = DecayingSketch(half_life_s=1.0, start_s=0.0)
    ratio = DecayingRatio(half_life_s=1.0, start_s=0.0)

    # 10,000 half-lives: unscaled weights would reach 2**10000 and overflow.
    for step in range(1, 10_001):
        sketch.add(0.2 if step % 2 else 0.4, now_s=float(step))
        ratio.add(1.0, 2.0, now_s=float(step))

    mean_s = sketch.mean_s()
    assert mean_s is not None and math.isfinite(mean_s)
    # The last two steps dominate: weights 1 (0.4 at t) and 1/2 (0.2 at t - 1), then
    # 1/4, ...: mean = (0.4 * 4/3 + 0.2 * 2/3) / 2 = 0.3333.
    assert mean_s == pytest.approx(1.0 / 3.0, rel=1e-6)
    assert ratio.value() == pytest.approx(0.5)
    assert sketch.effective_count(10_000.0) == pytest.approx(2.0, rel=1e-6)


def test_queue_wait_is_backlog_over_pooled_throughput() -> None:
    # 16 texts ahead, 2 replicas at 64 texts/s: 16 / (2 * 64) = 0.125 s.
    assert queue_wait_s(16, 2, 64.0) == 0.125
    assert queue_wait_s(0, 2, 64.0) == 0.0
    assert queue_wait_s(1, 0, 64.0) == math.inf


def test_failures_count_as_errors_but_never_as_latency() -> None:
    latency = CloudLatency(half_life_s=10.0, start_s=0.0)
    latency.on_dispatch(1)
    latency.on_dispatch(1)
    latency.on_complete(0.0, num_texts=1, rtt_s=0.001, service_s=0.001, ok=False)
    latency.on_complete(0.0, num_texts=1, rtt_s=0.05, service_s=0.1, ok=True)

    assert latency.error_rate() == 0.5
    assert latency.rtt.mean_s() == 0.05
    assert latency.service.mean_s() == 0.1
    assert latency.in_flight_requests == 0
    assert latency.in_flight_texts == 0


def test_error_rate_decays_as_successes_follow() -> None:
    latency = CloudLatency(half_life_s=10.0, start_s=0.0)
    latency.on_complete(0.0, num_texts=1, rtt_s=None, service_s=0.0, ok=False)
    latency.on_complete(10.0, num_texts=1, rtt_s=0.01, service_s=0.02, ok=True)

    # The failure is one half-life old: weight 1 against 2, so 1 / 3 errors.
    assert latency.error_rate() == pytest.approx(1.0 / 3.0)


def test_observed_throughput_is_texts_per_second_of_service() -> None:
    latency = CloudLatency(half_life_s=10.0, start_s=0.0)
    latency.on_complete(0.0, num_texts=4, rtt_s=0.01, service_s=0.1, ok=True)
    latency.on_complete(0.0, num_texts=2, rtt_s=0.01, service_s=0.1, ok=True)

    # (4 + 2) texts in (0.1 + 0.1) s of service = 30 texts/s.
    assert latency.observed_seq_per_s() == pytest.approx(30.0)


def test_price_per_text_is_hourly_price_over_hourly_throughput() -> None:
    # $3.60 an hour at 100 texts/s = 360,000 texts an hour: $0.00001 a text.
    assert usd_per_text(3.6, 100.0) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="seq_per_s_per_replica"):
        usd_per_text(3.6, 0.0)


def test_calibrated_capacity_beats_observed_rate_which_beats_the_default() -> None:
    assert effective_seq_per_s(200.0, 30.0, 50.0) == 200.0
    assert effective_seq_per_s(None, 30.0, 50.0) == 30.0
    assert effective_seq_per_s(None, None, 50.0) == 50.0


def test_a_tail_needs_evidence_beyond_one_slow_observation():
    # 20 requests at 50 ms and one at 400 ms, all just now (no decay yet). The
    # slow one is 1/21 = 4.8 % of the weight, so it is the plain p99; asking for
    # two observations above the tail moves it to the fast ones.
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    for _ in range(20):
        sketch.add(0.05, 0.0)
    sketch.add(0.4, 0.0)
    assert sketch.quantile_s(0.99) == pytest.approx(0.4)
    assert sketch.quantile_s(0.99, min_tail=2.0, now_s=0.0) == pytest.approx(0.05)
    # A second slow request is evidence enough.
    sketch.add(0.4, 0.0)
    assert sketch.quantile_s(0.99, min_tail=2.0, now_s=0.0) == pytest.approx(0.4)
    # Ten seconds on, the two slow ones count as one fresh observation
    # (2 x 2**-1): the tail needs two, so it is the fast ones again.
    assert sketch.quantile_s(0.99, min_tail=2.0, now_s=10.0) == pytest.approx(0.05)


def test_the_evidence_rule_never_reaches_below_the_median():
    # Two observations, one slow: "two above the tail" would be both, but the tail
    # stops at half the weight, so the estimate is the slow one, not the fast.
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    sketch.add(0.05, 0.0)
    sketch.add(0.4, 0.0)
    assert sketch.quantile_s(0.99, min_tail=2.0, now_s=0.0) == pytest.approx(0.4)


def test_the_evidence_rule_survives_a_cloud_silent_for_days():
    # Three days without an observation: a fresh weight would be 2**(259200/10),
    # far past a float; the estimate is simply the median-capped tail.
    sketch = DecayingSketch(half_life_s=10.0, start_s=0.0)
    for value in (0.05, 0.05, 0.05, 0.4):
        sketch.add(value, 0.0)
    assert sketch.quantile_s(0.99, min_tail=2.0, now_s=3 * 86_400.0) == pytest.approx(
        0.05
    )
