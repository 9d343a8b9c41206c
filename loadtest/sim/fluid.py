"""The aggregated engine: fixed time steps, request groups, fluid queues per pool.

Routing 1.7 billion requests one by one is out of reach in Python, so each step
(5 s by default) splits each metro's arrivals into a few equal groups and routes
each group with ONE `Router.choose` call of the real router. A pool is a fluid queue
served by its ready replicas at their batching curve (`service.ServiceCurve`): the
backlog grows when arrivals exceed full-batch throughput, requests wait behind it
in FIFO order, and within a step each request also sees the batching residual
(the batch in progress) whose share over the SLO is computed exactly for the
step's per-replica load. A request is classified once, when it arrives, as served
within the SLO, served late, dropped (it would wait past its deployment's wait
limit: `Scenario.wait_limit_s`) or failed.

What the router sees: a group is dispatched with the texts it would keep in flight
(its rate times its expected time in flight, Little's law), so the router's
in-flight counts match a real gateway's; it completes one step later, before the
group with the same index of the next step is routed, reporting its mean RTT and
service time. A probe decision sends one request, and the rest of the group is
routed again. A group sent to a pool that is down fails fast (after one RTT) and is
retried once elsewhere if the router allows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import NoCloudAvailable
from loadtest.sim.engine import Deployment, EngineSettings, Outcome
from loadtest.sim.fleet import Fleet
from loadtest.sim.scenario import Scenario
from router.routing import RouteRequest


@dataclass
class _Group:
    """A slice of one metro's arrivals in one step, routed as one request."""

    metro: str
    pool: str
    requests: float
    extra_s: float = 0.0  # time lost on a failed first attempt
    inflight_texts: int = 1
    rtt_s: float = 0.0
    service_s: float = 0.0
    ok: bool = True


