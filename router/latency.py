"""Live latency per cloud: decaying means and tail quantiles of what requests saw.

Every statistic here forgets old observations with a half-life in seconds, using
forward decay: an observation made at time t weighs 2**((t - landmark) / half_life),
so adding one is O(1) and old weight never has to be rewritten until the weights grow
large enough to rescale. Because all stored weights age by the same factor, decay
alone never moves a mean or a quantile; only new observations do, and they count for
more the longer the gap since the old ones.
"""

from __future__ import annotations

import math

# Tail buckets grow by 5 % each, from 50 us to 500 s: a quantile is read as the mean
# of the observations in its bucket, so it is exact for repeated values and within
# 5 % otherwise.
_BUCKET_GROWTH = 1.05
_BUCKET_MIN_S = 50e-6
_BUCKET_MAX_S = 500.0
_NUM_BUCKETS = (
    int(math.ceil(math.log(_BUCKET_MAX_S / _BUCKET_MIN_S) / math.log(_BUCKET_GROWTH)))
    + 1
)
_LOG_GROWTH = math.log(_BUCKET_GROWTH)

# Rescale stored weights once the newest weight passes 2**40 (floats keep ~52 bits).
_MAX_EXPONENT = 40.0 * math.log(2.0)


class ForwardDecay:
    """The weight of an observation made now, relative to a moving landmark."""

    def __init__(self, half_life_s: float, start_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_s = half_life_s
        self._rate_per_s = math.log(2.0) / half_life_s
        self.landmark_s = start_s

    def exponent(self, now_s: float) -> float:
        return (now_s - self.landmark_s) * self._rate_per_s

    def weight(self, now_s: float) -> float:
        return math.exp(self.exponent(now_s))

    def needs_rescale(self, now_s: float) -> bool:
        return self.exponent(now_s) > _MAX_EXPONENT

    def move_landmark(self, now_s: float) -> float:
        """Move the landmark to now; returns the factor that stored weights take."""
        factor = math.exp(-self.exponent(now_s))
        self.landmark_s = now_s
        return factor

    def decayed(self, stored: float, now_s: float) -> float:
        """A stored (landmark-scaled) weight as it counts at `now_s`."""
        return stored * math.exp(-self.exponent(now_s))


class DecayingSketch:
    """Decaying mean and quantiles of a positive quantity (seconds) in log buckets."""

    def __init__(self, half_life_s: float, start_s: float) -> None:
        self._decay = ForwardDecay(half_life_s, start_s)
        self._weights = [0.0] * _NUM_BUCKETS
        self._value_sums = [0.0] * _NUM_BUCKETS
        self._total_weight = 0.0
        self._total_value = 0.0
        self._top_bucket: int | None = None
        self._cached_quantile: tuple[float, float, float] | None = None

    def add(self, value_s: float, now_s: float) -> None:
        if self._decay.needs_rescale(now_s):
            self._rescale(now_s)
        weight = self._decay.weight(now_s)
        index = _bucket_index(value_s)
        self._weights[index] += weight
        self._value_sums[index] += weight * value_s
        self._total_weight += weight
        self._total_value += weight * value_s
        if self._top_bucket is None or index > self._top_bucket:
            self._top_bucket = index
        self._cached_quantile = None

    @property
    def empty(self) -> bool:
        return self._top_bucket is None

    def mean_s(self) -> float | None:
        if self._total_weight <= 0:
            return None
        return self._total_value / self._total_weight

    def quantile_s(
        self, quantile: float, min_tail: float = 0.0, now_s: float | None = None
    ) -> float | None:
        """The value below which `quantile` of the decayed weight lies.

        `min_tail` asks for evidence: the value must have at least that many
        observations' worth of weight (as they count at `now_s`) above it, or the
        `quantile` share if that is more. From few observations a tail quantile is
        simply the largest one, so one slow request among twenty would make a
        p99; with `min_tail` = 2 it takes two. The tail never reaches below the
        median.
        """
        if self._top_bucket is None:
            return None
        tail_weight = (1.0 - quantile) * self._total_weight
        # The plain quantile needs more than its share above it; evidence needs at
        # least its count (less a rounding hair: weights are sums of exponentials).
        at_least = False
        if min_tail > 0 and now_s is not None:
            half = 0.5 * self._total_weight
            # min_tail fresh observations in stored weight, capped at half; in logs,
            # since after hours without one a fresh weight overflows a float.
            if self._decay.exponent(now_s) >= math.log(half / min_tail):
                evidence = half
            else:
                evidence = min_tail * self._decay.weight(now_s)
            if evidence > tail_weight:
                tail_weight, at_least = evidence, True
        cached = self._cached_quantile
        if cached is not None and cached[:2] == (quantile, tail_weight):
            return cached[2]

        # Walk down from the top: for tail quantiles the walk is a few buckets long.
        above = 0.0
        index = self._top_bucket
        weights = self._weights
        while index > 0:
            above += weights[index]
            if above >= tail_weight * (1.0 - 1e-9) if at_least else above > tail_weight:
                break
            index -= 1
        while weights[index] <= 0 and index < self._top_bucket:
            index += 1
        value_s = self._value_sums[index] / weights[index]
        self._cached_quantile = (quantile, tail_weight, value_s)
        return value_s

    def effective_count(self, now_s: float) -> float:
        """How many observations the decayed weight is worth at `now_s`."""
        return self._decay.decayed(self._total_weight, now_s)

    def _rescale(self, now_s: float) -> None:
        factor = self._decay.move_landmark(now_s)
        self._weights = [w * factor for w in self._weights]
        self._value_sums = [v * factor for v in self._value_sums]
        self._total_weight *= factor
        self._total_value *= factor


class DecayingRatio:
    """Decaying sum(numerator) / sum(denominator), e.g. errors per request."""

    def __init__(self, half_life_s: float, start_s: float) -> None:
        self._decay = ForwardDecay(half_life_s, start_s)
        self._numerator = 0.0
        self._denominator = 0.0

    def add(self, numerator: float, denominator: float, now_s: float) -> None:
        if self._decay.needs_rescale(now_s):
            factor = self._decay.move_landmark(now_s)
            self._numerator *= factor
            self._denominator *= factor
        weight = self._decay.weight(now_s)
        self._numerator += weight * numerator
        self._denominator += weight * denominator

    def value(self) -> float | None:
        if self._denominator <= 0:
            return None
        return self._numerator / self._denominator


class CloudLatency:
    """What one cloud's requests have shown: RTT, service time, rate, errors, load.

    `rtt_s` is the network round trip (the time the gateway waited beyond the
    replica's own `service_s`); `total` holds their sum per request, whose quantile
    is the tail the SLO is about (the sum of the two quantiles overstates it).
    Latency is learnt only from successful requests, so a fast refusal never makes a
    broken cloud look quick.
    """

    def __init__(self, half_life_s: float, start_s: float) -> None:
        self.rtt = DecayingSketch(half_life_s, start_s)
        self.service = DecayingSketch(half_life_s, start_s)
        self.total = DecayingSketch(half_life_s, start_s)
        self.errors = DecayingRatio(half_life_s, start_s)
        # Texts served per second of service time: a lower bound of a replica's
        # throughput (it ignores batching), used when no capacity is set.
        self.service_rate = DecayingRatio(half_life_s, start_s)
        self.in_flight_requests = 0
        self.in_flight_texts = 0
        self.last_observation_s: float | None = None

    def on_dispatch(self, num_texts: int) -> None:
        self.in_flight_requests += 1
        self.in_flight_texts += num_texts

    def on_complete(
        self,
        now_s: float,
        *,
        num_texts: int,
        rtt_s: float | None,
        service_s: float,
        ok: bool,
    ) -> None:
        # Clamp: a completion may arrive for a dispatch made before a restart.
        self.in_flight_requests = max(0, self.in_flight_requests - 1)
        self.in_flight_texts = max(0, self.in_flight_texts - num_texts)
        self.last_observation_s = now_s
        self.errors.add(0.0 if ok else 1.0, 1.0, now_s)
        if not ok:
            return
        if rtt_s is not None and rtt_s >= 0:
            self.rtt.add(rtt_s, now_s)
            self.total.add(rtt_s + max(0.0, service_s), now_s)
        if service_s > 0:
            self.service.add(service_s, now_s)
            self.service_rate.add(float(num_texts), service_s, now_s)

    def error_rate(self) -> float:
        rate = self.errors.value()
        return 0.0 if rate is None else rate

    def observed_seq_per_s(self) -> float | None:
        return self.service_rate.value()


def queue_wait_s(
    in_flight_texts: int, running_replicas: int, seq_per_s_per_replica: float
) -> float:
    """Time for the texts already in flight to drain through the running replicas.

    A deterministic-service (M/D/c-like) view: the replicas share one backlog and
    together serve `running_replicas * seq_per_s_per_replica` texts per second, so a
    new request waits behind the whole backlog. With no replica it waits forever.
    """
    if running_replicas <= 0 or seq_per_s_per_replica <= 0:
        return math.inf
    return in_flight_texts / (running_replicas * seq_per_s_per_replica)


def _bucket_index(value_s: float) -> int:
    if value_s <= _BUCKET_MIN_S:
        return 0
    index = int(math.log(value_s / _BUCKET_MIN_S) / _LOG_GROWTH)
    return min(index, _NUM_BUCKETS - 1)
