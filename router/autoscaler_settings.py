"""Settings of the autoscaler, and the forecaster settings that fit them."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ConfigError
from router.forecast import ForecasterSettings

DAY_S = 86_400.0


@dataclass(frozen=True)
class AutoscalerSettings:
    """Targets, delays and safety margins of the autoscaler."""

    slo_ms: float = 200.0
    quantile: float = 0.95
    decision_interval_s: float = 30.0
    provisioning_lead_s: float = 270.0
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 600.0
    drain_s: float = 30.0
    on_demand_floor_fraction: float = 0.0
    on_demand_floor_replicas: int = 0
    # If > 0, losing one replica of any one spot cloud (a preemption: its
    # replacement is ready only after the provisioning lead) must leave capacity
    # for this share of the forecast mean rate.
    spot_reserve_fraction: float = 0.0
    forecast_confidence: float = 0.95
    # If set, the forecast margin is sized so that on past errors the expected
    # share of requests above capacity is at most this (autoscaler_bound), in
    # place of the `forecast_confidence` quantile of the errors.
    overload_budget: float | None = None
    # If set (with a daily season), the margin comes from the errors made within
    # this many seconds of the same time of day on the days kept, not all of them.
    margin_window_s: float | None = None
    demand_smoothing: float = 0.2
    change_penalty_usd_per_hour: float = 1e-3
    # The served rate: forecast mean x at most this (log-space error quantile)...
    upper_max_multiple: float = 3.0
    # ...and at most this times the day's highest slot rate (unless the mean is).
    upper_cap_multiple: float = 2.0
    # At least the highest rate in any `peak_window_s` of the last `peak_memory_s`.
    peak_window_s: float = 10.0
    peak_memory_s: float = 300.0

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ConfigError(f"autoscaler.slo_ms must be > 0, got {self.slo_ms}")
        if not 0 < self.quantile < 1:
            raise ConfigError(
                f"autoscaler.quantile must be in (0, 1), got {self.quantile}"
            )
        if self.decision_interval_s <= 0:
            raise ConfigError(
                "autoscaler.decision_interval_s must be > 0, got "
                f"{self.decision_interval_s}"
            )
        for name in (
            "provisioning_lead_s",
            "upscale_delay_s",
            "downscale_delay_s",
            "drain_s",
            "on_demand_floor_replicas",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"autoscaler.{name} must be >= 0")
        if not 0 <= self.on_demand_floor_fraction <= 1:
            raise ConfigError(
                "autoscaler.on_demand_floor_fraction must be in [0, 1], got "
                f"{self.on_demand_floor_fraction}"
            )
        if not 0 <= self.spot_reserve_fraction <= 1:
            raise ConfigError(
                "autoscaler.spot_reserve_fraction must be in [0, 1], got "
                f"{self.spot_reserve_fraction}"
            )
        if not 0 < self.demand_smoothing <= 1:
            raise ConfigError("autoscaler.demand_smoothing must be in (0, 1]")
        if self.overload_budget is not None and not 0 < self.overload_budget < 1:
            raise ConfigError(
                f"autoscaler.overload_budget must be in (0, 1), got "
                f"{self.overload_budget}"
            )
        if self.margin_window_s is not None and self.margin_window_s < 0:
            raise ConfigError(
                f"autoscaler.margin_window_s must be >= 0, got {self.margin_window_s}"
            )
        if self.upper_max_multiple < 1 or self.upper_cap_multiple < 1:
            raise ConfigError("autoscaler upper multiples must be >= 1")
        if self.peak_window_s <= 0 or self.peak_memory_s < 0:
            raise ConfigError("autoscaler.peak_window_s must be > 0, memory >= 0")

    @property
    def slo_s(self) -> float:
        return self.slo_ms / 1000.0

    @property
    def horizon_s(self) -> float:
        """How far ahead a decision must see: provisioning lead + decision interval."""
        return self.provisioning_lead_s + self.decision_interval_s


def forecaster_settings(
    settings: AutoscalerSettings, slot_s: float = 60.0, season_s: float | None = DAY_S
) -> ForecasterSettings:
    """Forecaster settings that fit and bound errors at this autoscaler's horizon."""
    return ForecasterSettings(
        slot_s=slot_s,
        season_s=season_s,
        fit_horizon_s=settings.horizon_s,
        confidence=settings.forecast_confidence,
    )
