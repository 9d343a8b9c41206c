"""The rate an autoscaler decision must serve: a bounded upper forecast and peaks.

A forecaster's own upper bound may come from relative residuals, which explode on
noisy or near-zero series. This tracker keeps its own record, in log space, of how
far the realised peak over the horizon rose above the forecast mean peak issued one
horizon earlier: upper = mean x exp(quantile of those log ratios), with the
multiplier capped at `max_multiple`, and the whole bound capped at `cap_multiple`
times the highest slot rate of the last day. It also keeps the highest rate seen in
short windows (e.g. 10 s) over the last few minutes, so bursts shorter than a slot
are sized for even though the forecast works on slot means.

The realised peak is that of the rate, resolved only as finely as the counts allow:
over windows of consecutive slots that hold, on average, at least
`MIN_PEAK_REQUESTS` requests. With a handful of requests a slot, the highest slot
is mostly Poisson noise (five slots of 8 requests peak about 40% above their mean
at a constant rate), and a margin learnt from it would buy capacity for noise that
the queueing model already sizes for. With many requests a slot the windows are
single slots, as before.

Until `_MIN_ERRORS` errors exist the margin is provisional: the largest error so
far, once there are n errors with n / (n + 1) >= confidence (the expected share of
errors below the largest of n), e.g. 19 at 0.95; with fewer, the forecaster's own
upper bound. The forecaster's bound comes from single-slot residuals, which on
slots of a few requests are mostly Poisson noise, so the tracker's own errors,
few as they are, size the margin better as soon as they can speak for the
confidence asked.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

DAY_S = 86_400.0
_MIN_ERRORS = 30
# Requests a window must hold on average for its rate to count as a peak: a count
# of 100 has a Poisson spread of 10% of its mean. At 25 (20%) the live replay of
# benchmarks/autoscale_live.py (a few requests a 2 s slot) learnt a margin of
# about 2x from noise and ran 0.118 replica-hours against 0.091 at 100, at SLO
# attainment 0.997 against 1.000 (one run each; a later full rerun at 100 gave
# 0.994 at 0.092).
MIN_PEAK_REQUESTS = 100.0


class UpperTracker:
    """Log-space horizon errors, the day's slot maximum and short-window peaks."""

    def __init__(
        self,
        slot_s: float,
        horizon_slots: int,
        confidence: float,
        max_multiple: float,
        cap_multiple: float,
        peak_window_s: float,
        peak_memory_s: float,
        warmup_slots: int = 0,
        overload_budget: float | None = None,
        season_slots: int | None = None,
        margin_window_slots: int | None = None,
    ) -> None:
        self.slot_s = slot_s
        self.horizon_slots = max(1, horizon_slots)
        self.confidence = confidence
        self.max_multiple = max_multiple
        self.cap_multiple = cap_multiple
        self.peak_window_s = peak_window_s
        self.peak_memory_s = peak_memory_s
        self.warmup_slots = warmup_slots
        self.overload_budget = overload_budget
        self.season_slots = season_slots
        self.margin_window_slots = margin_window_slots
        self._closed_slots = 0
        # Errors are log((realised + eps) / (issued + eps)): relative where the
        # horizon holds many requests, absolute (in units of eps) where it holds
        # fewer than MIN_PEAK_REQUESTS, whose counts cannot resolve a ratio.
        self.eps_rps = MIN_PEAK_REQUESTS / (self.horizon_slots * slot_s)
        self._slot_rates: deque[float] = deque(maxlen=max(1, int(DAY_S / slot_s)))
        self._issued: deque[float] = deque(maxlen=self.horizon_slots)
        # (slot number, log error), the slot being the last one the error covers.
        self._errors: deque[tuple[int, float]] = deque(maxlen=2 * int(DAY_S / slot_s))
        self._log_margin: float | None = None
        self._peaks: deque[tuple[float, float]] = deque()
        self._last_observe_s: float | None = None
        self._window: deque[tuple[float, int]] = deque()

    def observe(self, now_s: float, num_requests: int) -> None:
        """Requests counted now, since the previous call."""
        last_s, self._last_observe_s = self._last_observe_s, now_s
        if last_s is None:
            return  # the span these requests cover is unknown
        span_s = now_s - last_s
        if span_s > self.peak_window_s:
            # Coarse reports: their mean rate is the finest peak there is.
            self._window.clear()
            self._add_peak(now_s, num_requests / span_s)
            return
        # A sliding window over fine reports, each counting the time since the last.
        self._window.append((now_s, num_requests))
        while self._window[0][0] <= now_s - self.peak_window_s:
            self._window.popleft()
        self._add_peak(now_s, sum(n for _, n in self._window) / self.peak_window_s)

    def close_slot(self, rate_rps: float, mean_peak_rps: float) -> None:
        """A slot closed at `rate_rps`; `mean_peak_rps` is the forecast mean peak
        over the next horizon, issued now."""
        self._slot_rates.append(rate_rps)
        self._closed_slots += 1
        # A seasonal model misses everything in its first season: not its error.
        warm = self._closed_slots > self.warmup_slots + self.horizon_slots
        if warm and len(self._issued) == self.horizon_slots:
            # Issued `horizon_slots` slots ago: it covered the slots seen since.
            issued = self._issued[0]
            covered = list(self._slot_rates)[-self.horizon_slots :]
            realised = self._realised_peak(covered)
            self._errors.append(
                (
                    self._closed_slots,
                    math.log((realised + self.eps_rps) / (issued + self.eps_rps)),
                )
            )
            if len(self._errors) >= _MIN_ERRORS:
                self._log_margin = self._margin()
        self._issued.append(mean_peak_rps)

    def _realised_peak(self, rates: list[float]) -> float:
        """Highest mean rate over windows of consecutive slots that hold, on
        average, at least MIN_PEAK_REQUESTS requests (single slots when they do)."""
        mean_count = sum(rates) / len(rates) * self.slot_s
        width = len(rates)
        if mean_count > 0:
            width = min(width, max(1, math.ceil(MIN_PEAK_REQUESTS / mean_count)))
        return max(
            sum(rates[i : i + width]) / width for i in range(len(rates) - width + 1)
        )

    def _margin(self) -> float:
        """Log margin: a quantile of the errors, or the overload budget's."""
        errors = self._errors_near_this_time()
        if self.overload_budget is None:
            ordered = sorted(errors)
            rank = min(len(ordered) - 1, int(self.confidence * len(ordered)))
            return ordered[rank]
        return overload_margin(errors, self.overload_budget, self.max_multiple)

    def _errors_near_this_time(self) -> list[float]:
        """The errors made at this time of day (within the margin window) on past
        days, if there are enough of them; else every error kept.

        Ramps come at the same hours (a match, office hours), so the errors that
        say how far traffic may outrun the forecast in the next horizon are those
        of the same hours before, not those of the whole day.
        """
        every = [e for _, e in self._errors]
        season, window = self.season_slots, self.margin_window_slots
        if not season or window is None:
            return every
        ahead = self._closed_slots + self.horizon_slots
        near = [
            e
            for slot, e in self._errors
            if min((slot - ahead) % season, (ahead - slot) % season) <= window
        ]
        return near if len(near) >= _MIN_ERRORS else every

    def upper_rps(
        self, now_s: float, mean_rps: float, forecaster_upper_rps: float
    ) -> float:
        """The rate to serve: bounded upper forecast, at least the recent peaks."""
        log_margin = self._log_margin
        if log_margin is None:
            log_margin = self._provisional_margin()
        if log_margin is None:
            upper = forecaster_upper_rps
        else:
            margin = min(max(log_margin, 0.0), math.log(self.max_multiple))
            upper = (mean_rps + self.eps_rps) * math.exp(margin) - self.eps_rps
        if self._slot_rates:
            cap = self.cap_multiple * max(self._slot_rates)
            upper = min(upper, max(cap, mean_rps))
        return max(upper, self.recent_peak_rps(now_s))

    def _provisional_margin(self) -> float | None:
        """The largest error, when there are enough to stand for the confidence."""
        n = len(self._errors)
        if n == 0 or n / (n + 1) < self.confidence:
            return None
        return max(e for _, e in self._errors)

    def recent_peak_rps(self, now_s: float) -> float:
        """Highest short-window rate within the peak memory."""
        while self._peaks and self._peaks[0][0] < now_s - self.peak_memory_s:
            self._peaks.popleft()
        return self._peaks[0][1] if self._peaks else 0.0

    def _add_peak(self, t_s: float, rate_rps: float) -> None:
        # Older peaks no higher than this one can never be the maximum again.
        while self._peaks and self._peaks[-1][1] <= rate_rps:
            self._peaks.pop()
        self._peaks.append((t_s, rate_rps))


