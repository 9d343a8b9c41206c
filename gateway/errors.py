"""Every error the project raises on purpose, and how each reaches a client.

    GatewayError                      500 / INTERNAL
    ├── InvalidInput                  400 / INVALID_ARGUMENT
    ├── ModelNotFound                 404 / NOT_FOUND
    ├── VersionNotFound               404 / NOT_FOUND (a version not served)
    ├── Unauthenticated               401 / UNAUTHENTICATED (WWW-Authenticate)
    ├── PayloadTooLarge               413 / RESOURCE_EXHAUSTED
    ├── RateLimited                   429 / RESOURCE_EXHAUSTED (Retry-After)
    ├── Overloaded                    503 / UNAVAILABLE (Retry-After)
    ├── NoCloudAvailable              503 / UNAVAILABLE (Retry-After)
    ├── DeadlineExceeded              504 / DEADLINE_EXCEEDED
    ├── CheckpointError               500 / INTERNAL (a model that will not load)
    ├── DatasetError                  (fine-tuning input; never reaches a client)
    └── ConfigError                   (deployment config; never reaches a client)

This module is pure: the gRPC code is the name of a `grpc.StatusCode` member, turned
into the enum by the gRPC adapter, so decision code can raise these without gRPC.
Messages name the field, the value and the limit; they never carry stack traces.
"""

from __future__ import annotations

import math


class GatewayError(Exception):
    """Base class; `http_status` and `grpc_code` say how a client sees it."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    retry_after_s: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def http_headers(self) -> dict[str, str]:
        """Headers an HTTP answer of this error carries."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class InvalidInput(GatewayError):
    """The request is malformed: bad JSON, datatype, shape, empty or non-UTF-8 text."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(GatewayError):
    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, model: str, known: list[str] | None = None) -> None:
        hint = f"; known models: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown model {model!r}{hint}")
        self.model = model


class VersionNotFound(GatewayError):
    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, model: str, version: str, known: list[str]) -> None:
        super().__init__(
            f"model {model!r} has no version {version!r}; versions: {', '.join(known)}"
        )


class Unauthenticated(GatewayError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"

    def http_headers(self) -> dict[str, str]:
        # RFC 9110: a 401 names the scheme it wants.
        return {"WWW-Authenticate": "Bearer"}


class PayloadTooLarge(GatewayError):
    """Too many texts, too long a text, or too large a body."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class _RetryLater(GatewayError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(_RetryLater):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class Overloaded(_RetryLater):
    """Admitting the request would queue it past the SLO: refuse it fast instead."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class NoCloudAvailable(_RetryLater):
    """Every cloud that the request may use is down or excluded."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(GatewayError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class CheckpointError(GatewayError):
    """A model directory is missing, incomplete or not a sequence classifier."""


class DatasetError(GatewayError):
    """A fine-tuning CSV is empty, lacks a column or has fewer than two classes."""


class ConfigError(GatewayError):
    """The deployment config is invalid; the message names the field and the rule."""
