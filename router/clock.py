"""Clocks for the decision code: time is passed in, never read from the wall.

Every policy takes a `Clock` (a callable returning seconds). The live gateway passes
`time.monotonic`; the simulator and the tests pass a `ManualClock` they advance.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

monotonic_clock: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told; the simulator's time and the tests'."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def __call__(self) -> float:
        return self._now_s

    def advance(self, delta_s: float) -> None:
        if delta_s < 0:
            raise ValueError(f"delta_s must be >= 0, got {delta_s}")
        self._now_s += delta_s

    def set(self, now_s: float) -> None:
        if now_s < self._now_s:
            raise ValueError(f"time cannot go back: now_s={now_s} < {self._now_s}")
        self._now_s = now_s
