"""A circuit breaker per cloud: stop sending to a cloud that keeps failing.

    closed --(N consecutive failures, or error rate over the window)--> open
    open --(cool-down elapsed)--> half_open
    half_open --(a trial succeeds)--> closed
    half_open --(a trial fails)--> open

While half-open only a few trial requests may be in flight at once. Time is read
from the clock passed in, so state changes happen when the breaker is asked.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 20
    cooldown_s: float = 10.0
    half_open_trials: int = 1


class CircuitBreaker:
    """One cloud's breaker; `allows(now_s)` says whether a request may go there."""

    def __init__(self, cloud: str, settings: BreakerSettings) -> None:
        self.cloud = cloud
        self._settings = settings
        self._state = CLOSED
        self._opened_at_s: float | None = None
        self._consecutive_failures = 0
        self._trials_in_flight = 0
        # (time_s, ok) of recent outcomes; bounded so a flood cannot grow it.
        self._window: deque[tuple[float, bool]] = deque(maxlen=4096)
        self._window_failures = 0

    def state(self, now_s: float) -> str:
        if (
            self._state == OPEN
            and self._opened_at_s is not None
            and now_s - self._opened_at_s >= self._settings.cooldown_s
        ):
            self._state = HALF_OPEN
            self._trials_in_flight = 0
            logger.info("event=breaker_half_open cloud=%s", self.cloud)
        return self._state

    def allows(self, now_s: float) -> bool:
        state = self.state(now_s)
        if state == CLOSED:
            return True
        if state == HALF_OPEN:
            return self._trials_in_flight < self._settings.half_open_trials
        return False

    def on_dispatch(self, now_s: float) -> None:
        if self.state(now_s) == HALF_OPEN:
            self._trials_in_flight += 1

    def on_complete(self, now_s: float, ok: bool) -> None:
        state = self.state(now_s)
        if state == HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            if ok:
                self._close()
            else:
                self._open(now_s, "half_open_trial_failed")
            return
        if state == OPEN:
            # A late answer from before the breaker opened changes nothing.
            return

        self._record(now_s, ok)
        if self._consecutive_failures >= self._settings.consecutive_failures:
            self._open(now_s, "consecutive_failures")
        elif (
            len(self._window) >= self._settings.min_requests
            and self._window_failures / len(self._window) >= self._settings.error_rate
        ):
            self._open(now_s, "error_rate")

    def _record(self, now_s: float, ok: bool) -> None:
        self._consecutive_failures = 0 if ok else self._consecutive_failures + 1
        if len(self._window) == self._window.maxlen and not self._window[0][1]:
            self._window_failures -= 1
        self._window.append((now_s, ok))
        if not ok:
            self._window_failures += 1
        horizon_s = now_s - self._settings.window_s
        while self._window and self._window[0][0] < horizon_s:
            _, old_ok = self._window.popleft()
            if not old_ok:
                self._window_failures -= 1

    def _open(self, now_s: float, why: str) -> None:
        self._state = OPEN
        self._opened_at_s = now_s
        self._trials_in_flight = 0
        logger.warning(
            "event=breaker_open cloud=%s why=%s cooldown_s=%s",
            self.cloud,
            why,
            self._settings.cooldown_s,
        )

    def _close(self) -> None:
        self._state = CLOSED
        self._opened_at_s = None
        self._consecutive_failures = 0
        self._window.clear()
        self._window_failures = 0
        logger.info("event=breaker_closed cloud=%s", self.cloud)
