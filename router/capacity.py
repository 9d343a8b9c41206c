"""A replica's measured capacity: sequences/s over batch size and token length.

The runtime's calibration (`bertgw calibrate`) writes one of these per model and
accelerator; the demand model, the autoscaler, the router's price model and the
simulator read it. Pure data plus interpolation, JSON in and out.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class CapacityPoint:
    """One measurement: a full batch of `batch_size` sequences of `seq_len_tokens`."""

    batch_size: int
    seq_len_tokens: int
    seq_per_s: float
    batch_latency_s: float


@dataclass(frozen=True)
class CapacityProfile:
    """Measured throughput of one replica of `model_name` on `accelerator`."""

    model_name: str
    accelerator: str
    points: tuple[CapacityPoint, ...]
    num_threads: int | None = None
    backend: str = "torch"
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a capacity profile needs at least one point")

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({p.batch_size for p in self.points}))

    @property
    def seq_lens(self) -> tuple[int, ...]:
        return tuple(sorted({p.seq_len_tokens for p in self.points}))

    def seq_per_s(self, batch_size: int, seq_len_tokens: int) -> float:
        """Throughput at a batch size and length, interpolated between measurements.

        Between measured lengths the time per sequence is interpolated linearly;
        outside the measured range the nearest measurement is used.
        """
        batch = _nearest_at_most(self.batch_sizes, batch_size)
        lens = [p for p in self.points if p.batch_size == batch]
        lens.sort(key=lambda p: p.seq_len_tokens)
        keys = [p.seq_len_tokens for p in lens]
        i = bisect.bisect_left(keys, seq_len_tokens)
        if i == 0:
            return lens[0].seq_per_s
        if i == len(lens):
            return lens[-1].seq_per_s
        lo, hi = lens[i - 1], lens[i]
        frac = (seq_len_tokens - lo.seq_len_tokens) / (
            hi.seq_len_tokens - lo.seq_len_tokens
        )
        seconds_per_seq = (1 - frac) / lo.seq_per_s + frac / hi.seq_per_s
        return 1.0 / seconds_per_seq

    def best_seq_per_s(self, seq_len_tokens: int) -> float:
        """The highest throughput over the measured batch sizes at this length."""
        return max(self.seq_per_s(b, seq_len_tokens) for b in self.batch_sizes)

    def batch_latency_s(self, batch_size: int, seq_len_tokens: int) -> float:
        """Time to run one batch of `batch_size` sequences of this length."""
        return batch_size / self.seq_per_s(batch_size, seq_len_tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CapacityProfile:
        points = tuple(CapacityPoint(**p) for p in data["points"])
        return cls(**{**data, "points": points})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> CapacityProfile:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _nearest_at_most(values: tuple[int, ...], target: int) -> int:
    """The largest value <= target, or the smallest value if none is."""
    i = bisect.bisect_right(values, target)
    return values[i - 1] if i > 0 else values[0]
