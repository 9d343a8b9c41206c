"""Autoscaler: replicas per cloud, chosen ahead of demand at the lowest USD/hour.

Each decision looks at the forecast upper bound over the next `horizon_s` =
provisioning lead + decision interval: a replica ordered now is ready after the lead
and stays until at least the next decision, and one removed now cannot be back
sooner, so the peak of the upper bound over every slot up to the horizon (and the
rate just observed, against forecasts that lag a flash crowd) is the rate to serve.

Capacity within the SLO comes from the queueing model (router.queueing: Erlang C
with the demand model's service-time variability, constant for batched BERT): `c`
replicas of a cloud carry the highest rate at which P(wait > SLO - network - the
batch in progress - the request's own batch) <= 1 - quantile, at the best of the
replica's batch sizes (router.demand.carried_rps): a cloud far from its clients
is planned at a load where its batches stay small enough for two of them and the
round trip to fit. That
table is not linear in `c` (pooled servers gain), so the choice of counts is a
small mixed-integer program solved exactly with scipy.optimize.milp (HiGHS): one
binary per (cloud, count) pair, exactly one count per cloud, minimise price x
count subject to summed capacity >= the rate. A tiny cost per replica changed
breaks ties toward the current counts.

The rate served is not the forecaster's own upper bound as is: see
router.autoscaler_bound (log-space horizon errors, a capped multiplier, the recent
short-window peak). A cloud marked unavailable (`set_available`, e.g. a regional
outage) gets no replicas and its share moves to the other clouds at once.

Spot and on-demand: a CloudSpec is one pool priced by `use_spot`. Keeping on-demand
capacity in a region where spot is used means configuring a second cloud entry for
the same region without `use_spot`. The on-demand floor asks that on-demand pools
alone carry `on_demand_floor_fraction` of the rate and hold at least
`on_demand_floor_replicas` replicas, so a spot preemption never takes all capacity.
A cheaper guard is the spot reserve (`spot_reserve_fraction`): the counts must
still carry that share of the forecast mean after any one spot cloud loses one
replica, which keeps a spare where a pool runs near its last replica's worth and
costs nothing where the forecast margin already covers one replica.

Flapping is held off by separate delays: a cloud scales up once its desired count
has stayed above its target for `upscale_delay_s`, and down once it has stayed below
for `downscale_delay_s`, to the highest count desired during that wait. A scale-down
first drains: the replicas leaving are reported in `draining` (no new traffic) and
stay in `targets` for `drain_s`; if demand returns meanwhile they serve again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import ConfigError
from router.autoscaler_bound import UpperTracker
from router.autoscaler_settings import DAY_S, AutoscalerSettings, forecaster_settings
from router.autoscaler_solve import cheapest_counts
from router.clock import Clock
from router.cloud import CloudSpec
from router.demand import DemandModel, ReplicaCapacity, ReplicaSpeed, carried_rps
from router.forecast import Forecaster

logger = logging.getLogger(__name__)


__all__ = [
    "DAY_S",
    "Autoscaler",
    "AutoscalerSettings",
    "ScaleDecision",
    "forecaster_settings",
]


@dataclass(frozen=True)
class ScaleDecision:
    """What each cloud should run now, and why.

    `targets` counts every replica to keep, draining ones included; `draining` of
    them take no new traffic and go once drained, so serving = targets - draining.
    `forecast_rps` and `upper_rps` are the peaks over the horizon; `desired` is the
    optimiser's answer before the delays.
    """

    targets: dict[str, int]
    forecast_rps: float
    upper_rps: float
    usd_per_hour: float
    draining: dict[str, int] = field(default_factory=dict)
    reason: str = "hold"
    desired: dict[str, int] = field(default_factory=dict)


# (cloud, token-mix bucket, texts per request, network s, largest count)
_TableKey = tuple[str, float | None, float, float, int]


@dataclass
class _Drain:
    replicas: int
    since_s: float


class Autoscaler:
    """Chooses replicas per cloud from the forecast, capacity, prices and the SLO."""

    def __init__(
        self,
        clouds: Sequence[CloudSpec],
        demand: DemandModel,
        forecaster: Forecaster,
        settings: AutoscalerSettings,
        clock: Clock,
    ) -> None:
        names = [c.name for c in clouds]
        if not clouds or len(set(names)) != len(names):
            raise ConfigError(f"autoscaler needs distinct cloud names, got {names}")
        for cloud in clouds:
            if cloud.accelerator not in demand.speeds:
                raise ConfigError(
                    f"cloud {cloud.name}: no capacity for accelerator "
                    f"{cloud.accelerator!r}; known: {sorted(demand.speeds)}"
                )
        self.clouds = {c.name: c for c in clouds}
        self.demand = demand
        self.forecaster = forecaster
        self.settings = settings
        self._clock = clock
        self._slot_s = forecaster.settings.slot_s
        self._prices = {c.name: c.replica_usd_per_hour for c in clouds}
        self._network_s = {c.name: 0.0 for c in clouds}

        self._slot_index: int | None = None
        self._slot_started_s = 0.0
        self._slot_requests = self._slot_sequences = self._slot_tokens = 0
        self._last_rate_rps: float | None = None
        self._seq_per_request = demand.seq_per_request
        self._tokens_per_seq: float | None = None

        self._serving: dict[str, int] | None = None
        self._drains: dict[str, _Drain] = {}
        self._up_since_s: dict[str, float] = {}
        self._down_since_s: dict[str, float] = {}
        self._down_peak: dict[str, int] = {}
        self._available = dict.fromkeys(self.clouds, True)
        self._tables: dict[_TableKey, list[float]] = {}
        self._points: dict[tuple[str, float | None], tuple[ReplicaCapacity, ...]] = {}
        self._horizon_slots = max(
            1, math.ceil(settings.horizon_s / self._slot_s - 1e-9)
        )
        self._upper = UpperTracker(
            self._slot_s,
            self._horizon_slots,
            settings.forecast_confidence,
            settings.upper_max_multiple,
            settings.upper_cap_multiple,
            settings.peak_window_s,
            settings.peak_memory_s,
            warmup_slots=round((forecaster.settings.season_s or 0.0) / self._slot_s),
            overload_budget=settings.overload_budget,
            season_slots=forecaster.settings.season_slots,
            margin_window_slots=(
                None
                if settings.margin_window_s is None
                else round(settings.margin_window_s / self._slot_s)
            ),
        )

    def set_available(self, cloud: str, available: bool) -> None:
        """Mark a cloud up or down (outage, no capacity to launch); a down cloud
        gets no replicas and the others carry its share from the next decision."""
        self._check_cloud(cloud)
        if self._available[cloud] != available:
            logger.info("event=cloud_available cloud=%s available=%s", cloud, available)
        self._available[cloud] = available

    def set_price(self, cloud: str, usd_per_hour: float) -> None:
        """Replace a cloud's replica price (live spot prices move)."""
        self._check_cloud(cloud)
        if usd_per_hour < 0:
            raise ValueError(f"usd_per_hour must be >= 0, got {usd_per_hour}")
        self._prices[cloud] = usd_per_hour

    def set_speed(self, cloud: str, speed: ReplicaSpeed) -> None:
        """Replace how fast a cloud's replicas run (e.g. as measured while serving).

        The speed is that of the cloud's accelerator, so clouds sharing one change
        together; give each cloud its own accelerator name to measure them apart.
        """
        self._check_cloud(cloud)
        accelerator = self.clouds[cloud].accelerator
        self.demand.speeds[accelerator] = speed
        self._points = {k: v for k, v in self._points.items() if k[0] != accelerator}
        self._tables = {
            k: v
            for k, v in self._tables.items()
            if self.clouds[k[0]].accelerator != accelerator
        }

    def set_network_s(self, cloud: str, rtt_s: float) -> None:
        """Round trip to a cloud; it comes out of that cloud's queueing budget."""
        self._check_cloud(cloud)
        self._network_s[cloud] = max(0.0, rtt_s)

    def observe(self, num_requests: int, num_sequences: int, num_tokens: int) -> None:
        """Count traffic that arrived now (one request, or a batch of them)."""
        now_s = self._clock()
        self._roll_slots(now_s)
        self._upper.observe(now_s, num_requests)
        self._slot_requests += num_requests
        self._slot_sequences += num_sequences
        self._slot_tokens += num_tokens

    def capacity_rps(self, cloud: str, replicas: int) -> float:
        """Request rate `replicas` replicas of `cloud` carry within the SLO now."""
        self._check_cloud(cloud)
        return self._capacity_table(cloud, replicas)[replicas]

    def decide(self, running: Mapping[str, int]) -> ScaleDecision:
        """Target replicas per cloud for now; call every decision interval."""
        now_s = self._clock()
        self._roll_slots(now_s)
        if self._serving is None:
            self._serving = {
                name: min(max(running.get(name, 0), c.min_replicas), c.max_replicas)
                for name, c in self.clouds.items()
            }
        for name, up in self._available.items():
            if not up:
                # Its replicas are gone: nothing to drain, nothing to wait for.
                self._serving[name] = 0
                self._drains.pop(name, None)
                self._down_since_s.pop(name, None)
                self._down_peak.pop(name, None)

        forecast_rps, upper_rps = self._peak_forecast(now_s)
        tables = {name: self._capacity_table(name) for name in self.clouds}
        reserve_rps = self.settings.spot_reserve_fraction * forecast_rps
        desired, notes = self._optimise(upper_rps, tables, self._serving, reserve_rps)
        reasons = self._apply_delays(desired, now_s)

        targets = {
            name: self._serving[name] + self._drain_count(name) for name in self.clouds
        }
        draining = {name: self._drain_count(name) for name in self.clouds}
        usd_per_hour = sum(targets[n] * self._prices[n] for n in self.clouds)
        reason = "+".join(notes + (reasons or ["hold"]))
        decision = ScaleDecision(
            targets=targets,
            forecast_rps=forecast_rps,
            upper_rps=upper_rps,
            usd_per_hour=usd_per_hour,
            draining=draining,
            reason=reason,
            desired=desired,
        )
        if reasons:
            logger.info(
                "event=scale_decision reason=%s targets=%s draining=%s upper_rps=%.2f "
                "usd_per_hour=%.3f",
                reason,
                targets,
                draining,
                upper_rps,
                usd_per_hour,
            )
        return decision

    # Observation slots.

    def _roll_slots(self, now_s: float) -> None:
        """Close every slot that has ended and hand its rate to the forecaster."""
        index = math.floor(now_s / self._slot_s)
        if self._slot_index is None:
            self._slot_index = index
            self._slot_started_s = now_s
            return
        # After a long silence only the slots the forecaster still keeps matter.
        oldest = index - self.forecaster.settings.history_slots
        while self._slot_index < index:
            if self._slot_index >= oldest:
                self._close_slot(self._slot_index)
            self._slot_index += 1
            self._slot_started_s = self._slot_index * self._slot_s
            self._slot_requests = self._slot_sequences = self._slot_tokens = 0

    def _close_slot(self, index: int) -> None:
        start_s = index * self._slot_s
        # The first slot may have begun mid-way: divide by the time actually seen.
        seen_s = start_s + self._slot_s - max(start_s, self._slot_started_s)
        rate_rps = self._slot_requests / max(seen_s, 1e-9)
        self.forecaster.observe(start_s, rate_rps)
        self._last_rate_rps = rate_rps
        mean_peak_rps = max(
            self.forecaster.forecast_steps(k).mean_rps
            for k in range(1, self._horizon_slots + 1)
        )
        self._upper.close_slot(rate_rps, mean_peak_rps)

        weight = self.settings.demand_smoothing
        if self._slot_requests and self._slot_sequences:
            spr = self._slot_sequences / self._slot_requests
            self._seq_per_request += weight * (spr - self._seq_per_request)
            tps = self._slot_tokens / self._slot_sequences
            if self._tokens_per_seq is None:
                self._tokens_per_seq = tps
            else:
                self._tokens_per_seq += weight * (tps - self._tokens_per_seq)

    # Forecast and capacity.

    def _peak_forecast(self, now_s: float) -> tuple[float, float]:
        horizon_s = self.settings.horizon_s
        mean_rps = upper_rps = 0.0
        for k in range(1, self._horizon_slots + 1):
            forecast = self.forecaster.forecast(min(k * self._slot_s, horizon_s))
            mean_rps = max(mean_rps, forecast.mean_rps)
            upper_rps = max(upper_rps, forecast.upper_rps)
        upper_rps = self._upper.upper_rps(now_s, mean_rps, upper_rps)
        if self._last_rate_rps is not None:
            upper_rps = max(upper_rps, self._last_rate_rps)
        return mean_rps, upper_rps

    def _capacity_table(self, cloud: str, up_to: int | None = None) -> list[float]:
        """Request rate carried within the SLO by 0, 1, ... replicas of `cloud`."""
        spec = self.clouds[cloud]
        settings = self.settings
        # The operating points move only when the token mix does; a change of the
        # mean under 1% is noise of the counts, not a new mix.
        tokens_key = (
            None
            if self._tokens_per_seq is None
            else round(math.log(max(self._tokens_per_seq, 1.0)), 2)
        )
        point_key = (spec.accelerator, tokens_key)
        points = self._points.get(point_key)
        if points is None:
            mix = self.demand.length_mix
            if self._tokens_per_seq is not None:
                # The first mean seen in the bucket: within 1% of any later one.
                mix = mix.scaled_to_mean(self._tokens_per_seq)
            points = self.demand.operating_points(
                spec.accelerator, settings.quantile, mix
            )
            if len(self._points) > 64:
                self._points.clear()
            self._points[point_key] = points
        last = max(spec.max_replicas, 0 if up_to is None else up_to)
        seq_per_request = max(round(self._seq_per_request, 3), 1e-3)
        key = (cloud, tokens_key, seq_per_request, self._network_s[cloud], last)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) > 64 * len(self.clouds):
                self._tables.clear()
            table = [
                carried_rps(
                    points,
                    c,
                    seq_per_request,
                    settings.slo_s,
                    self._network_s[cloud],
                    settings.quantile,
                    self.demand.service_scv,
                )
                for c in range(last + 1)
            ]
            self._tables[key] = table
        return table

    # Choice of counts.

    def _optimise(
        self,
        rate_rps: float,
        tables: Mapping[str, list[float]],
        current: Mapping[str, int],
        reserve_rps: float = 0.0,
    ) -> tuple[dict[str, int], list[str]]:
        """Cheapest counts carrying `rate_rps`, relaxing what cannot be met: the
        spot reserve first, then the on-demand floor."""
        floor = self.settings.on_demand_floor_fraction
        floor_replicas = self.settings.on_demand_floor_replicas
        has_on_demand = any(not c.use_spot for c in self.clouds.values())
        notes = []
        spot_up = any(c.use_spot and self._available[n] for n, c in self.clouds.items())
        if reserve_rps > 0 and spot_up:
            solution = self._solve(
                rate_rps, tables, current, floor, floor_replicas, False, reserve_rps
            )
            if solution is not None:
                return solution, []
            notes.append("spot_reserve_relaxed")
        solution = self._solve(rate_rps, tables, current, floor, floor_replicas, False)
        if solution is not None:
            return solution, notes
        if has_on_demand and (floor > 0 or floor_replicas > 0):
            # Keep as much on-demand capacity as there is, and meet the rate.
            solution = self._solve(rate_rps, tables, current, 0.0, 0, True)
            if solution is not None:
                return solution, [*notes, "on_demand_floor_relaxed"]
            notes.append("on_demand_floor_relaxed")
        logger.warning("event=demand_exceeds_max upper_rps=%.2f", rate_rps)
        # Every cloud that carries anything within the SLO at its maximum; one that
        # carries nothing (its RTT plus a request's service already break the SLO)
        # would only cost money, so it stays at its floor.
        full = {
            name: (
                0
                if not self._available[name]
                else c.max_replicas
                if tables[name][c.max_replicas] > 0
                else c.min_replicas
            )
            for name, c in self.clouds.items()
        }
        return full, [*notes, "demand_exceeds_max"]

    def _solve(
        self,
        rate_rps: float,
        tables: Mapping[str, list[float]],
        current: Mapping[str, int],
        floor_fraction: float,
        floor_replicas: int,
        on_demand_at_max: bool,
        reserve_rps: float = 0.0,
    ) -> dict[str, int] | None:
        bounds = {}
        for name, spec in self.clouds.items():
            high = spec.max_replicas if self._available[name] else 0
            pinned = on_demand_at_max and not spec.use_spot
            bounds[name] = (high if pinned else min(spec.min_replicas, high), high)
        return cheapest_counts(
            rate_rps,
            tables,
            bounds,
            self._prices,
            {name: not spec.use_spot for name, spec in self.clouds.items()},
            current,
            floor_fraction=floor_fraction,
            floor_replicas=floor_replicas,
            reserve_rps=reserve_rps,
            change_penalty_usd_per_hour=self.settings.change_penalty_usd_per_hour,
        )

    # Delays and draining.

    def _apply_delays(self, desired: Mapping[str, int], now_s: float) -> list[str]:
        """Move serving counts toward `desired` as the delays allow; say what moved."""
        assert self._serving is not None
        settings = self.settings
        reasons: list[str] = []
        for name in self.clouds:
            serving = self._serving[name]
            want = desired[name]
            if want > serving:
                self._down_since_s.pop(name, None)
                self._down_peak.pop(name, None)
                since_s = self._up_since_s.setdefault(name, now_s)
                if now_s - since_s >= settings.upscale_delay_s:
                    self._scale_up(name, want)
                    self._up_since_s.pop(name, None)
                    _add(reasons, "scale_up")
                else:
                    _add(reasons, "upscale_delay")
            elif want < serving:
                self._up_since_s.pop(name, None)
                since_s = self._down_since_s.setdefault(name, now_s)
                peak = max(self._down_peak.get(name, want), want)
                self._down_peak[name] = peak
                if now_s - since_s >= settings.downscale_delay_s:
                    self._start_drain(name, peak, now_s)
                    self._down_since_s.pop(name, None)
                    self._down_peak.pop(name, None)
                    _add(reasons, "drain")
                else:
                    _add(reasons, "downscale_delay")
            else:
                self._up_since_s.pop(name, None)
                self._down_since_s.pop(name, None)
                self._down_peak.pop(name, None)

            drain = self._drains.get(name)
            if drain is not None and now_s - drain.since_s >= settings.drain_s:
                del self._drains[name]
                _add(reasons, "scale_down")
        return reasons

    def _scale_up(self, cloud: str, want: int) -> None:
        """Serve `want` replicas, taking back draining ones before adding new ones."""
        assert self._serving is not None
        drain = self._drains.get(cloud)
        if drain is not None:
            reused = min(drain.replicas, want - self._serving[cloud])
            drain.replicas -= reused
            if drain.replicas == 0:
                del self._drains[cloud]
        self._serving[cloud] = want

    def _start_drain(self, cloud: str, keep: int, now_s: float) -> None:
        assert self._serving is not None
        leaving = self._serving[cloud] - keep
        drain = self._drains.get(cloud)
        # More replicas leaving restarts the wait, so the newest also get drain_s.
        self._drains[cloud] = _Drain(leaving + (drain.replicas if drain else 0), now_s)
        self._serving[cloud] = keep

    def _drain_count(self, cloud: str) -> int:
        drain = self._drains.get(cloud)
        return drain.replicas if drain else 0

    def _check_cloud(self, cloud: str) -> None:
        if cloud not in self.clouds:
            raise KeyError(f"unknown cloud {cloud!r}; known: {sorted(self.clouds)}")


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)
