"""One event per request: the exact counterpart of the fluid engine, for low rates.

Same scenario, fleet, routers and scalers as `engine.FluidState`; only how requests
meet replicas differs. Arrivals are Poisson within each step at the trace's rate.
Every request is routed by its own `Router.choose`, travels half the RTT to its
pool, waits in the pool's FIFO queue, rides a batch of up to `max_batch` queued
requests on the first free replica (batch time from the same service curve), and
returns after the other half of the RTT, when the router hears `on_complete`. A
request whose predicted wait (queue ahead / pool throughput) is past its
deployment's wait limit is refused on arrival at the pool, and one still queued
after that limit is dropped (see `Scenario.wait_limit_s`). A replica removed
(drained or preempted) finishes the batch it is running. Too slow for 20,000
requests/s; it exists to measure what the fluid engine's aggregation changes.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import NoCloudAvailable
from loadtest.sim.engine import Deployment, EngineSettings, Outcome
from loadtest.sim.fleet import Fleet
from loadtest.sim.scenario import Scenario
from router.routing import RouteRequest

_ARRIVE, _AT_POOL, _BATCH_DONE, _REPLY = range(4)


@dataclass
class _Request:
    metro: str
    arrival_s: float
    counted: bool
    pool: str = ""
    extra_s: float = 0.0
    enqueued_s: float = 0.0


class _Pool:
    """One pool's queue and replicas: each replica is free or busy until a time."""

    def __init__(self) -> None:
        self.queue: deque[_Request] = deque()
        self.free = 0
        self.busy = 0
        self.retire = 0  # busy replicas to remove when their batch ends
        self.in_batch = 0  # requests riding a batch right now


