"""The simulation loop shared by both engines: history, fleet, decisions, steps.

`run` feeds the warm-up history to each metro's scaler, starts the fleet from the
scalers' first decision, then steps simulated time: the fleet ticks (launches,
preemptions, outages, billing), the scalers decide every decision interval, and a
`StepState` routes and serves the step's arrivals: `fluid.FluidState` (aggregated,
the default) or `events.RequestState` (one event per request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from loadtest.sim.fleet import Fleet
from loadtest.sim.scenario import Scenario
from loadtest.sim.setups import LoadAware, Scaler, Setup
from loadtest.sim.traces import RateTrace
from router.clock import ManualClock
from router.routing import Router, RouterSettings

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Requests by fate; every arrival lands in exactly one field."""

    in_slo: float = 0.0
    late: float = 0.0
    dropped: float = 0.0
    failed: float = 0.0
    latency_sum_s: float = 0.0  # over served requests (in_slo + late)

    @property
    def total(self) -> float:
        return self.in_slo + self.late + self.dropped + self.failed

    @property
    def mean_latency_s(self) -> float | None:
        served = self.in_slo + self.late
        return self.latency_sum_s / served if served > 0 else None

    def add(self, other: Outcome) -> None:
        self.in_slo += other.in_slo
        self.late += other.late
        self.dropped += other.dropped
        self.failed += other.failed
        self.latency_sum_s += other.latency_sum_s


@dataclass
class SimResult:
    """Totals and per-minute series of one setup over one trace."""

    setup: str
    arrivals: float
    outcome: Outcome
    usd: float
    replica_hours: float
    wall_s: float
    sim_s: float
    series_t_s: list[float] = field(default_factory=list)
    series_replicas: dict[str, list[int]] = field(default_factory=dict)
    series_usd_per_hour: list[float] = field(default_factory=list)
    series_arrival_rps: list[float] = field(default_factory=list)
    preemptions: int = 0
    by_metro: dict[str, Outcome] = field(default_factory=dict)
    served_by_pool: dict[str, float] = field(default_factory=dict)

    @property
    def slo_attainment(self) -> float:
        return self.outcome.in_slo / self.arrivals if self.arrivals else 1.0

    @property
    def usd_per_million(self) -> float:
        return self.usd / self.arrivals * 1e6 if self.arrivals else 0.0


@dataclass(frozen=True)
class EngineSettings:
    dt_s: float = 5.0
    groups_per_step: int = 64
    record_every_s: float = 60.0
    burn_in_s: float = 1800.0
    outage_detect_s: float = 30.0
    seed: int = 0


class Deployment:
    """One metro's stack: its router and scaler over its pools."""

    def __init__(
        self,
        metro: str,
        scenario: Scenario,
        setup: Setup,
        clock: ManualClock,
        seed: int,
    ) -> None:
        self.metro = metro
        self.clock = clock
        self.pools = setup.pools(scenario, metro)
        router_settings = RouterSettings(
            slo_ms=scenario.slo_s * 1000,
            quantile=scenario.quantile,
            random_seed=seed,
        )
        self.router = Router(self.pools, router_settings, clock, setup.routing_policy)
        for pool in self.pools:
            self.router.set_capacity(
                pool.name, scenario.capacity_seq_per_s[scenario.base_of[pool.name]]
            )
        self.scaler: Scaler = setup.make_scaler(scenario, self.pools, clock)
        self.names = tuple(p.name for p in self.pools)
        self.wait_limit_s = {
            p.name: scenario.wait_limit_s(p.name, setup.admission_slo_fraction)
            for p in self.pools
        }
        self.load_aware = isinstance(self.scaler, LoadAware)


class StepState(Protocol):
    """How requests meet replicas in one step: the fluid model or per request."""

    counting: bool
    down_since_s: dict[str, float]  # pools down, by when; re-pushed every step

    def push_replicas(self, names: Sequence[str], now_s: float) -> None: ...

    def step(self, now_s: float, rate_rps: float) -> tuple[float, dict[str, Outcome]]:
        """Arrivals counted this step and the outcomes settled in it."""
        ...

    def finish(self) -> dict[str, Outcome]:
        """Settle whatever is still in flight when the window closes."""
        ...


StateFactory = Callable[
    [Scenario, Mapping[str, "Deployment"], Fleet, "EngineSettings"], StepState
]


