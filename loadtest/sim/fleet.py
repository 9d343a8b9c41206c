"""The replicas of every pool over simulated time: launch, ready, drain, preempt, bill.

Counts, not objects: a pool holds how many replicas are ready, when each launched
one becomes ready (after the provisioning delay) and when each draining one is gone.
Every replica is billed from launch until it is gone, draining included. Spot
replicas are preempted at random (a Poisson rate per replica-hour); a regional outage
takes every pool in the region down, losing its replicas, until it ends. Both engines
share this class, so they differ only in how requests meet replicas.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loadtest.sim.scenario import Scenario
from router.cloud import CloudSpec

logger = logging.getLogger(__name__)


@dataclass
class PoolState:
    spec: CloudSpec
    ready: int = 0
    provisioning_ready_at_s: list[float] = field(default_factory=list)
    draining_done_at_s: list[float] = field(default_factory=list)
    down: bool = False
    usd: float = 0.0
    replica_s: float = 0.0
    preemptions: int = 0

    @property
    def launched(self) -> int:
        """Replicas that will serve without a new launch: ready plus provisioning."""
        return self.ready + len(self.provisioning_ready_at_s)

    @property
    def billed(self) -> int:
        return self.launched + len(self.draining_done_at_s)


class Fleet:
    """All pools of a scenario; ticked once per engine step."""

    def __init__(
        self,
        scenario: Scenario,
        rng: np.random.Generator,
        pools: Sequence[CloudSpec],
        drain_s: float = 1.0,
    ) -> None:
        self.scenario = scenario
        self.pools = {c.name: PoolState(c) for c in pools}
        self.pool_names = tuple(self.pools)
        self._rng = rng
        self.drain_s = drain_s

    def reset_bills(self) -> None:
        """Start counting cost and preemptions afresh (the window opens)."""
        for pool in self.pools.values():
            pool.usd = pool.replica_s = 0.0
            pool.preemptions = 0

    def start(self, counts: Mapping[str, int]) -> None:
        """Replicas already running when the simulated window opens."""
        for name, count in counts.items():
            pool = self.pools[name]
            pool.ready = min(max(count, pool.spec.min_replicas), pool.spec.max_replicas)

    def ready(self, name: str) -> int:
        return self.pools[name].ready

    def launched(self) -> dict[str, int]:
        return {name: p.launched for name, p in self.pools.items()}

    def tick(self, now_s: float, dt_s: float, sim_t_s: float) -> list[str]:
        """Bill the step ahead and apply what happens in it.

        Returns the names of pools whose ready count changed or that went down.
        `sim_t_s` is the time since the window opened, for the outage schedule.
        """
        changed = []
        # A Poisson rate per replica: the chance it is hit within this step.
        preempt_p = -math.expm1(
            -self.scenario.preemptions_per_replica_hour * dt_s / 3600.0
        )
        for name, pool in self.pools.items():
            before = (pool.ready, pool.down)
            self._apply_outage(pool, sim_t_s)
            while pool.provisioning_ready_at_s and (
                pool.provisioning_ready_at_s[0] <= now_s
            ):
                pool.provisioning_ready_at_s.pop(0)
                pool.ready += 1
            pool.draining_done_at_s = [t for t in pool.draining_done_at_s if t > now_s]
            if pool.spec.use_spot and pool.ready and preempt_p > 0:
                lost = int(self._rng.binomial(pool.ready, preempt_p))
                if lost:
                    pool.ready -= lost
                    pool.preemptions += lost
            billed = pool.billed
            pool.replica_s += billed * dt_s
            pool.usd += billed * dt_s * pool.spec.replica_usd_per_hour / 3600.0
            if (pool.ready, pool.down) != before:
                changed.append(name)
        return changed

    def apply(self, targets: Mapping[str, int], now_s: float) -> None:
        """Move each pool towards its serving target: reclaim, launch, cancel, drain.

        `targets` are the replicas to keep serving; a surplus drains (billed, no new
        traffic) for `drain_s` before it is gone.
        """
        for name, target in targets.items():
            pool = self.pools[name]
            target = min(max(target, pool.spec.min_replicas), pool.spec.max_replicas)
            if pool.down:
                continue
            gap = target - pool.launched
            if gap > 0 and pool.draining_done_at_s:
                # Take back draining replicas first: they serve again at once.
                reclaim = min(gap, len(pool.draining_done_at_s))
                del pool.draining_done_at_s[-reclaim:]
                pool.ready += reclaim
                gap -= reclaim
            if gap > 0:
                ready_at_s = now_s + self.scenario.provisioning_s
                pool.provisioning_ready_at_s.extend([ready_at_s] * gap)
            elif gap < 0:
                # Cancel the launches that would be ready last, then drain.
                surplus = -gap
                cancel = min(surplus, len(pool.provisioning_ready_at_s))
                if cancel:
                    del pool.provisioning_ready_at_s[-cancel:]
                drain = surplus - cancel
                if drain:
                    pool.ready -= drain
                    pool.draining_done_at_s.extend([now_s + self.drain_s] * drain)

    def _apply_outage(self, pool: PoolState, sim_t_s: float) -> None:
        down = any(
            o.region == pool.spec.region and o.start_s <= sim_t_s < o.end_s
            for o in self.scenario.outages
        )
        if down and not pool.down:
            logger.info("event=outage_start cloud=%s", pool.spec.name)
            pool.ready = 0
            pool.provisioning_ready_at_s.clear()
            pool.draining_done_at_s.clear()
        pool.down = down

    def usd_per_hour(self) -> float:
        """What every billed replica costs per hour right now."""
        return sum(p.billed * p.spec.replica_usd_per_hour for p in self.pools.values())

    def totals(self) -> tuple[float, float]:
        """USD and replica-hours spent so far over all pools."""
        usd = sum(p.usd for p in self.pools.values())
        hours = sum(p.replica_s for p in self.pools.values()) / 3600.0
        return usd, hours