def overload_margin(
    log_errors: Iterable[float], budget: float, max_multiple: float
) -> float:
    """Smallest log margin m >= 0 whose expected overload share is within `budget`.

    With capacity sized to forecast x e^m, a horizon whose realised peak came out
    e^e times the forecast has a share 1 - e^(m - e) of its requests above
    capacity when e > m, and none otherwise. With admission control those are the
    requests refused, and the rest are served within the SLO, so the margin is
    the smallest m with mean(max(0, 1 - e^(m - e))) <= budget: a few large errors
    cost their excess only, where a plain quantile pays for their whole size.

    Exactly: with the errors sorted high to low, e_1 >= e_2 >= ..., and m between
    e_(j+1) and e_j, j errors exceed m and the share is (j - e^m S_j) / n with
    S_j = sum of e^-e_i over i <= j. It grows as m falls, so the first j at whose
    lower end the share passes the budget holds the answer m = log((j - b n) / S_j).
    Capped at log(max_multiple).
    """
    high = math.log(max_multiple)
    errors = sorted(log_errors, reverse=True)
    n = len(errors)
    if n == 0:
        return high
    allowed = budget * n
    tail = 0.0
    for j, error in enumerate(errors, start=1):
        if error <= 0:
            break
        tail += math.exp(-error)
        below = max(errors[j], 0.0) if j < n else 0.0
        if j - math.exp(below) * tail > allowed:
            return min(high, math.log((j - allowed) / tail))
    return 0.0