def run(
    scenario: Scenario,
    trace: RateTrace,
    setup: Setup,
    settings: EngineSettings | None = None,
    state_factory: StateFactory | None = None,
) -> SimResult:
    """Simulate `setup` over the trace's window; the warm-up only feeds history.

    `state_factory` picks how requests meet replicas: the fluid model by default,
    `events.RequestState` for one event per request.
    """
    settings = settings or EngineSettings()
    if state_factory is None:
        from loadtest.sim.fluid import FluidState

        state_factory = FluidState
    # The router and breaker warn on every refusal and trip; a simulated day has
    # millions of them, so only errors from them are kept.
    for name in ("router.routing", "router.breaker"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if settings.dt_s < 1 or settings.dt_s != int(settings.dt_s):
        raise ValueError(f"dt_s must be a whole number of seconds, got {settings.dt_s}")
    wall_start = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    clock = ManualClock(0.0)
    metros = list(scenario.clients)
    deployments = {
        m: Deployment(m, scenario, setup, clock, settings.seed + i)
        for i, m in enumerate(metros)
    }
    fleet = Fleet(scenario, rng, [p for d in deployments.values() for p in d.pools])
    spr = scenario.seq_per_request
    tokens = scenario.mean_tokens

    # History before the burn-in: observations only, one per minute.
    dt = settings.dt_s
    burn_in_steps = min(int(settings.burn_in_s / dt), int(trace.warmup_s / dt))
    history_end_s = trace.warmup_s - burn_in_steps * dt
    minute = 60.0
    t = minute
    while t <= history_end_s:
        clock.set(t)
        chunk = trace.rates_rps[int(t - minute) : int(t)].sum()
        for metro, d in deployments.items():
            n = chunk * scenario.clients[metro]
            d.scaler.observe(round(n), round(n * spr), round(n * spr * tokens))
        t += minute
    clock.set(max(clock(), history_end_s))
    start = {}
    for d in deployments.values():
        start.update(serving_targets(d.scaler.decide(dict.fromkeys(d.names, 0))))
    fleet.start(start)
    state = state_factory(scenario, deployments, fleet, settings)
    state.push_replicas(fleet.pool_names, clock())

    result = SimResult(setup.name, 0.0, Outcome(), 0.0, 0.0, 0.0, trace.sim_s)
    per_step = int(dt)
    usable = len(trace.rates_rps) // per_step * per_step
    step_rates_rps = trace.rates_rps[:usable].reshape(-1, per_step).mean(axis=1)
    first_step = int(history_end_s / dt)
    n_steps = len(step_rates_rps) - first_step
    next_decision_s = clock() + setup.decision_interval_s
    next_record_s = float(trace.warmup_s)
    sim_start_s = float(trace.warmup_s)
    for step in range(first_step, first_step + n_steps):
        now_s = step * dt
        clock.set(max(clock(), now_s))
        counting = now_s >= sim_start_s
        if counting and not state.counting:
            state.counting = True
            fleet.reset_bills()
        changed = fleet.tick(now_s, dt, now_s - sim_start_s)
        state.push_replicas(changed + list(state.down_since_s), now_s)

        if now_s >= next_decision_s:
            next_decision_s += setup.decision_interval_s
            for d in deployments.values():
                running = {name: fleet.pools[name].launched for name in d.names}
                _report_availability(d.scaler, fleet, d.names)
                fleet.apply(serving_targets(d.scaler.decide(running)), now_s)
            state.push_replicas(fleet.pool_names, now_s)

        rate_rps = float(step_rates_rps[step])
        arrivals, outcomes = state.step(now_s, rate_rps)
        result.arrivals += arrivals
        _add_outcomes(result, outcomes)
        if counting:
            if now_s >= next_record_s:
                next_record_s += settings.record_every_s
                result.series_t_s.append(now_s - sim_start_s)
                result.series_usd_per_hour.append(fleet.usd_per_hour())
                result.series_arrival_rps.append(rate_rps)
                for name, pool in fleet.pools.items():
                    result.series_replicas.setdefault(name, []).append(pool.billed)

    _add_outcomes(result, state.finish())
    result.served_by_pool = dict(getattr(state, "served_by_pool", {}))
    result.usd, result.replica_hours = fleet.totals()
    result.preemptions = sum(p.preemptions for p in fleet.pools.values())
    result.wall_s = time.perf_counter() - wall_start
    return result


def _report_availability(scaler: Scaler, fleet: Fleet, names: Sequence[str]) -> None:
    """Tell a scaler that can use it which of its pools are down (an outage)."""
    set_available = getattr(scaler, "set_available", None)
    if set_available is not None:
        for name in names:
            set_available(name, not fleet.pools[name].down)


def serving_targets(decision: object) -> dict[str, int]:
    """Replicas to keep serving: targets less those the scaler is draining."""
    targets: Mapping[str, int] = decision.targets  # type: ignore[attr-defined]
    draining: Mapping[str, int] = getattr(decision, "draining", {}) or {}
    return {name: count - draining.get(name, 0) for name, count in targets.items()}


def _add_outcomes(result: SimResult, outcomes: Mapping[str, Outcome]) -> None:
    for metro, outcome in outcomes.items():
        result.outcome.add(outcome)
        result.by_metro.setdefault(metro, Outcome()).add(outcome)
