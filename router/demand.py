"""Demand model: what a request costs in FLOPs and how many replicas a rate needs.

FLOPs of one sequence of T real tokens through a BERT encoder with L layers, hidden
size h, intermediate size i (multiply-add = 2 FLOPs; softmax, GELU and layer-norm
elementwise work is left out, it is well under 1 % at these sizes):

    flops(T) = 2 * P_enc * T            every token passes every encoder weight
             + 4 * L * h * T**2         attention scores Q K^T (2 T^2 h per layer)
                                        and the weighted sum A V (2 T^2 h per layer)
             + 2 * P_head               pooler and classifier, on the [CLS] token only

    P_enc  = L * (4 h^2 + 4 h          Q, K, V, output projections with biases
                  + 2 h i + i + h      feed-forward in and out with biases
                  + 4 h)               two layer norms
    P_head = h^2 + h + h * labels + labels

A replica's speed comes from a measured `CapacityProfile` (the runtime's calibration)
or, for accelerators not measured here, from an `AcceleratorSpec`: public peak FLOP/s
times a sustained efficiency from config. Either gives the time of a batch of B
sequences of T tokens, from which the model picks the batch size that keeps the
service time inside a share of the SLO and reports throughput at that operating point.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router import queueing
from router.capacity import CapacityProfile

logger = logging.getLogger(__name__)

# Dense (no structured sparsity) FP16 tensor-core peaks from public datasheets:
# T4 65 TFLOPS mixed precision (NVIDIA T4 datasheet); A10 125 (NVIDIA A10 datasheet);
# A10G 70 (NVIDIA publishes no A10G sheet; figure from Baseten's "NVIDIA A10 vs A10G
# for ML model inference"); L4 121, half the 242 "with sparsity" of the NVIDIA L4
# datasheet; A100 (40 and 80 GB) 312 (NVIDIA A100 datasheet); H100 SXM 989, half the
# 1,979 "with sparsity" (NVIDIA H100 datasheet); V100 SXM2 125 (NVIDIA V100 datasheet).
PEAK_FP16_FLOPS_PER_S: dict[str, float] = {
    "T4": 65e12,
    "A10": 125e12,
    "A10G": 70e12,
    "L4": 121e12,
    "A100": 312e12,
    "A100-80GB": 312e12,
    "H100": 989e12,
    "V100": 125e12,
}

_DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a BERT-style encoder classifier that its cost depends on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    max_positions: int
    num_labels: int = 2

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "intermediate", "heads", "vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelShape.{name} must be > 0")
        if self.hidden % self.heads:
            raise ValueError(
                f"ModelShape.hidden={self.hidden} is not divisible by "
                f"heads={self.heads}"
            )

    @classmethod
    def from_hf_config(
        cls, config: Mapping[str, Any], num_labels: int | None = None
    ) -> ModelShape:
        """Build from a Hugging Face `config.json` dict (BERT key names)."""
        labels = num_labels
        if labels is None:
            id2label = config.get("id2label")
            labels = len(id2label) if id2label else int(config.get("num_labels", 2))
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=int(config["num_attention_heads"]),
            vocab=int(config["vocab_size"]),
            max_positions=int(config["max_position_embeddings"]),
            num_labels=labels,
        )

    @property
    def encoder_params(self) -> int:
        """Parameters every token passes through (the encoder stack, no embeddings)."""
        h, i = self.hidden, self.intermediate
        per_layer = (4 * h * h + 4 * h) + (2 * h * i + i + h) + 4 * h
        return self.layers * per_layer

    @property
    def head_params(self) -> int:
        """Pooler plus classifier: they run once per sequence, on [CLS]."""
        h = self.hidden
        return h * h + h + h * self.num_labels + self.num_labels

    def flops_per_sequence(self, seq_len_tokens: int) -> float:
        """Forward FLOPs of one sequence of this many tokens (module formula)."""
        t = min(max(seq_len_tokens, 1), self.max_positions)
        parameter_term = 2 * self.encoder_params * t
        attention_term = 4 * self.layers * self.hidden * t * t
        return float(parameter_term + attention_term + 2 * self.head_params)


@dataclass(frozen=True)
class AcceleratorSpec:
    """Speed of an accelerator not measured here: peak FLOP/s times efficiency.

    `efficiency` is the sustained share of peak on this workload; it is config, and a
    calibration run on the real accelerator should replace it. `batch_overhead_s` is
    the fixed cost of one batch (kernel launches, host-device copies).
    """

    name: str
    peak_flops_per_s: float
    efficiency: float
    batch_overhead_s: float = 0.0
    batch_sizes: tuple[int, ...] = _DEFAULT_BATCH_SIZES

    def __post_init__(self) -> None:
        if self.peak_flops_per_s <= 0:
            raise ValueError(f"{self.name}: peak_flops_per_s must be > 0")
        if not 0 < self.efficiency <= 1:
            raise ValueError(
                f"{self.name}: efficiency must be in (0, 1], got {self.efficiency}"
            )
        if self.batch_overhead_s < 0:
            raise ValueError(f"{self.name}: batch_overhead_s must be >= 0")

    @classmethod
    def from_public_peak(
        cls, name: str, efficiency: float, batch_overhead_s: float = 0.0
    ) -> AcceleratorSpec:
        """Use the datasheet FP16 peak of a known accelerator."""
        if name not in PEAK_FP16_FLOPS_PER_S:
            known = ", ".join(sorted(PEAK_FP16_FLOPS_PER_S))
            raise ValueError(f"no public peak for accelerator {name!r}; known: {known}")
        return cls(name, PEAK_FP16_FLOPS_PER_S[name], efficiency, batch_overhead_s)

    def batch_latency_s(
        self, shape: ModelShape, batch_size: int, seq_len_tokens: int
    ) -> float:
        flops = batch_size * shape.flops_per_sequence(seq_len_tokens)
        return self.batch_overhead_s + flops / (self.peak_flops_per_s * self.efficiency)


ReplicaSpeed = CapacityProfile | AcceleratorSpec


@dataclass(frozen=True)
class LengthMix:
    """A distribution of real token lengths per sequence (weights sum to 1)."""

    lengths_tokens: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.lengths_tokens or len(self.lengths_tokens) != len(self.weights):
            raise ValueError("LengthMix needs one weight per length, at least one")
        if any(w < 0 for w in self.weights) or not math.isclose(
            sum(self.weights), 1.0, rel_tol=1e-6
        ):
            raise ValueError(
                f"LengthMix weights must be >= 0 and sum to 1: {self.weights}"
            )
        if list(self.lengths_tokens) != sorted(self.lengths_tokens):
            raise ValueError("LengthMix lengths must be ascending")

    @classmethod
    def single(cls, seq_len_tokens: int) -> LengthMix:
        return cls((max(1, seq_len_tokens),), (1.0,))

    @classmethod
    def from_samples(
        cls,
        token_counts: Iterable[int],
        bucket_edges_tokens: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
    ) -> LengthMix:
        """Bucket sampled lengths; a bucket stands at its upper edge (conservative)."""
        edges = sorted(bucket_edges_tokens)
        counts = [0] * len(edges)
        for n in token_counts:
            counts[min(bisect.bisect_left(edges, n), len(edges) - 1)] += 1
        total = sum(counts)
        if total == 0:
            raise ValueError("LengthMix.from_samples needs at least one sample")
        kept = [(e, c / total) for e, c in zip(edges, counts, strict=True) if c]
        return cls(tuple(e for e, _ in kept), tuple(w for _, w in kept))

    @property
    def mean_tokens(self) -> float:
        return sum(
            t * w for t, w in zip(self.lengths_tokens, self.weights, strict=True)
        )

    def quantile_tokens(self, quantile: float) -> int:
        """The smallest length at or above which lies `1 - quantile` of the weight."""
        cumulative = 0.0
        for length, weight in zip(self.lengths_tokens, self.weights, strict=True):
            cumulative += weight
            if cumulative >= quantile - 1e-12:
                return length
        return self.lengths_tokens[-1]

    def scaled_to_mean(self, mean_tokens: float) -> LengthMix:
        """The same shape stretched so that its mean is `mean_tokens`."""
        factor = mean_tokens / self.mean_tokens
        merged: dict[int, float] = {}
        for length, weight in zip(self.lengths_tokens, self.weights, strict=True):
            key = max(1, round(length * factor))
            merged[key] = merged.get(key, 0.0) + weight
        keys = sorted(merged)
        return LengthMix(tuple(keys), tuple(merged[k] for k in keys))


@dataclass(frozen=True)
class ReplicaCapacity:
    """One replica's operating point: throughput and the service time of a batch."""

    seq_per_s: float
    service_s: float
    batch_size: int


