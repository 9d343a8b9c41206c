"""Request-rate forecaster: Holt-Winters combined online with the last value.

Per slot of `slot_s` seconds the value y_t (by default log(rate + one request per
slot), so that the daily swing scales with the level and bursts weigh less) feeds
two forecasters (members):

- an additive Holt-Winters model with a damped trend and a season
  (`router.forecast_holt_winters`), whose smoothing factors are refitted from the
  kept history (a few seasons) at the fit horizon (the autoscaler's lead time); the
  season is only used once two full seasons have been seen;
- the last observed value (a random walk's best forecast).

The forecast is their weighted mean (in model scale), with the Bates-Granger
weight that minimises the squared error of the combination over the recent
out-of-sample errors e_h (Holt-Winters) and e_l (last value) at the fit horizon:

    w = sum(e_l^2 - e_h e_l) / sum((e_h - e_l)^2), clipped to [0, 1]

It counts how alike the two members' errors are (their covariance), so a member
that is better on every slot takes the whole weight (a perfect one gets exactly
1), while on a tie, e.g. a random walk where a fitted model has nothing to add,
both share it. By the convexity of the absolute error the combination's error on a
slot is never above the weighted mean of the members' errors. The weights are equal
until `_MIN_ERRORS` paired errors have been seen. Fitting uses the
one-standard-error rule (see `fit_params`), so a short history gets a level model
rather than a trend fitted to noise.

The upper bound adds the `confidence` quantile of the combined forecast's own
out-of-sample errors at the fit horizon (in log scale, a factor on the rate).
Seasonal positions come from absolute slot numbers (t_s / slot_s), so slots missing
from the input are filled with the model's own forecast and the season stays aligned
to the clock; filled slots are not scored. In log scale `mean_rps` is the
back-transformed forecast, nearer a median than a mean on bursty traffic.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from router.clock import Clock
from router.forecast_holt_winters import (
    HoltWintersParams,
    HoltWintersState,
    filter_history,
    fit_params,
)

__all__ = ["Forecast", "Forecaster", "ForecasterSettings", "HoltWintersParams"]

logger = logging.getLogger(__name__)

# Errors needed before a quantile or a weight is trusted.
_MIN_ERRORS = 20


@dataclass(frozen=True)
class ForecasterSettings:
    """How the forecaster slices time, how far it looks and how sure the bound is.

    `combination_window_horizons`: the member weights come from the errors of the
    last (this many x fit-horizon) slots. Errors at an h-slot horizon overlap and
    are correlated over about h slots, so the window holds about this many
    independent errors: 40 put the standard error of a mean at 1/sqrt(40) ~ 16 % of
    a standard deviation, yet forget a regime within hours at 5-minute horizons.
    `combine_with_last_value` False gives the plain Holt-Winters forecast.
    """

    slot_s: float = 60.0
    season_s: float | None = 86_400.0
    fit_horizon_s: float = 300.0
    confidence: float = 0.95
    history_seasons: int = 3
    history_slots_without_season: int = 2_880
    refit_interval_s: float = 86_400.0
    residual_window_slots: int = 1_440
    damping: float = 0.98
    log_scale: bool = True
    combine_with_last_value: bool = True
    combination_window_horizons: int = 40

    def __post_init__(self) -> None:
        if self.slot_s <= 0:
            raise ValueError(f"slot_s must be > 0, got {self.slot_s}")
        if self.season_s is not None and self.season_s < 2 * self.slot_s:
            raise ValueError(
                f"season_s={self.season_s} must span at least two slots of "
                f"{self.slot_s} s"
            )
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping}")
        if self.combination_window_horizons < 1:
            raise ValueError(
                "combination_window_horizons must be >= 1, got "
                f"{self.combination_window_horizons}"
            )

    @property
    def season_slots(self) -> int | None:
        return None if self.season_s is None else round(self.season_s / self.slot_s)

    @property
    def fit_horizon_slots(self) -> int:
        return max(1, math.ceil(self.fit_horizon_s / self.slot_s - 1e-9))

    @property
    def history_slots(self) -> int:
        m = self.season_slots
        if m is None:
            return self.history_slots_without_season
        return max(self.history_seasons * m, 2 * m + 3 * self.fit_horizon_slots)

    @property
    def min_fit_slots(self) -> int:
        return max(20, 3 * self.fit_horizon_slots)

    @property
    def combination_window_slots(self) -> int:
        return self.combination_window_horizons * self.fit_horizon_slots

    @property
    def log_offset_rps(self) -> float:
        """Added before the log so that empty slots stay finite: one request a slot."""
        return 1.0 / self.slot_s


@dataclass(frozen=True)
class Forecast:
    """Expected rate and its upper bound for the slot `horizon_s` from now."""

    mean_rps: float
    upper_rps: float
    horizon_s: float


class _Issued(NamedTuple):
    """Model-scale forecasts made for one slot at the fit horizon."""

    holt_winters: float | None  # None: not fitted when it was made
    last_value: float
    combined: float


class Forecaster:
    """Online forecaster of the request rate: feed it slots, ask it about the future."""

    def __init__(self, settings: ForecasterSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        # Model-scale values (logs when settings.log_scale), newest last.
        self._history: deque[float] = deque(maxlen=settings.history_slots)
        self._recent_rps: deque[float] = deque(maxlen=settings.fit_horizon_slots + 1)
        self._last_index: int | None = None
        self._last_value: float | None = None  # model scale, last observed slot
        self._params: HoltWintersParams | None = None
        self._state: HoltWintersState | None = None
        self._fitted_at_index: int | None = None
        self._fitted_on_slots = 0
        # Forecasts at the fit horizon awaiting their slot, by slot index.
        self._pending: dict[int, _Issued] = {}
        # Errors of the combined forecast, for the upper bound.
        self._residuals: deque[float] = deque(maxlen=settings.residual_window_slots)
        # Errors of (Holt-Winters, last value) on the same slots; sums of e_h^2,
        # e_l^2 and e_h e_l over the window.
        self._member_errors: deque[tuple[float, float]] = deque(
            maxlen=settings.combination_window_slots
        )
        self._error_sums = [0.0, 0.0, 0.0]
        self._holt_winters_weight = 0.5

    @property
    def params(self) -> HoltWintersParams | None:
        """The smoothing factors in use; None until the first fit."""
        return self._params

    @property
    def holt_winters_weight(self) -> float:
        """The Holt-Winters share of the forecast; the last value has the rest."""
        if self._params is None:
            return 0.0
        if not self.settings.combine_with_last_value:
            return 1.0
        return self._holt_winters_weight

    @property
    def last_slot_start_s(self) -> float | None:
        if self._last_index is None:
            return None
        return self._last_index * self.settings.slot_s

    def observe(self, t_s: float, rate_rps: float) -> None:
        """Record the mean rate of the slot that starts at `t_s`."""
        if rate_rps < 0 or not math.isfinite(rate_rps):
            raise ValueError(f"rate_rps must be finite and >= 0, got {rate_rps}")
        index = round(t_s / self.settings.slot_s)
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(
                f"slot at t_s={t_s} is not after the last observed slot "
                f"(index {index} <= {self._last_index})"
            )

        # Fill missing slots with the model's own forecast so the season stays put.
        if self._last_index is not None:
            for missing in range(self._last_index + 1, index):
                self._append(missing, self._one_step_forecast(missing), observed=False)
        self._append(index, self._to_model(rate_rps), observed=True)
        self._recent_rps.append(rate_rps)

        if self._should_refit(index):
            self._refit(index)

        # Keep what is forecast now at the fit horizon, to score it when it comes.
        horizon = self.settings.fit_horizon_slots
        self._pending[index + horizon] = self._issue(horizon)

    def forecast(self, horizon_s: float) -> Forecast:
        """Rate expected in the slot that contains now + horizon_s, and its bound."""
        if self._last_index is None:
            return Forecast(0.0, 0.0, horizon_s)
        slot_s = self.settings.slot_s
        target_end_s = self._clock() + horizon_s
        steps = math.ceil((target_end_s - self._last_index * slot_s) / slot_s - 1e-9)
        return self._forecast_steps(max(1, steps - 1), horizon_s)

    def forecast_steps(self, steps: int) -> Forecast:
        """Rate expected `steps` slots after the last observed one (clock-free)."""
        if self._last_index is None:
            return Forecast(0.0, 0.0, steps * self.settings.slot_s)
        return self._forecast_steps(max(1, steps), steps * self.settings.slot_s)

    def _forecast_steps(self, steps: int, horizon_s: float) -> Forecast:
        recent_peak_rps = max(self._recent_rps)
        if self._state is None or self._params is None:
            # Not fitted yet: the last value, bounded by the recent peak.
            return Forecast(self._recent_rps[-1], recent_peak_rps, horizon_s)
        predicted = self._issue(steps).combined
        mean_rps = self._from_model(predicted)
        if len(self._residuals) < _MIN_ERRORS:
            return Forecast(mean_rps, max(mean_rps, recent_peak_rps), horizon_s)
        margin = max(0.0, _quantile(sorted(self._residuals), self.settings.confidence))
        if self.settings.log_scale:
            upper_rps = self._from_model(predicted + margin)
        else:
            upper_rps = mean_rps + margin * max(mean_rps, 1.0 / self.settings.slot_s)
        return Forecast(mean_rps, upper_rps, horizon_s)

    def _issue(self, steps: int) -> _Issued:
        """Both members' and the combined model-scale forecast, `steps` ahead."""
        assert self._last_index is not None and self._last_value is not None
        last_value = self._last_value
        if self._state is None or self._params is None:
            return _Issued(None, last_value, last_value)
        holt_winters = self._state.predict(self._params, self._last_index, steps)
        weight = self.holt_winters_weight
        combined = weight * holt_winters + (1 - weight) * last_value
        return _Issued(holt_winters, last_value, combined)

    def _to_model(self, rate_rps: float) -> float:
        if self.settings.log_scale:
            return math.log(rate_rps + self.settings.log_offset_rps)
        return rate_rps

    def _from_model(self, value: float) -> float:
        if self.settings.log_scale:
            return max(0.0, math.exp(value) - self.settings.log_offset_rps)
        return max(0.0, value)

    def _error(self, value: float, predicted: float) -> float:
        """Log difference, or in linear scale the error relative to the prediction."""
        if self.settings.log_scale:
            return value - predicted
        predicted = max(predicted, 0.0)
        return (value - predicted) / max(predicted, 1.0 / self.settings.slot_s)

    def _residual_floor(self) -> float | None:
        return None if self.settings.log_scale else 1.0 / self.settings.slot_s

    def _append(self, index: int, value: float, observed: bool) -> None:
        issued = self._pending.pop(index, None)
        if issued is not None and observed:
            self._score(value, issued)
        self._history.append(value)
        self._last_index = index
        if observed:
            self._last_value = value
        if self._state is not None and self._params is not None:
            self._state.update(self._params, index, value)

    def _score(self, value: float, issued: _Issued) -> None:
        """Record the errors of forecasts made a fit horizon ago for this slot."""
        self._residuals.append(self._error(value, issued.combined))
        if issued.holt_winters is None:
            return
        self._add_member_errors(value, issued.holt_winters, issued.last_value)

    def _add_member_errors(
        self, value: float, holt_winters: float, last_value: float
    ) -> None:
        """Add one slot's pair of errors and update the Holt-Winters weight."""
        errors = self._member_errors
        sums = self._error_sums
        if len(errors) == errors.maxlen:
            old_h, old_l = errors[0]
            sums[0] -= old_h * old_h
            sums[1] -= old_l * old_l
            sums[2] -= old_h * old_l
        error_h = self._error(value, holt_winters)
        error_l = self._error(value, last_value)
        errors.append((error_h, error_l))
        sums[0] += error_h * error_h
        sums[1] += error_l * error_l
        sums[2] += error_h * error_l

        # w minimises the window's squared error of w * e_h + (1 - w) * e_l.
        denominator = sums[0] + sums[1] - 2 * sums[2]
        if len(errors) < _MIN_ERRORS or denominator <= 1e-12 * (sums[0] + sums[1]):
            self._holt_winters_weight = 0.5
        else:
            weight = (sums[1] - sums[2]) / denominator
            self._holt_winters_weight = min(1.0, max(0.0, weight))

    def _reseed(
        self, values: list[float], predictions: list[tuple[int, float]]
    ) -> None:
        """Refill the error windows from in-sample forecasts of the current fit."""
        horizon = self.settings.fit_horizon_slots
        self._member_errors.clear()
        self._error_sums = [0.0, 0.0, 0.0]
        pairs = [(j, p) for j, p in predictions if j >= horizon]
        for j, predicted in pairs[-self.settings.combination_window_slots :]:
            self._add_member_errors(values[j], predicted, values[j - horizon])
        self._residuals.clear()
        weight = self.holt_winters_weight
        for j, predicted in pairs[-self.settings.residual_window_slots :]:
            combined = weight * predicted + (1 - weight) * values[j - horizon]
            self._residuals.append(self._error(values[j], combined))

    def _one_step_forecast(self, index: int) -> float:
        if self._state is None or self._params is None:
            return self._history[-1]
        return self._state.predict(self._params, index - 1, 1)

    def _should_refit(self, index: int) -> bool:
        size = len(self._history)
        if size < self.settings.min_fit_slots:
            return False
        if self._fitted_at_index is None:
            return True
        m = self.settings.season_slots
        if m is not None and self._fitted_on_slots < 2 * m <= size:
            return True  # a second season just completed: the season can be fitted
        interval_slots = self.settings.refit_interval_s / self.settings.slot_s
        if index - self._fitted_at_index >= interval_slots:
            return True
        # While history is still short, refit as it grows by a quarter.
        growing = size < self.settings.history_slots
        return growing and size >= 1.25 * self._fitted_on_slots

    def _refit(self, index: int) -> None:
        values = list(self._history)
        first_index = index - len(values) + 1
        m = self.settings.season_slots
        horizon = self.settings.fit_horizon_slots
        floor = self._residual_floor()
        best = fit_params(values, first_index, m, horizon, floor, self.settings.damping)
        # A season added (or dropped) makes the old model's errors stale: restart
        # the error windows from the new fit's errors over the kept history, which
        # spans two seasons or more, so they are a fair estimate despite the fit.
        reseed = self._params is not None and (
            (self._params.gamma is None) != (best.gamma is None)
        )
        run = filter_history(
            values, first_index, best, m, horizon, floor, keep_predictions=reseed
        )
        self._params = best
        self._state = run.state
        if reseed:
            self._reseed(values, run.predictions)
        self._fitted_at_index = index
        self._fitted_on_slots = len(values)
        logger.debug(
            "event=forecaster_refit slots=%d alpha=%.2f beta=%.2f gamma=%s "
            "error=%.4f holt_winters_weight=%.2f",
            len(values),
            best.alpha,
            best.beta,
            best.gamma,
            run.relative_error,
            self.holt_winters_weight,
        )


def _quantile(sorted_values: list[float], q: float) -> float:
    """Empirical quantile with linear interpolation between order statistics."""
    position = q * (len(sorted_values) - 1)
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = position - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac
