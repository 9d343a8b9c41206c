"""Routing policies: pick one cloud from per-cloud estimates, time and state passed in.

Every policy sees only the clouds a request may use (healthy, in its allowed
regions, not excluded), so hard constraints and the breaker hold for all of them.
"slo_cost" is ours; the others are the baselines it is compared against.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

CHEAPEST_IN_SLO = "cheapest_in_slo"
SPILL = "spill"
FASTEST = "fastest"


@dataclass(frozen=True, slots=True)
class CandidateEstimate:
    """One cloud as a routing decision saw it.

    `predicted_latency_s` is at the SLO quantile and includes the network round
    trip and the wait behind the load already in flight (infinite with no replica
    running); `cost_usd_per_request` includes any configured preference penalty.
    """

    cloud: str
    region: str
    predicted_latency_s: float
    cost_usd_per_request: float
    in_flight_requests: int
    eligible: bool


class Policy(Protocol):
    name: str

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        """Pick one of `candidates` (never empty) and say why."""
        ...


class SloCostPolicy:
    """The cheapest cloud whose predicted latency meets the target, else the fastest."""

    name = "slo_cost"

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        cheapest = min(candidates, key=_by_cost)
        if cheapest.predicted_latency_s <= target_s:
            return cheapest, CHEAPEST_IN_SLO
        in_slo = [c for c in candidates if c.predicted_latency_s <= target_s]
        if in_slo:
            return min(in_slo, key=_by_cost), SPILL
        return min(candidates, key=_by_latency), FASTEST


class LeastLatencyPolicy:
    """The lowest predicted latency, whatever it costs."""

    name = "least_latency"

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        return min(candidates, key=_by_latency), self.name


class CheapestFirstPolicy:
    """The lowest cost per request, blind to latency."""

    name = "cheapest_first"

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        return min(candidates, key=_by_cost), self.name


class RoundRobinPolicy:
    """Each cloud in turn, in configured order, skipping those a request may not use."""

    name = "round_robin"

    def __init__(self, cloud_names: Sequence[str]) -> None:
        self._order = {name: i for i, name in enumerate(cloud_names)}
        self._next_index = 0

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        size = len(self._order)
        chosen = min(
            candidates,
            key=lambda c: (self._order[c.cloud] - self._next_index) % size,
        )
        self._next_index = (self._order[chosen.cloud] + 1) % size
        return chosen, self.name


class PowerOfTwoPolicy:
    """Two clouds drawn at random; the one with fewer requests in flight wins."""

    name = "p2c_queue"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def select(
        self, candidates: Sequence[CandidateEstimate], target_s: float
    ) -> tuple[CandidateEstimate, str]:
        if len(candidates) == 1:
            return candidates[0], self.name
        first, second = self._rng.sample(list(candidates), 2)
        if second.in_flight_requests < first.in_flight_requests:
            return second, self.name
        return first, self.name


POLICY_NAMES = (
    SloCostPolicy.name,
    RoundRobinPolicy.name,
    LeastLatencyPolicy.name,
    CheapestFirstPolicy.name,
    PowerOfTwoPolicy.name,
)


def make_policy(name: str, cloud_names: Sequence[str], rng: random.Random) -> Policy:
    """The policy called `name`; raises ValueError naming the known ones."""
    if name == SloCostPolicy.name:
        return SloCostPolicy()
    if name == RoundRobinPolicy.name:
        return RoundRobinPolicy(cloud_names)
    if name == LeastLatencyPolicy.name:
        return LeastLatencyPolicy()
    if name == CheapestFirstPolicy.name:
        return CheapestFirstPolicy()
    if name == PowerOfTwoPolicy.name:
        return PowerOfTwoPolicy(rng)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")


# Ties break on the other quantity, then on the name, so choices are reproducible.
def _by_cost(c: CandidateEstimate) -> tuple[float, float, str]:
    return (c.cost_usd_per_request, c.predicted_latency_s, c.cloud)


def _by_latency(c: CandidateEstimate) -> tuple[float, float, str]:
    return (c.predicted_latency_s, c.cost_usd_per_request, c.cloud)