class FluidState:
    """Per-step routing and service, with the groups awaiting completion."""

    def __init__(
        self,
        scenario: Scenario,
        deployments: Mapping[str, Deployment],
        fleet: Fleet,
        settings: EngineSettings,
    ) -> None:
        self.scenario = scenario
        self.deployments = deployments
        self.fleet = fleet
        self.dt_s = settings.dt_s
        self.counting = False
        self.backlog_seq = {name: 0.0 for name in fleet.pools}
        self.metro_of = {n: m for m, d in deployments.items() for n in d.names}
        self.latency_s = {name: scenario.rtt_s[name] for name in fleet.pools}
        self.ongoing = dict.fromkeys(fleet.pools, 0.0)
        self.served_by_pool: dict[str, float] = {}
        # What the routers believe runs: an outage is seen only after detect_s.
        self.visible_ready = dict.fromkeys(fleet.pools, 0)
        self.down_since_s: dict[str, float] = {}
        self.detect_s = settings.outage_detect_s
        weights = scenario.clients
        total = sum(weights.values())
        self.groups_per_metro = {
            m: max(1, round(settings.groups_per_step * w / total))
            for m, w in weights.items()
        }
        # Interleave metros so each router's groups are spread over the step.
        order: list[tuple[str, int]] = []
        most = max(self.groups_per_metro.values())
        for k in range(most):
            for m, count in self.groups_per_metro.items():
                if k < count:
                    order.append((m, k))
        self.order = order
        self.pending: dict[tuple[str, int], list[_Group]] = {}
        tokens = int(round(scenario.mean_tokens))
        self.request = RouteRequest(
            num_texts=max(1, round(scenario.seq_per_request)), num_tokens=tokens
        )
        self._obs_carry: dict[str, float] = dict.fromkeys(deployments, 0.0)
        self._inflight_carry: dict[str, float] = dict.fromkeys(fleet.pools, 0.0)

    def push_replicas(self, names: Sequence[str], now_s: float) -> None:
        """Tell the routers each pool's ready replicas, as the control plane sees."""
        for name in names:
            pool = self.fleet.pools[name]
            if pool.down:
                since_s = self.down_since_s.setdefault(name, now_s)
                if now_s - since_s < self.detect_s:
                    continue
            else:
                self.down_since_s.pop(name, None)
            ready = pool.ready
            if ready == self.visible_ready[name]:
                continue
            self.visible_ready[name] = ready
            self.deployments[self.metro_of[name]].router.set_replicas(name, ready)

    def step(self, now_s: float, rate_rps: float) -> tuple[float, dict[str, Outcome]]:
        """Route and serve one step; outcomes count only inside the window."""
        scenario = self.scenario
        spr = scenario.seq_per_request
        outcomes = {m: Outcome() for m in self.deployments}
        assigned: dict[str, list[_Group]] = {}

        for metro, d in self.deployments.items():
            arrivals = rate_rps * self.dt_s * scenario.clients[metro]
            whole = arrivals + self._obs_carry[metro]
            count = math.floor(whole)
            self._obs_carry[metro] = whole - count
            d.scaler.observe(
                count, round(count * spr), round(count * spr * scenario.mean_tokens)
            )

        for metro, k in self.order:
            d = self.deployments[metro]
            for group in self.pending.pop((metro, k), []):
                d.router.on_complete(
                    group.pool,
                    num_texts=group.inflight_texts,
                    rtt_s=group.rtt_s if group.ok else None,
                    service_s=group.service_s,
                    ok=group.ok,
                )
            size = (
                rate_rps * self.dt_s * scenario.clients[metro]
            ) / self.groups_per_metro[metro]
            if size <= 0:
                continue
            groups = self._route(d, size, outcomes[metro])
            self.pending[(metro, k)] = groups
            for group in groups:
                assigned.setdefault(group.pool, []).append(group)

        for pool, groups in assigned.items():
            self._serve(pool, groups, outcomes)
        for pool in self.backlog_seq:
            if pool not in assigned:
                self._drain_idle(pool)
        for d in self.deployments.values():
            if d.load_aware:
                d.scaler.observe_load(  # type: ignore[attr-defined]
                    {n: self.ongoing[n] for n in d.names}
                )
        if not self.counting:
            return 0.0, {}
        return rate_rps * self.dt_s, outcomes

    def finish(self) -> dict[str, Outcome]:
        return {}

    def _route(self, d: Deployment, size: float, outcome: Outcome) -> list[_Group]:
        """Route one group: probes take one request, a dead pool costs a retry."""
        groups: list[_Group] = []
        remaining = size
        exclude = tuple(n for n in d.names if self.visible_ready[n] == 0)
        extra_s = 0.0
        for attempt in range(len(d.names) + 2):
            if remaining <= 0:
                break
            try:
                decision = d.router.choose(
                    self.request, exclude=exclude, failover=attempt > 0 and extra_s > 0
                )
            except NoCloudAvailable:
                outcome.failed += remaining
                return groups
            pool = decision.cloud
            part = min(1.0, remaining) if decision.reason == "probe" else remaining
            group = _Group(d.metro, pool, part, extra_s)
            group.inflight_texts = self._inflight_texts(pool, part)
            d.router.on_dispatch(pool, group.inflight_texts)
            if self.fleet.pools[pool].down:
                # Fails fast after one round trip; one retry if the router allows.
                d.router.on_complete(
                    pool,
                    num_texts=group.inflight_texts,
                    rtt_s=None,
                    service_s=0.0,
                    ok=False,
                )
                if extra_s > 0 or not d.router.retry_allowed(self.request, 1):
                    outcome.failed += part
                    remaining -= part
                    continue
                extra_s = self.scenario.rtt_s[pool]
                exclude = (*exclude, pool)
                continue
            groups.append(group)
            remaining -= part
        if remaining > 0:
            outcome.failed += remaining
        return groups

    def _inflight_texts(self, pool: str, requests: float) -> int:
        """Texts this group keeps in flight: its rate times its time in flight.

        Whole texts for the router, the fractions carried to the pool's next group,
        so that small groups (a low rate split 64 ways) add up to the true count
        instead of each rounding up to one.
        """
        texts_per_s = requests * self.scenario.seq_per_request / self.dt_s
        exact = texts_per_s * self.latency_s[pool] + self._inflight_carry[pool]
        whole = math.floor(exact)
        self._inflight_carry[pool] = exact - whole
        return whole

    def _serve(
        self, pool: str, groups: list[_Group], outcomes: Mapping[str, Outcome]
    ) -> None:
        """Advance one pool's fluid queue by a step and classify its arrivals."""
        scenario = self.scenario
        curve = scenario.curve(pool)
        ready = self.fleet.pools[pool].ready
        spr = scenario.seq_per_request
        arrivals_seq = sum(g.requests for g in groups) * spr
        capacity_seq_per_s = ready * curve.peak_seq_per_s
        before = self.backlog_seq[pool]
        after = before + arrivals_seq - capacity_seq_per_s * self.dt_s
        wait_limit_s = self.deployments[self.metro_of[pool]].wait_limit_s[pool]
        limit = capacity_seq_per_s * wait_limit_s
        dropped_seq = min(arrivals_seq, max(0.0, after - limit))
        after = min(max(after, 0.0), limit)
        self.backlog_seq[pool] = after
        drop_share = dropped_seq / arrivals_seq if arrivals_seq > 0 else 0.0
        if capacity_seq_per_s > 0:
            wait_s = (before + after) / 2 / capacity_seq_per_s
            per_replica = arrivals_seq / self.dt_s / ready
            if after > 0:
                per_replica = curve.peak_seq_per_s  # saturated: full batches
        else:
            wait_s = math.inf
            per_replica = 0.0
        in_replica_s = curve.mean_time_s(per_replica) if ready else 0.0
        rtt = scenario.rtt_s[pool]
        for g in groups:
            outcome = outcomes[g.metro]
            served = g.requests * (1.0 - drop_share)
            outcome.dropped += g.requests - served
            if served <= 0 or not math.isfinite(wait_s):
                g.ok = False
                continue
            slack_s = scenario.slo_s - rtt - g.extra_s - wait_s
            late = curve.late_fraction(per_replica, slack_s) if slack_s > 0 else 1.0
            outcome.late += served * late
            outcome.in_slo += served * (1.0 - late)
            outcome.latency_sum_s += served * (rtt + g.extra_s + wait_s + in_replica_s)
            if self.counting:
                self.served_by_pool[pool] = self.served_by_pool.get(pool, 0.0) + served
            g.rtt_s = rtt
            g.service_s = wait_s + in_replica_s
        self.latency_s[pool] = rtt + wait_s + in_replica_s if ready else rtt
        # Little's law at the replicas: requests queued or in a batch right now.
        served_rps = (arrivals_seq - dropped_seq) / spr / self.dt_s
        self.ongoing[pool] = (
            served_rps * (wait_s + in_replica_s) if math.isfinite(wait_s) else 0.0
        )

    def _drain_idle(self, pool: str) -> None:
        self.ongoing[pool] = 0.0
        ready = self.fleet.pools[pool].ready
        capacity = ready * self.scenario.curve(pool).peak_seq_per_s * self.dt_s
        self.backlog_seq[pool] = max(0.0, self.backlog_seq[pool] - capacity)
