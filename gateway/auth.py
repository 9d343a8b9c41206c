"""Bearer-token access control and a per-token request-rate limit, for both transports.

Pure apart from reading the token file or variable once at start-up: the transports
pass the `authorization` header (HTTP) or metadata value (gRPC) and a clock.
Tokens are compared with `hmac.compare_digest` against every known token, so the
time taken does not tell which token nearly matched. Tokens are never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import ConfigError, RateLimited, Unauthenticated
from router.clock import Clock, monotonic_clock

logger = logging.getLogger(__name__)


class TokenBucket:
    """Allows `rate_per_s` requests per second on average, bursts of `burst`."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(
                f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}"
            )
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last_s = clock()

    def try_take(self) -> float | None:
        """Takes one request's worth; returns None, or the seconds until one is free."""
        now_s = self._clock()
        elapsed_s = max(0.0, now_s - self._last_s)
        self._tokens = min(self._burst, self._tokens + elapsed_s * self._rate_per_s)
        self._last_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self._rate_per_s


class Authenticator:
    """Checks `authorization: Bearer <token>` and each token's rate limit."""

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        requests_per_s: float | None = None,
        burst_requests: int | None = None,
        clock: Clock = monotonic_clock,
    ) -> None:
        self._tokens = [t.encode("utf-8") for t in tokens]
        self._buckets: list[TokenBucket] | None = None
        if requests_per_s is not None:
            burst = burst_requests or max(1, int(requests_per_s))
            self._buckets = [
                TokenBucket(requests_per_s, burst, clock) for _ in self._tokens
            ]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None) -> int | None:
        """Returns the matching token's index (None when auth is off).

        Raises:
            Unauthenticated: no header, not a bearer token, or an unknown token.
            RateLimited: the token spent its request budget.
        """
        if not self._tokens:
            return None
        presented = _bearer(authorization)
        if presented is None:
            raise Unauthenticated("missing or malformed bearer token")
        candidate = presented.encode("utf-8")
        match: int | None = None
        for i, token in enumerate(self._tokens):
            if hmac.compare_digest(candidate, token) and match is None:
                match = i
        if match is None:
            raise Unauthenticated("invalid bearer token")
        if self._buckets is not None:
            wait_s = self._buckets[match].try_take()
            if wait_s is not None:
                raise RateLimited(
                    f"request rate limit exceeded for this token; retry in "
                    f"{wait_s:.2f} s",
                    retry_after_s=wait_s,
                )
        return match


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def load_tokens(tokens_file: Path | None, tokens_env: str | None) -> list[str]:
    """Reads tokens: one per line in the file ('#' starts a comment), and/or
    comma-separated in the named environment variable."""
    tokens: list[str] = []
    if tokens_file is not None:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"config field auth.tokens_file: cannot read {tokens_file}: "
                f"{exc.strerror}"
            ) from None
        tokens.extend(
            ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")
        )
    if tokens_env is not None:
        value = os.environ.get(tokens_env, "")
        tokens.extend(t.strip() for t in value.split(",") if t.strip())
    if (tokens_file is not None or tokens_env is not None) and not tokens:
        raise ConfigError(
            "config field auth: auth is on but no token was found in "
            f"tokens_file={tokens_file} or tokens_env={tokens_env}"
        )
    logger.info("event=auth_tokens_loaded count=%d", len(tokens))
    return tokens