class DemandModel:
    """Turns request rates and length mixes into sequences/s, FLOPs and replicas."""

    def __init__(
        self,
        shape: ModelShape,
        speeds: Mapping[str, ReplicaSpeed],
        length_mix: LengthMix | None = None,
        seq_per_request: float = 1.0,
        service_share_of_slo: float = 0.5,
        service_scv: float = 0.0,
    ) -> None:
        """Args:
        speeds: per accelerator name, a measured profile or a FLOP/s spec.
        length_mix: the expected token lengths when nothing has been observed.
        service_share_of_slo: the largest share of the SLO one batch may take; the
            rest is left for queueing.
        service_scv: squared coefficient of variation of a replica's service times,
            for the queueing model (router.queueing): 0, constant, because a batch
            of a given size and length always takes the same time.
        """
        if service_scv < 0:
            raise ValueError(f"service_scv must be >= 0, got {service_scv}")
        if not 0 < service_share_of_slo <= 1:
            raise ValueError(
                f"service_share_of_slo must be in (0, 1], got {service_share_of_slo}"
            )
        if seq_per_request < 1:
            raise ValueError(f"seq_per_request must be >= 1, got {seq_per_request}")
        self.shape = shape
        self.speeds = dict(speeds)
        self.length_mix = length_mix or LengthMix.single(32)
        self.seq_per_request = seq_per_request
        self.service_share_of_slo = service_share_of_slo
        self.service_scv = service_scv

    def flops_per_request(
        self, mix: LengthMix | None = None, seq_per_request: float | None = None
    ) -> float:
        mix = mix or self.length_mix
        spr = seq_per_request or self.seq_per_request
        per_seq = sum(
            w * self.shape.flops_per_sequence(t)
            for t, w in zip(mix.lengths_tokens, mix.weights, strict=True)
        )
        return spr * per_seq

    def seq_per_s(
        self, request_rps: float, seq_per_request: float | None = None
    ) -> float:
        return request_rps * (seq_per_request or self.seq_per_request)

    def batch_latency_s(
        self, accelerator: str, batch_size: int, seq_len_tokens: int
    ) -> float:
        speed = self._speed(accelerator)
        if isinstance(speed, AcceleratorSpec):
            return speed.batch_latency_s(self.shape, batch_size, seq_len_tokens)
        return speed.batch_latency_s(batch_size, seq_len_tokens)

    def replica_capacity(
        self,
        accelerator: str,
        slo_s: float,
        quantile: float = 0.95,
        mix: LengthMix | None = None,
    ) -> ReplicaCapacity:
        """The operating point of one replica: best throughput whose batch fits.

        Batches are assumed length-bucketed (the runtime sorts by length), so the
        time per sequence is the mix-weighted time at each length; the service time
        is that of a full batch at the mix's `quantile` length.
        """
        budget_s = slo_s * self.service_share_of_slo
        best: ReplicaCapacity | None = None
        for point in self.operating_points(accelerator, quantile, mix):
            if best is None:
                best = point  # the smallest batch, kept even if it misses the budget
            elif point.service_s <= budget_s and point.seq_per_s > best.seq_per_s:
                best = point
        assert best is not None
        if best.service_s > budget_s:
            logger.warning(
                "event=batch_over_slo_share accelerator=%s service_s=%.4f "
                "budget_s=%.4f",
                accelerator,
                best.service_s,
                budget_s,
            )
        return best

    def operating_points(
        self,
        accelerator: str,
        quantile: float = 0.95,
        mix: LengthMix | None = None,
    ) -> tuple[ReplicaCapacity, ...]:
        """Each batch size the replica may run at: its throughput on the mix
        (batches length-bucketed) and the time of a full batch at the mix's
        `quantile` length."""
        mix = mix or self.length_mix
        tail_tokens = mix.quantile_tokens(quantile)
        points = []
        for batch in self._batch_sizes(accelerator):
            service_s = self.batch_latency_s(accelerator, batch, tail_tokens)
            per_seq_s = sum(
                w * self.batch_latency_s(accelerator, batch, t) / batch
                for t, w in zip(mix.lengths_tokens, mix.weights, strict=True)
            )
            points.append(ReplicaCapacity(1.0 / per_seq_s, service_s, batch))
        return tuple(points)

    def replicas_needed(
        self,
        accelerator: str,
        request_rps: float,
        slo_s: float,
        quantile: float = 0.95,
        mix: LengthMix | None = None,
        seq_per_request: float | None = None,
        network_s: float = 0.0,
        max_replicas: int = 10_000,
    ) -> int | None:
        """Fewest replicas serving `request_rps` with P(latency > slo) <= 1 - quantile
        (see `carried_rps`). None when no count up to `max_replicas` can (a batch
        alone, or with the network, exceeds the SLO)."""
        if request_rps <= 0:
            return 0
        points = self.operating_points(accelerator, quantile, mix)
        spr = seq_per_request or self.seq_per_request
        fastest = max(p.seq_per_s for p in points) / spr
        # Stability needs more servers than the offered load at the fastest point.
        first = int(request_rps / fastest) + 1
        for replicas in range(first, max_replicas + 1):
            carried = carried_rps(
                points, replicas, spr, slo_s, network_s, quantile, self.service_scv
            )
            if carried >= request_rps:
                return replicas
            if carried == 0.0:
                return None  # no batch fits the SLO: more replicas do not help
        return None

    def max_request_rps(
        self,
        accelerator: str,
        replicas: int,
        slo_s: float,
        quantile: float = 0.95,
        mix: LengthMix | None = None,
        seq_per_request: float | None = None,
        network_s: float = 0.0,
    ) -> float:
        """The highest request rate `replicas` replicas serve within the SLO."""
        return carried_rps(
            self.operating_points(accelerator, quantile, mix),
            replicas,
            seq_per_request or self.seq_per_request,
            slo_s,
            network_s,
            quantile,
            self.service_scv,
        )

    def _speed(self, accelerator: str) -> ReplicaSpeed:
        try:
            return self.speeds[accelerator]
        except KeyError:
            known = ", ".join(sorted(self.speeds)) or "none"
            raise KeyError(
                f"no capacity profile or spec for accelerator {accelerator!r}; "
                f"known: {known}"
            ) from None

    def _batch_sizes(self, accelerator: str) -> tuple[int, ...]:
        speed = self._speed(accelerator)
        return speed.batch_sizes