class RequestState:
    """Steps of `dt_s`, each processing its requests' events in time order."""

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
        self.rng = np.random.default_rng(settings.seed + 1)
        self.pools = {name: _Pool() for name in fleet.pools}
        self.metro_of = {n: m for m, d in deployments.items() for n in d.names}
        self.visible_ready = dict.fromkeys(fleet.pools, 0)
        self.down_since_s: dict[str, float] = {}
        self.detect_s = settings.outage_detect_s
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._outcomes: dict[str, Outcome] = {}
        self.clock = next(iter(deployments.values())).clock
        self.request = RouteRequest(
            num_texts=max(1, round(scenario.seq_per_request)),
            num_tokens=int(round(scenario.mean_tokens)),
        )

    # Replica counts.

    def push_replicas(self, names: Sequence[str], now_s: float) -> None:
        for name in names:
            pool = self.fleet.pools[name]
            self._resize(name, 0 if pool.down else pool.ready, now_s)
            if pool.down:
                since_s = self.down_since_s.setdefault(name, now_s)
                if now_s - since_s < self.detect_s:
                    continue
            else:
                self.down_since_s.pop(name, None)
            if pool.ready != self.visible_ready[name]:
                self.visible_ready[name] = pool.ready
                router = self.deployments[self.metro_of[name]].router
                router.set_replicas(name, pool.ready)

    def _resize(self, name: str, ready: int, now_s: float) -> None:
        p = self.pools[name]
        have = p.free + p.busy - p.retire
        if ready > have:
            grow = ready - have
            back = min(grow, p.retire)
            p.retire -= back
            p.free += grow - back
            for _ in range(grow - back):
                self._start_batch(name, now_s)
        elif ready < have:
            shrink = have - ready
            idle = min(shrink, p.free)
            p.free -= idle
            p.retire += shrink - idle

    # Steps.

    def step(self, now_s: float, rate_rps: float) -> tuple[float, dict[str, Outcome]]:
        self._outcomes = {}
        arrivals = 0.0
        for metro, weight in self.scenario.clients.items():
            n = int(self.rng.poisson(rate_rps * weight * self.dt_s))
            spr = self.scenario.seq_per_request
            self.deployments[metro].scaler.observe(
                n, round(n * spr), round(n * spr * self.scenario.mean_tokens)
            )
            times = np.sort(self.rng.uniform(now_s, now_s + self.dt_s, n))
            for t in times:
                self._push(float(t), _ARRIVE, _Request(metro, float(t), self.counting))
            if self.counting:
                arrivals += n
        self._process_until(now_s + self.dt_s)
        for d in self.deployments.values():
            if d.load_aware:
                d.scaler.observe_load(  # type: ignore[attr-defined]
                    {
                        n: len(self.pools[n].queue) + self.pools[n].in_batch
                        for n in d.names
                    }
                )
        return arrivals, self._outcomes

    def finish(self) -> dict[str, Outcome]:
        self._outcomes = {}
        self._process_until(math.inf)
        return self._outcomes

    def _push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (t, next(self._seq), kind, payload))

    def _process_until(self, end_s: float) -> None:
        clock = self.clock
        while self.events and self.events[0][0] < end_s:
            t, _, kind, payload = heapq.heappop(self.events)
            if clock() < t:
                clock.set(t)
            if kind == _ARRIVE:
                self._route(payload, t)  # type: ignore[arg-type]
            elif kind == _AT_POOL:
                self._enqueue(payload, t)  # type: ignore[arg-type]
            elif kind == _BATCH_DONE:
                self._batch_done(payload, t)  # type: ignore[arg-type]
            else:
                self._reply(payload, t)  # type: ignore[arg-type]

    def _outcome(self, req: _Request) -> Outcome | None:
        if not req.counted:
            return None
        return self._outcomes.setdefault(req.metro, Outcome())

    def _route(self, req: _Request, now_s: float, failover: bool = False) -> None:
        d = self.deployments[req.metro]
        exclude = [n for n in d.names if self.visible_ready[n] == 0]
        if failover:
            exclude.append(req.pool)
        try:
            decision = d.router.choose(self.request, exclude=exclude, failover=failover)
        except NoCloudAvailable:
            self._settle(req, None)
            return
        req.pool = decision.cloud
        d.router.on_dispatch(req.pool, self.request.num_texts)
        if self.fleet.pools[req.pool].down:
            d.router.on_complete(
                req.pool,
                num_texts=self.request.num_texts,
                rtt_s=None,
                service_s=0.0,
                ok=False,
            )
            if failover or not d.router.retry_allowed(self.request, 1):
                self._settle(req, None)
                return
            req.extra_s = self.scenario.rtt_s[req.pool]
            self._route(req, now_s, failover=True)
            return
        self._push(now_s + self.scenario.rtt_s[req.pool] / 2, _AT_POOL, req)

    def _enqueue(self, req: _Request, now_s: float) -> None:
        req.enqueued_s = now_s
        p = self.pools[req.pool]
        replicas = p.free + p.busy - p.retire
        rate = replicas * self.scenario.curve(req.pool).peak_seq_per_s
        ahead_s = len(p.queue) * self.scenario.seq_per_request / rate if rate else 0
        if ahead_s > self._wait_limit_s(req.pool):
            self._refuse(req, ahead_s)
            return
        p.queue.append(req)
        self._start_batch(req.pool, now_s)

    def _wait_limit_s(self, pool: str) -> float:
        return self.deployments[self.metro_of[pool]].wait_limit_s[pool]

    def _start_batch(self, name: str, now_s: float) -> None:
        p = self.pools[name]
        while p.free > 0 and p.queue:
            batch: list[_Request] = []
            curve = self.scenario.curve(name)
            while p.queue and len(batch) < curve.max_batch:
                req = p.queue.popleft()
                if now_s - req.enqueued_s > self._wait_limit_s(name):
                    self._drop(req)
                    continue
                batch.append(req)
            if not batch:
                return
            p.free -= 1
            p.busy += 1
            p.in_batch += len(batch)
            done_s = now_s + curve.batch_latency_s[len(batch) - 1]
            self._push(done_s, _BATCH_DONE, (name, batch))

    def _batch_done(self, payload: tuple[str, list[_Request]], now_s: float) -> None:
        name, batch = payload
        p = self.pools[name]
        p.busy -= 1
        p.in_batch -= len(batch)
        if p.retire > 0:
            p.retire -= 1
        else:
            p.free += 1
        for req in batch:
            self._push(now_s + self.scenario.rtt_s[name] / 2, _REPLY, req)
        self._start_batch(name, now_s)

    def _reply(self, req: _Request, now_s: float) -> None:
        rtt_s = self.scenario.rtt_s[req.pool]
        latency_s = now_s - req.arrival_s
        router = self.deployments[req.metro].router
        router.on_complete(
            req.pool,
            num_texts=self.request.num_texts,
            rtt_s=rtt_s,
            service_s=max(latency_s - rtt_s - req.extra_s, 0.0),
            ok=True,
        )
        self._settle(req, latency_s)

    def _refuse(self, req: _Request, ahead_s: float) -> None:
        """Admission said no: not an error, and the router hears the queue."""
        self.deployments[req.metro].router.on_complete(
            req.pool,
            num_texts=self.request.num_texts,
            rtt_s=self.scenario.rtt_s[req.pool],
            service_s=ahead_s,
            ok=True,
        )
        outcome = self._outcome(req)
        if outcome is not None:
            outcome.dropped += 1

    def _drop(self, req: _Request) -> None:
        router = self.deployments[req.metro].router
        router.on_complete(
            req.pool,
            num_texts=self.request.num_texts,
            rtt_s=None,
            service_s=0.0,
            ok=False,
        )
        outcome = self._outcome(req)
        if outcome is not None:
            outcome.dropped += 1

    def _settle(self, req: _Request, latency_s: float | None) -> None:
        outcome = self._outcome(req)
        if outcome is None:
            return
        if latency_s is None:
            outcome.failed += 1
        elif latency_s <= self.scenario.slo_s:
            outcome.in_slo += 1
            outcome.latency_sum_s += latency_s
        else:
            outcome.late += 1
            outcome.latency_sum_s += latency_s
