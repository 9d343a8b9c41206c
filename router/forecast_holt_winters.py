"""Additive Holt-Winters with a damped trend: filtering, scoring and fitting.

Per slot the value y_t is split into a level l, a trend b and a seasonal offset s
for the slot's place in the season (m slots):

    l_t = alpha * (y_t - s_{t-m}) + (1 - alpha) * (l_{t-1} + phi * b_{t-1})
    b_t = beta * (l_t - l_{t-1}) + (1 - beta) * phi * b_{t-1}
    s_t = gamma * (y_t - l_t) + (1 - gamma) * s_{t-m}
    forecast(t + h) = l_t + (phi + ... + phi^h) * b_t + s_{t+h-m}

`fit_params` chooses alpha, beta and gamma by coordinate descent over small grids,
minimising the absolute error at a given horizon. `router.forecast.Forecaster`
drives it online.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0)
_BETAS = (0.0, 0.02, 0.1)
_GAMMAS = (0.05, 0.15, 0.3)


@dataclass(frozen=True)
class HoltWintersParams:
    alpha: float
    beta: float
    gamma: float | None  # None: no seasonal component
    damping: float


class HoltWintersState:
    """Level, trend and seasonal offsets after the last filtered slot."""

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
class FilterRun:
    """The outcome of filtering a history with one parameter set."""

    state: HoltWintersState
    error_sum: float
    error_sq_sum: float
    count: int
    actual_sum: float
    # (position in values, forecast made a horizon before it), when asked for.
    predictions: list[tuple[int, float]]

    @property
    def relative_error(self) -> float:
        return self.error_sum / max(self.actual_sum, 1e-12)

    def relative_standard_error(self, horizon: int) -> float:
        """Standard error of `relative_error`: errors overlap over `horizon` slots."""
        if self.count < 2:
            return math.inf
        mean = self.error_sum / self.count
        variance = max(0.0, self.error_sq_sum / self.count - mean * mean)
        independent = max(1.0, self.count / horizon)
        mean_actual = max(self.actual_sum / self.count, 1e-12)
        return math.sqrt(variance / independent) / mean_actual


def filter_history(
    values: list[float],
    first_index: int,
    params: HoltWintersParams,
    season_slots: int | None,
    horizon: int,
    floor_rps: float | None,
    score_from: int = 0,
    keep_predictions: bool = False,
) -> FilterRun:
    """Filter `values` (slots first_index, first_index + 1, ...) and score the fit.

    Only errors at positions >= `score_from` count, so that models that start
    filtering at different points are scored on the same slots. With `floor_rps`
    None the values are logs and the error is the difference of logs; otherwise they
    are rates, predictions are clipped at 0 and the score is a weighted abs error.
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
        state = HoltWintersState(level + trend * (m - 1) / 2, trend, season)
        start = m
    else:
        state = HoltWintersState(values[0], 0.0, [0.0])
        start = 1

    predictions: dict[int, float] = {}
    kept: list[tuple[int, float]] = []
    error_sum = error_sq_sum = actual_sum = 0.0
    count = 0
    for j in range(start, len(values)):
        index = first_index + j
        value = values[j]
        predicted = predictions.pop(j, None)
        if predicted is not None and j >= score_from:
            if keep_predictions:
                kept.append((j, predicted))
            if floor_rps is None:
                actual_sum += 1.0
            else:
                predicted = max(predicted, 0.0)
                actual_sum += abs(value)
            error = abs(value - predicted)
            error_sum += error
            error_sq_sum += error * error
            count += 1
        state.update(params, index, value)
        predictions[j + horizon] = state.predict(params, index, horizon)
    return FilterRun(state, error_sum, error_sq_sum, count, actual_sum, kept)


def fit_params(
    values: list[float],
    first_index: int,
    season_slots: int | None,
    horizon: int,
    floor_rps: float | None,
    damping: float,
) -> HoltWintersParams:
    """The simplest model within one standard error of the best fit.

    Each form (level; level + trend; and once `values` span two seasons, each with
    a season) gets its factors by coordinate descent over the grids, two passes,
    least abs error at `horizon`, all scored on the same slots. A trend or a season
    is kept only if it lowers the error by more than one standard error of the best
    form's error (the one-standard-error rule): on a short history a few
    overlapping errors cannot tell a trend from noise, and a trend extrapolated
    over the horizon costs more than it saves.
    """
    m = season_slots
    seasonal = m is not None and len(values) >= 2 * m
    score_from = (m if seasonal and m is not None else 1) + horizon
    runs: dict[HoltWintersParams, FilterRun] = {}

    def run(params: HoltWintersParams) -> FilterRun:
        if params not in runs:
            runs[params] = filter_history(
                values, first_index, params, m, horizon, floor_rps, score_from
            )
        return runs[params]

    def score(params: HoltWintersParams) -> float:
        return run(params).relative_error

    phi = damping
    gammas: tuple[float | None, ...] = (None, 0.15) if seasonal else (None,)
    forms: list[tuple[int, HoltWintersParams]] = []
    for gamma in gammas:
        for betas in ((0.0,), _BETAS[1:]):
            best = HoltWintersParams(0.2, betas[0], gamma, phi)
            for _ in range(2):
                best = min(
                    (HoltWintersParams(a, best.beta, best.gamma, phi) for a in _ALPHAS),
                    key=score,
                )
                best = min(
                    (HoltWintersParams(best.alpha, b, best.gamma, phi) for b in betas),
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
            components = (best.beta > 0) + (best.gamma is not None)
            forms.append((components, best))

    best_form = min((p for _, p in forms), key=score)
    limit = score(best_form) + run(best_form).relative_standard_error(horizon)
    within = [(c, score(p), p) for c, p in forms if score(p) <= limit]
    return min(within, key=lambda item: item[:2])[2]
