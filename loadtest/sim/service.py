"""How fast a simulated replica serves: its batching curve for a token-length mix.

A replica runs one batch at a time; the demand model gives the batch's duration
(from a measured capacity profile or an accelerator spec). Under a
steady load of lambda sequences/s a replica settles at the smallest batch that
fills while the previous one runs (b >= lambda * t(b)); past the largest batch it is
overloaded and the excess waits in the cloud's queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.demand import DemandModel, LengthMix


@dataclass(frozen=True)
class ServiceCurve:
    """Batch duration over batch size (index b-1) for one replica and length mix."""

    batch_latency_s: tuple[float, ...]
    mean_tokens: float

    @classmethod
    def from_demand(
        cls, demand: DemandModel, accelerator: str, mix: LengthMix, max_batch: int
    ) -> ServiceCurve:
        """Batch times from the demand model, length-bucketed like the runtime.

        The runtime sorts a batch by length into micro-batches, so a batch of b
        costs b times the mix-weighted time per sequence at batch size b.
        """
        latencies = []
        for b in range(1, max_batch + 1):
            per_seq_s = sum(
                w * demand.batch_latency_s(accelerator, b, t) / b
                for t, w in zip(mix.lengths_tokens, mix.weights, strict=True)
            )
            latencies.append(b * per_seq_s)
        return cls(tuple(latencies), mix.mean_tokens)

    @property
    def max_batch(self) -> int:
        return len(self.batch_latency_s)

    @property
    def peak_seq_per_s(self) -> float:
        """Throughput with full batches: the most a replica can serve."""
        return self.max_batch / self.batch_latency_s[-1]

    def batch_for_load(self, seq_per_s: float) -> int:
        """The batch size a replica settles at under this per-replica load."""
        if seq_per_s <= 0:
            return 1
        for b, t_s in enumerate(self.batch_latency_s, start=1):
            if b >= seq_per_s * t_s:
                return b
        return self.max_batch

    def late_fraction(self, seq_per_s: float, slack_s: float) -> float:
        """Share of sequences whose time in a replica exceeds `slack_s`.

        A sequence waits for the batch in progress when it arrives (uniform over the
        batch duration t, with probability equal to the replica's busy share) and
        then rides the next batch, so its time is t plus that residual.
        """
        b = self.batch_for_load(seq_per_s)
        t_s = self.batch_latency_s[b - 1]
        if slack_s < t_s:
            return 1.0
        busy = min(1.0, seq_per_s * t_s / b)
        return busy * min(1.0, max(0.0, (2 * t_s - slack_s) / t_s))

    def mean_time_s(self, seq_per_s: float) -> float:
        """Mean time a sequence spends in a replica (residual wait plus its batch)."""
        b = self.batch_for_load(seq_per_s)
        t_s = self.batch_latency_s[b - 1]
        busy = min(1.0, seq_per_s * t_s / b)
        return t_s + busy * t_s / 2