def carried_rps(
    points: Sequence[ReplicaCapacity],
    replicas: int,
    seq_per_request: float,
    slo_s: float,
    network_s: float,
    quantile: float,
    service_scv: float,
) -> float:
    """Highest request rate `replicas` replicas carry within the SLO at `quantile`,
    at the best of the operating points.

    At a point, a request's latency is the network round trip, its wait in the queue
    (router.queueing: c servers of the point's request rate), the rest of the batch
    in progress when its turn comes, and its own batch, or as many as its texts
    fill. Where a request holds a whole batch or more (batch size <= its texts), a
    server's service is the request's own and the queue's wait already holds the
    rest of the one in progress; where a batch holds several requests, the queue
    serves texts one by one and knows nothing of batches, so the batch in progress
    (a full one at the loads this is asked about: replicas run back to back) is
    charged on top. The queue gets what the SLO leaves after the rest. A smaller
    batch is slower but leaves more of the SLO to the queue: at a load that a
    smaller batch carries, a replica's batches stay that small (a batch holds what
    queued while the last one ran), which wins where the network takes much of the
    SLO. 0.0 when no point leaves any budget.
    """
    best = 0.0
    if replicas <= 0:
        return best
    for point in points:
        batches = max(1, math.ceil(seq_per_request / point.batch_size - 1e-9))
        in_progress = 1 if point.batch_size > seq_per_request else 0
        budget_s = slo_s - (batches + in_progress) * point.service_s - network_s
        if budget_s <= 0:
            continue
        rate = queueing.max_arrival_rps(
            replicas,
            point.seq_per_s / seq_per_request,
            budget_s,
            1.0 - quantile,
            service_scv,
        )
        best = max(best, rate)
    return best
