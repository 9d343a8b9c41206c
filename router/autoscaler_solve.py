"""The count choice of the autoscaler: a small MILP over (cloud, count) pairs.

Columns beyond what a cloud needs to carry the whole rate alone are dropped before
the solve: a count above max(that, the on-demand replica floor, the current count)
costs more (price >= 0, a larger change) and buys nothing any constraint asks for,
so the pruned program has the same optimum and is several times smaller.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import numpy as np
from scipy.optimize import LinearConstraint, milp


def cheapest_counts(
    rate_rps: float,
    tables: Mapping[str, list[float]],
    bounds: Mapping[str, tuple[int, int]],
    prices: Mapping[str, float],
    on_demand: Mapping[str, bool],
    current: Mapping[str, int],
    *,
    floor_fraction: float = 0.0,
    floor_replicas: int = 0,
    reserve_rps: float = 0.0,
    change_penalty_usd_per_hour: float = 0.0,
    prune: bool = True,
) -> dict[str, int] | None:
    """Least-price counts per cloud within `bounds` (low, high) carrying `rate_rps`.

    Args:
        tables: request rate carried within the SLO by 0, 1, ... replicas per cloud.
        on_demand: whether a cloud counts toward the on-demand floor; the others
            are spot, and with `reserve_rps` > 0 the counts must still carry that
            rate after any one spot cloud loses one replica (a preemption).
    Returns:
        None when no choice within the bounds meets the rate and the floors.
    """
    columns: list[tuple[str, int]] = []
    for name, (low, high) in bounds.items():
        table = tables[name]
        if prune and high > low:
            # The first count that carries the rate alone (high if none does).
            alone = bisect.bisect_left(table, rate_rps, lo=0, hi=high + 1)
            if reserve_rps > 0:
                # Alone, and carrying the reserve too: one replica short if the
                # cloud is spot (it may lose one), whole if on-demand.
                held = bisect.bisect_left(table, reserve_rps, lo=0, hi=high + 1)
                alone = max(alone, min(high, held + (0 if on_demand[name] else 1)))
            needed = max(alone, current.get(name, 0))
            if on_demand[name]:
                needed = max(needed, floor_replicas)
            high = max(low, min(high, needed))
        columns.extend((name, count) for count in range(low, high + 1))
    cost = np.array(
        [
            count * prices[name]
            + change_penalty_usd_per_hour * abs(count - current.get(name, 0))
            for name, count in columns
        ]
    )
    names = list(bounds)
    one_per_cloud = np.array(
        [[1.0 if name == n else 0.0 for name, _ in columns] for n in names]
    )
    capacity = np.array([tables[name][count] for name, count in columns])
    od = np.array([1.0 if on_demand[name] else 0.0 for name, _ in columns])
    counts = np.array([float(count) for _, count in columns])
    constraints = [
        LinearConstraint(one_per_cloud, 1.0, 1.0),
        LinearConstraint(capacity[np.newaxis, :], rate_rps, np.inf),
    ]
    if floor_fraction > 0:
        constraints.append(
            LinearConstraint(
                (capacity * od)[np.newaxis, :], floor_fraction * rate_rps, np.inf
            )
        )
    if floor_replicas > 0:
        constraints.append(
            LinearConstraint((counts * od)[np.newaxis, :], floor_replicas, np.inf)
        )
    if reserve_rps > 0:
        for spot in (n for n in names if not on_demand[n]):
            # What the cloud's count loses with one replica fewer.
            loss = np.array(
                [
                    tables[name][count] - tables[name][count - 1]
                    if name == spot and count > 0
                    else 0.0
                    for name, count in columns
                ]
            )
            constraints.append(
                LinearConstraint((capacity - loss)[np.newaxis, :], reserve_rps, np.inf)
            )
    result = milp(
        cost, constraints=constraints, integrality=np.ones(len(columns)), bounds=(0, 1)
    )
    if not result.success or result.x is None:
        return None
    return {
        name: count
        for (name, count), value in zip(columns, result.x, strict=True)
        if value > 0.5
    }
