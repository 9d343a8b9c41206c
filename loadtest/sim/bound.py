"""The offline lower bound on cost: a linear program that knows the whole future.

Per slot t (60 s by default), metro m and pool c in m's reach, choose replicas
x[t,c] >= 0 and request flows y[t,m,c] >= 0 to

    minimise   sum_t sum_c price_c * x[t,c] * len_t / 3600   (len_t: slot t's seconds)
    subject to sum_c y[t,m,c] = D[t,m]                 (every request served)
               sum_m y[t,m,c] / k[m,c] <= x[t,c]       (capacity within the SLO)
               x[t,c] <= max_c                          (0 if c's region is down
                                                         for all of slot t)

D[t,m] is the slot's mean request rate from metro m. k[m,c] is what one replica of
c carries for metro m within the SLO, from the queueing model the autoscaler uses
(router.queueing, with the demand model's operating point and the wait budget
SLO - batch service time - RTT, where the autoscaler also takes out the batch in
progress), taken at the largest pool any policy may run, where pooling makes a
replica carry the most: the bound is optimistic on purpose.
Replicas are fractional by default (an integer version is available); there is no
provisioning delay, no preemption and no on-demand floor, and capacity is shared
across metros. Every policy pays at least this, up to the slot-mean demand.
`with_provisioning_lead` adds the launch delay every real policy faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_matrix

from loadtest.sim.scenario import Scenario
from loadtest.sim.traces import RateTrace
from router import queueing


@dataclass(frozen=True)
class BoundResult:
    usd: float
    arrivals: float
    replica_hours: float
    slot_s: float
    integer: bool
    usd_per_hour: tuple[float, ...]
    # Seconds the slots span; the last slot may be shorter. None: all full.
    span_s: float | None = None

    @property
    def usd_per_million(self) -> float:
        return self.usd / self.arrivals * 1e6 if self.arrivals else 0.0

    def slot_hours(self) -> np.ndarray:
        """Each slot's length in hours (the last one cut at `span_s`)."""
        return _slot_hours(len(self.usd_per_hour), self.slot_s, self.span_s)


def _slot_hours(n_slots: int, slot_s: float, span_s: float | None) -> np.ndarray:
    lengths_s = np.full(n_slots, slot_s)
    if span_s is not None and n_slots:
        lengths_s[-1] = span_s - (n_slots - 1) * slot_s
    return lengths_s / 3600.0


def per_replica_rps(scenario: Scenario, pool: str, pool_replicas: int) -> float:
    """Requests/s one replica of `pool` carries within the SLO in a pool this big."""
    base = scenario.base_of[pool]
    spec = next(c for c in scenario.clouds if c.name == base)
    point = scenario.demand.replica_capacity(
        spec.accelerator, scenario.slo_s, scenario.quantile
    )
    budget_s = scenario.slo_s - point.service_s - scenario.rtt_s[pool]
    rate = queueing.max_arrival_rps(
        pool_replicas,
        point.seq_per_s / scenario.seq_per_request,
        budget_s,
        1.0 - scenario.quantile,
        scenario.demand.service_scv,
    )
    return rate / pool_replicas


def lower_bound(
    scenario: Scenario, trace: RateTrace, slot_s: float = 60.0, integer: bool = False
) -> BoundResult:
    """Solve the bound over the trace's simulated window."""
    rates = trace.sim_rates_rps
    n_slots = math.ceil(len(rates) / slot_s)
    per_slot = int(slot_s)
    padded = np.concatenate([rates, np.full(n_slots * per_slot - len(rates), np.nan)])
    slot_rps = np.nanmean(padded.reshape(n_slots, per_slot), axis=1)

    metros = list(scenario.clients)
    bases = [c.name for c in scenario.clouds]
    base_index = {name: i for i, name in enumerate(bases)}
    prices = np.array([c.replica_usd_per_hour for c in scenario.clouds])
    n_metros_reaching = {name: 0 for name in bases}
    for pools in scenario.deployments.values():
        for p in pools:
            n_metros_reaching[scenario.base_of[p.name]] += 1
    max_x = np.array(
        [c.max_replicas * n_metros_reaching[c.name] for c in scenario.clouds],
        dtype=float,
    )
    # Links (metro, base pool) with per-replica capacity at the largest pool.
    links: list[tuple[int, int, float]] = []
    for mi, metro in enumerate(metros):
        for p in scenario.deployments[metro]:
            base = scenario.base_of[p.name]
            biggest = max(1, int(max_x[base_index[base]]))
            k = per_replica_rps(scenario, p.name, biggest)
            if k > 0:
                links.append((mi, base_index[base], k))
    weights = np.array([scenario.clients[m] for m in metros])
    weights = weights / weights.sum()

    replicas = []
    usd_per_hour = []
    span_s = float(len(rates))
    for t in range(n_slots):
        demand = slot_rps[t] * weights
        end_s = min((t + 1) * slot_s, span_s)
        available = _available(scenario, bases, t * slot_s, end_s)
        x = _solve_slot(prices, max_x * available, links, demand, len(metros), integer)
        usd_per_hour.append(float(prices @ x))
        replicas.append(float(x.sum()))
    hours = _slot_hours(n_slots, slot_s, span_s)
    return BoundResult(
        float(np.dot(usd_per_hour, hours)),
        float(np.sum(rates)),
        float(np.dot(replicas, hours)),
        slot_s,
        integer,
        tuple(usd_per_hour),
        span_s,
    )


