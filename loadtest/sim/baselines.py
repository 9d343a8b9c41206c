"""The baseline autoscalers the product is compared against: simple reactive scalers.

`QueueLengthAutoscaler` follows Ray Serve's default policy: per deployment (here a
pool), desired replicas = ceil(mean ongoing requests over a look-back window /
`target_ongoing_requests`), acted on only after the wish has held for the upscale
or downscale delay. `QpsAutoscaler` follows SkyServe's request-rate policy: desired
replicas = ceil(request rate over a window / `target_qps_per_replica`), with its own
delays, placed on the cheapest pools first (by price per replica, as SkyServe picks
the cheapest resources). Both have the same `observe`/`decide` shape as
`router.autoscaler.Autoscaler` and return its `ScaleDecision`. Defaults are the
documented defaults of those systems; they are comparison targets, not the product.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.autoscaler import ScaleDecision
from router.clock import Clock
from router.cloud import CloudSpec


@dataclass(frozen=True)
class QueueLengthSettings:
    """Ray Serve's autoscaling_config defaults (target 2 ongoing requests)."""

    target_ongoing_requests: float = 2.0
    look_back_s: float = 30.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    decision_interval_s: float = 10.0


class _Hysteresis:
    """Acts on a wish only after it has held for the delay in its direction."""

    def __init__(self, up_delay_s: float, down_delay_s: float) -> None:
        self._up_delay_s = up_delay_s
        self._down_delay_s = down_delay_s
        self._since_s: dict[str, tuple[int, float]] = {}

    def apply(self, key: str, current: int, desired: int, now_s: float) -> int:
        direction = (desired > current) - (desired < current)
        if direction == 0:
            self._since_s.pop(key, None)
            return current
        held = self._since_s.get(key)
        if held is None or held[0] != direction:
            self._since_s[key] = (direction, now_s)
            held = self._since_s[key]
        delay_s = self._up_delay_s if direction > 0 else self._down_delay_s
        if now_s - held[1] >= delay_s:
            self._since_s.pop(key, None)
            return desired
        return current


class QueueLengthAutoscaler:
    """Ray Serve's default: replicas from ongoing requests per replica, per pool."""

    def __init__(
        self,
        pools: Sequence[CloudSpec],
        settings: QueueLengthSettings,
        clock: Clock,
    ) -> None:
        self.pools = {p.name: p for p in pools}
        self.settings = settings
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, float]]] = {
            name: deque() for name in self.pools
        }
        self._current: dict[str, int] | None = None
        self._hysteresis = _Hysteresis(
            settings.upscale_delay_s, settings.downscale_delay_s
        )

    def observe(self, num_requests: int, num_sequences: int, num_tokens: int) -> None:
        """Request counts are not what this policy reads; ongoing requests are."""

    def observe_load(self, ongoing_requests: Mapping[str, float]) -> None:
        now_s = self._clock()
        horizon_s = now_s - self.settings.look_back_s
        for name, ongoing in ongoing_requests.items():
            samples = self._samples[name]
            samples.append((now_s, ongoing))
            while samples and samples[0][0] < horizon_s:
                samples.popleft()

    def decide(self, running: Mapping[str, int]) -> ScaleDecision:
        now_s = self._clock()
        if self._current is None:
            self._current = {
                n: min(max(running.get(n, 0), p.min_replicas), p.max_replicas)
                for n, p in self.pools.items()
            }
        for name, pool in self.pools.items():
            samples = self._samples[name]
            mean = sum(v for _, v in samples) / len(samples) if samples else 0.0
            desired = math.ceil(mean / self.settings.target_ongoing_requests)
            desired = min(max(desired, pool.min_replicas), pool.max_replicas)
            self._current[name] = self._hysteresis.apply(
                name, self._current[name], desired, now_s
            )
        return _decision(self._current, self.pools, "queue_length")


@dataclass(frozen=True)
class QpsSettings:
    """SkyServe's defaults: 300 s up and 1200 s down delays, 60 s rate window."""

    target_qps_per_replica: float
    window_s: float = 60.0
    upscale_delay_s: float = 300.0
    downscale_delay_s: float = 1200.0
    decision_interval_s: float = 20.0
    min_total_replicas: int = 1


class QpsAutoscaler:
    """SkyServe-like: a total from the request rate, filled cheapest pool first."""

    def __init__(
        self, pools: Sequence[CloudSpec], settings: QpsSettings, clock: Clock
    ) -> None:
        self.pools = {p.name: p for p in pools}
        self.settings = settings
        self._clock = clock
        self._arrivals: deque[tuple[float, int]] = deque()
        self._first_s: float | None = None
        self._total: int | None = None
        self._hysteresis = _Hysteresis(
            settings.upscale_delay_s, settings.downscale_delay_s
        )
        self._order = sorted(
            self.pools.values(), key=lambda p: (p.replica_usd_per_hour, p.name)
        )

    def observe(self, num_requests: int, num_sequences: int, num_tokens: int) -> None:
        now_s = self._clock()
        if self._first_s is None:
            self._first_s = now_s
        self._arrivals.append((now_s, num_requests))
        horizon_s = now_s - self.settings.window_s
        while self._arrivals and self._arrivals[0][0] <= horizon_s:
            self._arrivals.popleft()

    def decide(self, running: Mapping[str, int]) -> ScaleDecision:
        now_s = self._clock()
        if self._total is None:
            self._total = sum(running.values())
        seen_s = self.settings.window_s
        if self._first_s is not None:
            seen_s = min(seen_s, max(now_s - self._first_s, 1.0))
        qps = sum(n for _, n in self._arrivals) / seen_s
        desired = max(
            self.settings.min_total_replicas,
            math.ceil(qps / self.settings.target_qps_per_replica),
        )
        self._total = self._hysteresis.apply("total", self._total, desired, now_s)
        targets = {}
        left = self._total
        for pool in self._order:
            take = min(left, pool.max_replicas)
            targets[pool.name] = max(take, pool.min_replicas)
            left -= take
        return _decision(targets, self.pools, "qps")


class StaticScaler:
    """Fixed replicas per pool, whatever the load: provisioning for the peak."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)

    def observe(self, num_requests: int, num_sequences: int, num_tokens: int) -> None:
        """Load does not change a static deployment."""

    def decide(self, running: Mapping[str, int]) -> ScaleDecision:
        return ScaleDecision(
            targets=dict(self.counts),
            forecast_rps=0.0,
            upper_rps=0.0,
            usd_per_hour=0.0,
            reason="static",
        )


def _decision(
    targets: Mapping[str, int], pools: Mapping[str, CloudSpec], reason: str
) -> ScaleDecision:
    usd = sum(targets[n] * pools[n].replica_usd_per_hour for n in targets)
    return ScaleDecision(
        targets=dict(targets),
        forecast_rps=0.0,
        upper_rps=0.0,
        usd_per_hour=usd,
        reason=reason,
    )
