"""Redpoll's error classes. The HTTP status lives on the class (ADR 0003).

Every error a caller can see derives from `RedpollError`; one Litestar handler turns any
of them into the JSON envelope `{"error": ..., "documentation": ...}`. CLI commands print
`error: <message>` and exit with status 1.
"""

from __future__ import annotations

__all__ = (
    "ConfigError",
    "EndpointNotFound",
    "MigrationError",
    "NotFound",
    "ParameterError",
    "PayloadTooLarge",
    "QueryError",
    "QueryTimeout",
    "RedpollError",
    "StoreBusy",
    "TooBusy",
    "Unauthorized",
)


class RedpollError(Exception):
    """Base of all errors meant for a user; `status` is the HTTP status to answer with."""

    status: int = 500
    #: seconds, sent as `Retry-After` (429/503 answers)
    retry_after: int | None = None
    #: a 5xx whose message is for the caller (else the body says only "internal error")
    public: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class ConfigError(RedpollError):
    """A setting, a project file or an argument is invalid."""

    status = 400


class ParameterError(RedpollError):
    """A request parameter is missing, of the wrong type or out of range."""

    status = 400


class QueryError(RedpollError):
    """ClickHouse refused a query for a reason the caller can fix."""

    status = 400


class QueryTimeout(RedpollError):
    """The query ran past its `max_execution_time`."""

    status = 408


class PayloadTooLarge(RedpollError):
    """A body, a `q` or a decompressed body is larger than its configured limit."""

    status = 413


class TooBusy(RedpollError):
    """Too many heavy queries at once: retry after `retry_after` seconds."""

    status = 429
    retry_after = 1


class Unauthorized(RedpollError):
    status = 403


class NotFound(RedpollError):
    status = 404


class EndpointNotFound(NotFound):
    """No endpoint (pipe) or data source with that name."""


class MigrationError(RedpollError):
    """A migration file is modified, malformed or failed to apply."""

    status = 409


class StoreBusy(RedpollError):
    """The embedded data directory is held by another process (see `clickhouse/lock.py`)."""

    status = 409
