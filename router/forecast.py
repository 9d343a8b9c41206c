"""Request-rate forecaster: additive Holt-Winters with a damped trend and a season.

Per slot of `slot_s` seconds the value y_t (by default log(rate + one request per
slot), so that the daily swing scales with the level and bursts weigh less) is
split into a level l, a trend b and a seasonal offset s for the slot's place in the
season (m slots, e.g. a day):

    l_t = alpha * (y_t - s_{t-m}) + (1 - alpha) * (l_{t-1} + phi * b_{t-1})
    b_t = beta * (l_t - l_{t-1}) + (1 - beta) * phi * b_{t-1}
    s_t = gamma * (y_t - l_t) + (1 - gamma) * s_{t-m}
    forecast(t + h) = l_t + (phi + ... + phi^h) * b_t + s_{t+h-m}

Smoothing factors are refitted from the kept history (a few seasons) by coordinate
descent minimising the absolute error at the fit horizon (the autoscaler's lead
time), comparing a seasonal and a non-seasonal model; the season is only used once
two full seasons have been seen. The upper bound adds the `confidence` quantile of
the recent errors at that horizon (in log scale, a factor on the rate). Seasonal
positions come from absolute slot numbers (t_s / slot_s), so slots missing from the
input are filled with the model's own forecast and the season stays aligned to the
clock. In log scale `mean_rps` is the back-transformed forecast, nearer a median
than a mean on bursty traffic.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from router.clock import Clock

logger = logging.getLogger(__name__)

_ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0)
_BETAS = (0.0, 0.02, 0.1)
_GAMMAS = (0.05, 0.15, 0.3)
_MIN_RESIDUALS = 20


@dataclass(frozen=True)
class ForecasterSettings:
    """How the forecaster slices time, how far it looks and how sure the bound is."""

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
    def log_offset_rps(self) -> float:
        """Added before the log so that empty slots stay finite: one request a slot."""
        return 1.0 / self.slot_s


@dataclass(frozen=True)
class Forecast:
    """Expected rate and its upper bound for the slot `horizon_s` from now."""

    mean_rps: float
    upper_rps: float
    horizon_s: float


@dataclass(frozen=True)
class HoltWintersParams:
    alpha: float
    beta: float
    gamma: float | None  # None: no seasonal component
    damping: float


class _State:
    """Level, trend and seasonal offsets after the last observed slot."""

    __slots__ = ("level", "trend", "season")

    def __init__(self, level: float, trend: float, season: list[float]) -> None:
        self.level = level
        self.trend = trend
        self.season = season

    def predict(self, params: HoltWintersParams, index: int, steps: int) -> float:
        """Forecast for absolute slot `index + steps` made after slot `index`."""
        phi = params.damping
        trend_sum = phi * (1 - phi**steps) / (1 - phi) if phi < 1 else float(steps)
        value = self.level + trend_sum * self.trend
        if params.gamma is not None:
            value += self.season[(index + steps) % len(self.season)]
        return value

    def update(self, params: HoltWintersParams, index: int, value: float) -> None:
        phi = params.damping
        offset = 0.0
        position = 0
        if params.gamma is not None:
            position = index % len(self.season)
            offset = self.season[position]
        previous = self.level
        damped_trend = phi * self.trend
        self.level = params.alpha * (value - offset) + (1 - params.alpha) * (
            previous + damped_trend
        )
        self.trend = params.beta * (self.level - previous) + (1 - params.beta) * (
            damped_trend
        )
        if params.gamma is not None:
            self.season[position] = (
                params.gamma * (value - self.level) + (1 - params.gamma) * offset
            )


@dataclass
class _Run:
    """The outcome of filtering a history with one parameter set."""

    state: _State
    error_sum: float
    actual_sum: float
    residuals: list[float]


def _run(
    values: list[float],
    first_index: int,
    params: HoltWintersParams,
    season_slots: int | None,
    horizon: int,
    floor_rps: float | None,
    score_from: int = 0,
) -> _Run:
    """Filter `values` (slots first_index, first_index + 1, ...) and score the fit.

    Only errors at positions >= `score_from` count, so that models that start
    filtering at different points are scored on the same slots. With `floor_rps`
    None the values are logs: the error is the difference of logs. Otherwise they
    are rates: predictions are clipped at 0 and residuals are relative to the
    prediction (at least `floor_rps`).
    """
    if params.gamma is not None and season_slots is not None:
        m = season_slots
        first = values[:m]
        second = values[m : 2 * m]
        level = sum(first) / m
        trend = (sum(second) / m - level) / m
        season = [0.0] * m
        for j, value in enumerate(first):
            season[(first_index + j) % m] = value - level
        # The level at the end of the first season, where filtering starts.
        state = _State(level + trend * (m - 1) / 2, trend, season)
        start = m
    else:
        state = _State(values[0], 0.0, [0.0])
        start = 1

    predictions: dict[int, float] = {}
    error_sum = actual_sum = 0.0
    residuals: list[float] = []
    for j in range(start, len(values)):
        index = first_index + j
        value = values[j]
        predicted = predictions.pop(j, None)
        if predicted is not None and j >= score_from:
            if floor_rps is None:
                error = value - predicted
                residuals.append(error)
                actual_sum += 1.0
            else:
                predicted = max(predicted, 0.0)
                error = value - predicted
                residuals.append(error / max(predicted, floor_rps))
                actual_sum += abs(value)
            error_sum += abs(error)
        state.update(params, index, value)
        predictions[j + horizon] = state.predict(params, index, horizon)
    return _Run(state, error_sum, actual_sum, residuals)


class Forecaster:
    """Online forecaster of the request rate: feed it slots, ask it about the future."""

    def __init__(self, settings: ForecasterSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        # Model-scale values (logs when settings.log_scale), newest last.
        self._history: deque[float] = deque(maxlen=settings.history_slots)
        self._recent_rps: deque[float] = deque(maxlen=settings.fit_horizon_slots + 1)
        self._last_index: int | None = None
        self._params: HoltWintersParams | None = None
        self._state: _State | None = None
        self._residuals: deque[float] = deque(maxlen=settings.residual_window_slots)
        self._pending: dict[int, float] = {}
        self._fitted_at_index: int | None = None
        self._fitted_on_slots = 0

    @property
    def params(self) -> HoltWintersParams | None:
        """The smoothing factors in use; None until the first fit."""
        return self._params

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
                self._append(missing, self._one_step_forecast(missing))
        self._append(index, self._to_model(rate_rps))
        self._recent_rps.append(rate_rps)

        if self._should_refit(index):
            self._refit(index)

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
        assert self._last_index is not None
        recent_peak_rps = max(self._recent_rps)
        if self._state is None or self._params is None:
            # Not fitted yet: the last value, bounded by the recent peak.
            return Forecast(self._recent_rps[-1], recent_peak_rps, horizon_s)
        predicted = self._state.predict(self._params, self._last_index, steps)
        mean_rps = self._from_model(predicted)
        if len(self._residuals) < _MIN_RESIDUALS:
            return Forecast(mean_rps, max(mean_rps, recent_peak_rps), horizon_s)
        margin = max(0.0, _quantile(sorted(self._residuals), self.settings.confidence))
        if self.settings.log_scale:
            upper_rps = self._from_model(predicted + margin)
        else:
            upper_rps = mean_rps + margin * max(mean_rps, 1.0 / self.settings.slot_s)
        return Forecast(mean_rps, upper_rps, horizon_s)

    def _to_model(self, rate_rps: float) -> float:
        if self.settings.log_scale:
            return math.log(rate_rps + self.settings.log_offset_rps)
        return rate_rps

    def _from_model(self, value: float) -> float:
        if self.settings.log_scale:
            return max(0.0, math.exp(value) - self.settings.log_offset_rps)
        return max(0.0, value)

    def _residual_floor(self) -> float | None:
        return None if self.settings.log_scale else 1.0 / self.settings.slot_s

    def _append(self, index: int, value: float) -> None:
        self._history.append(value)
        self._last_index = index
        if self._state is None or self._params is None:
            return
        predicted = self._pending.pop(index, None)
        if predicted is not None:
            floor = self._residual_floor()
            if floor is None:
                self._residuals.append(value - predicted)
            else:
                predicted = max(predicted, 0.0)
                self._residuals.append((value - predicted) / max(predicted, floor))
        self._state.update(self._params, index, value)
        horizon = self.settings.fit_horizon_slots
        self._pending[index + horizon] = self._state.predict(
            self._params, index, horizon
        )

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
        seasonal = m is not None and len(values) >= 2 * m
        best = self._search(values, first_index, seasonal)
        run = _run(values, first_index, best, m, horizon, self._residual_floor())
        self._params = best
        self._state = run.state
        self._residuals.clear()
        self._residuals.extend(run.residuals)
        self._pending = {index + horizon: run.state.predict(best, index, horizon)}
        self._fitted_at_index = index
        self._fitted_on_slots = len(values)
        logger.debug(
            "event=forecaster_refit slots=%d alpha=%.2f beta=%.2f gamma=%s error=%.4f",
            len(values),
            best.alpha,
            best.beta,
            best.gamma,
            run.error_sum / max(run.actual_sum, 1e-12),
        )

    def _search(
        self, values: list[float], first_index: int, seasonal: bool
    ) -> HoltWintersParams:
        """Coordinate descent over the factor grids, two passes, least abs error."""
        m = self.settings.season_slots
        horizon = self.settings.fit_horizon_slots
        floor = self._residual_floor()
        score_from = (m if seasonal and m is not None else 1) + horizon
        cache: dict[HoltWintersParams, float] = {}

        def score(params: HoltWintersParams) -> float:
            if params not in cache:
                run = _run(values, first_index, params, m, horizon, floor, score_from)
                cache[params] = run.error_sum / max(run.actual_sum, 1e-12)
            return cache[params]

        phi = self.settings.damping
        candidates = [HoltWintersParams(0.2, 0.02, None, phi)]
        if seasonal:
            candidates.append(HoltWintersParams(0.2, 0.02, 0.15, phi))
        best_overall: HoltWintersParams | None = None
        for best in candidates:
            for _ in range(2):
                best = min(
                    (HoltWintersParams(a, best.beta, best.gamma, phi) for a in _ALPHAS),
                    key=score,
                )
                best = min(
                    (HoltWintersParams(best.alpha, b, best.gamma, phi) for b in _BETAS),
                    key=score,
                )
                if best.gamma is not None:
                    best = min(
                        (
                            HoltWintersParams(best.alpha, best.beta, g, phi)
                            for g in _GAMMAS
                        ),
                        key=score,
                    )
            if best_overall is None or score(best) < score(best_overall):
                best_overall = best
        assert best_overall is not None
        return best_overall


def _quantile(sorted_values: list[float], q: float) -> float:
    """Empirical quantile with linear interpolation between order statistics."""
    position = q * (len(sorted_values) - 1)
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = position - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac
