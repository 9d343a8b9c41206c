"""What a request costs in each cloud: replica price over replica throughput.

A pool of running replicas costs `replicas * usd_per_hour` and serves
`replicas * seq_per_s * 3600` texts an hour, so the price of one text does not depend
on how many replicas run; a request of n texts costs n times that.
"""

from __future__ import annotations

_SECONDS_PER_HOUR = 3600.0


def usd_per_text(replica_usd_per_hour: float, seq_per_s_per_replica: float) -> float:
    """Price of one text on a replica busy at its measured throughput."""
    if seq_per_s_per_replica <= 0:
        raise ValueError(
            f"seq_per_s_per_replica must be > 0, got {seq_per_s_per_replica}"
        )
    return replica_usd_per_hour / (seq_per_s_per_replica * _SECONDS_PER_HOUR)


def effective_seq_per_s(
    capacity_seq_per_s: float | None,
    observed_seq_per_s: float | None,
    default_seq_per_s: float,
) -> float:
    """The throughput a replica is priced and queued at.

    A calibrated capacity wins, since it measures full batches. Otherwise the observed
    texts per second of service stand in: a lower bound, because it cannot see the
    batching a replica does. Before either exists, the configured default.
    """
    if capacity_seq_per_s is not None:
        return capacity_seq_per_s
    if observed_seq_per_s is not None and observed_seq_per_s > 0:
        return observed_seq_per_s
    return default_seq_per_s
