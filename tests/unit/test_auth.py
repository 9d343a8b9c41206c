"""Bearer tokens and the per-token token bucket, on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import Authenticator, TokenBucket, load_tokens
from gateway.errors import ConfigError, RateLimited, Unauthenticated
from router.clock import ManualClock


def test_auth_off_lets_everything_through() -> None:
    assert Authenticator([]).check(None) is None


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic abc", "bearer wrong", "tok-1"],
)
def test_missing_malformed_or_unknown_tokens_are_unauthenticated(
    header: str | None,
) -> None:
    auth = Authenticator(["tok-1", "tok-2"])

    with pytest.raises(Unauthenticated) as info:
        auth.check(header)

    assert info.value.http_status == 401
    assert "tok-" not in info.value.message


def test_known_token_returns_its_index_whatever_the_scheme_case() -> None:
    auth = Authenticator(["tok-1", "tok-2"])

    assert auth.check("Bearer tok-2") == 1
    assert auth.check("bearer tok-1") == 0


def test_rate_limit_refuses_past_the_burst_and_refills_over_time() -> None:
    clock = ManualClock()
    auth = Authenticator(["a", "b"], requests_per_s=2.0, burst_requests=3, clock=clock)

    for _ in range(3):
        auth.check("Bearer a")
    with pytest.raises(RateLimited) as info:
        auth.check("Bearer a")
    # Empty bucket at 2 requests/s: one request is free again in 0.5 s.
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert info.value.http_status == 429
    # Each token has its own bucket.
    assert auth.check("Bearer b") == 1

    clock.advance(0.5)
    assert auth.check("Bearer a") == 0


def test_token_bucket_never_holds_more_than_its_burst() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=10.0, burst=2, clock=clock)

    clock.advance(100.0)
    taken = [bucket.try_take() for _ in range(3)]

    # 100 s at 10/s would be 1000 requests, but the bucket holds 2.
    assert taken[:2] == [None, None]
    assert taken[2] == pytest.approx(0.1)


def test_tokens_come_from_a_file_and_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# ops team\nfile-token\n\n")
    monkeypatch.setenv("BERTGW_TEST_TOKENS", "env-1, env-2")

    tokens = load_tokens(path, "BERTGW_TEST_TOKENS")

    assert tokens == ["file-token", "env-1", "env-2"]


def test_auth_on_without_any_token_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BERTGW_TEST_TOKENS", raising=False)

    with pytest.raises(ConfigError, match="no token was found"):
        load_tokens(None, "BERTGW_TEST_TOKENS")
