"""The router's settings: one frozen dataclass that the YAML `router:` block mirrors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import ConfigError
from router.breaker import BreakerSettings


@dataclass(frozen=True)
class RouterSettings:
    """How the router trades latency for price; the YAML `router:` block mirrors it.

    `penalty_usd_per_request` is a soft preference: it is added to a cloud's cost per
    request (positive to avoid a cloud, negative to favour it) and never overrides a
    hard constraint or the SLO.
    """

    slo_ms: float = 200.0
    quantile: float = 0.95
    half_life_s: float = 10.0
    # A cloud's tail estimate must rest on at least this many recent observations
    # above it (decayed by the half-life), so one slow request never moves traffic.
    tail_min_observations: float = 2.0
    probe_interval_s: float = 5.0
    # Under "slo_cost", a cloud no cheaper than the one chosen would not take the
    # traffic back however fast it is; it matters as a spill and failover target
    # only, and is probed this (longer) often, so probes cost little at low load.
    backup_probe_interval_s: float = 60.0
    default_rtt_ms: float = 20.0
    default_seq_per_s_per_replica: float = 50.0
    breaker_consecutive_failures: int = 5
    breaker_error_rate: float = 0.5
    breaker_window_s: float = 30.0
    breaker_min_requests: int = 20
    breaker_cooldown_s: float = 10.0
    breaker_half_open_trials: int = 1
    penalty_usd_per_request: Mapping[str, float] = field(default_factory=dict)
    random_seed: int | None = None

    def __post_init__(self) -> None:
        positive = {
            "slo_ms": self.slo_ms,
            "half_life_s": self.half_life_s,
            "probe_interval_s": self.probe_interval_s,
            "backup_probe_interval_s": self.backup_probe_interval_s,
            "default_seq_per_s_per_replica": self.default_seq_per_s_per_replica,
            "breaker_window_s": self.breaker_window_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"router.{name} must be > 0, got {value}")
        if self.tail_min_observations < 0:
            raise ConfigError(
                "router.tail_min_observations must be >= 0, got "
                f"{self.tail_min_observations}"
            )
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"router.quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.breaker_error_rate <= 1.0:
            raise ConfigError(
                "router.breaker_error_rate must be in (0, 1], got "
                f"{self.breaker_error_rate}"
            )
        at_least_one = {
            "breaker_consecutive_failures": self.breaker_consecutive_failures,
            "breaker_min_requests": self.breaker_min_requests,
            "breaker_half_open_trials": self.breaker_half_open_trials,
        }
        for name, count in at_least_one.items():
            if count < 1:
                raise ConfigError(f"router.{name} must be >= 1, got {count}")
        for name, value in {
            "default_rtt_ms": self.default_rtt_ms,
            "breaker_cooldown_s": self.breaker_cooldown_s,
        }.items():
            if value < 0:
                raise ConfigError(f"router.{name} must be >= 0, got {value}")

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            consecutive_failures=self.breaker_consecutive_failures,
            error_rate=self.breaker_error_rate,
            window_s=self.breaker_window_s,
            min_requests=self.breaker_min_requests,
            cooldown_s=self.breaker_cooldown_s,
            half_open_trials=self.breaker_half_open_trials,
        )