def with_provisioning_lead(bound: BoundResult, lead_s: float) -> float:
    """USD of the bound when every replica must launch `lead_s` before it serves.

    Under the bound's own relaxation (each slot's demand its mean, so what serves
    a slot serves from its start), a replica serving slot t + k with
    k <= lead_s // slot_s was billed from the start of slot t or before; the
    replicas billed in slot t therefore cost at least the bound's least cost of
    each slot up to k ahead, and every policy that faces the lead pays at least
    the sum over slots of that running maximum. Preemption and the on-demand
    floor are still left out, so this is a lower bound too. The simulator bills a
    replica from the step after its launch, so its lead here is the provisioning
    delay less one step.
    """
    if lead_s < 0:
        raise ValueError(f"lead_s must be >= 0, got {lead_s}")
    ahead = int(lead_s // bound.slot_s)
    costs = np.asarray(bound.usd_per_hour)
    led = [float(costs[t : t + ahead + 1].max()) for t in range(len(costs))]
    return float(np.dot(led, bound.slot_hours()))


def _available(scenario: Scenario, bases: list[str], start_s: float, end_s: float):
    regions = {c.name: c.region for c in scenario.clouds}
    # A pool is taken away only for slots its outage covers whole: in a slot cut
    # by the outage's start or end a policy may still use it, so the bound does.
    return np.array(
        [
            0.0 if scenario.region_down_throughout(regions[b], start_s, end_s) else 1.0
            for b in bases
        ]
    )


def _solve_slot(
    prices: np.ndarray,
    max_x: np.ndarray,
    links: list[tuple[int, int, float]],
    demand: np.ndarray,
    n_metros: int,
    integer: bool,
) -> np.ndarray:
    """Variables: x (one per pool) then y (one per link)."""
    n_x = len(prices)
    n_y = len(links)
    cost = np.concatenate([prices, np.zeros(n_y)])
    rows, cols, vals = [], [], []
    # Demand rows: sum of a metro's links = its demand.
    for j, (mi, _, _) in enumerate(links):
        rows.append(mi)
        cols.append(n_x + j)
        vals.append(1.0)
    eq = coo_matrix((vals, (rows, cols)), shape=(n_metros, n_x + n_y)).tocsr()
    rows, cols, vals = [], [], []
    # Capacity rows: sum_m y / k - x <= 0.
    for c in range(n_x):
        rows.append(c)
        cols.append(c)
        vals.append(-1.0)
    for j, (_, c, k) in enumerate(links):
        rows.append(c)
        cols.append(n_x + j)
        vals.append(1.0 / k)
    ub = coo_matrix((vals, (rows, cols)), shape=(n_x, n_x + n_y)).tocsr()
    upper = np.concatenate([max_x, np.full(n_y, np.inf)])
    if integer:
        result = milp(
            cost,
            constraints=[
                LinearConstraint(eq, demand, demand),
                LinearConstraint(ub, -np.inf, 0.0),
            ],
            integrality=np.concatenate([np.ones(n_x), np.zeros(n_y)]),
            bounds=Bounds(np.zeros(n_x + n_y), upper),
        )
    else:
        result = linprog(
            cost,
            A_ub=ub,
            b_ub=np.zeros(n_x),
            A_eq=eq,
            b_eq=demand,
            bounds=list(zip(np.zeros(n_x + n_y), upper, strict=True)),
            method="highs",
        )
    if not result.success or result.x is None:
        raise RuntimeError(f"lower bound infeasible in a slot: {result.message}")
    return np.asarray(result.x[:n_x])
