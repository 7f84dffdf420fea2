"""The one JSON error envelope and the handlers that produce it (ADR 0003).

Body: `{"error": "<message>", "documentation": "<url>"}`, as Tinybird's API answers, with
the status on the exception class. ClickHouse errors add the `X-DB-Exception-Code`
header. No handler ever puts a stack trace in a body; unexpected exceptions are logged
with the request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from redpoll.api.middleware import request_id
from redpoll.clickhouse.client import DatabaseError
from redpoll.errors import QueryError, QueryTimeout, RedpollError

__all__ = ("DOCS_URL", "error_response", "exception_handlers")

DOCS_URL = "https://github.com/redpoll-dev/redpoll/blob/main/docs/api.md"
log = logging.getLogger("redpoll.api")

# ClickHouse error codes that mean "the query or its input is wrong" (caller can fix).
_CALLER_CODES = {
    6,
    27,
    36,
    41,
    43,
    46,
    47,
    53,
    60,
    62,
    69,
    70,
    72,
    80,
    81,
    117,
    130,
    131,
    164,
    179,
    184,
    190,
    215,
    241,
    307,
    352,
    386,
    396,
    456,
    497,
}
_TIMEOUT_CODES = {159, 394}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content={"error": message, "documentation": DOCS_URL},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers or {},
    )


def translate_database_error(exc: DatabaseError) -> RedpollError:
    """Map a ClickHouse error to 400 (caller's fault), 408 (timeout) or 500 (ours)."""
    code = int(getattr(exc, "code", 0) or 0)
    message = _scrub(str(exc))
    if code in _TIMEOUT_CODES:
        err: RedpollError = QueryTimeout(f"query timed out: {message}")
    elif code in _CALLER_CODES:
        err = QueryError(message)
    else:
        err = RedpollError(f"ClickHouse error: {message}", status=500)
    err.db_code = code  # type: ignore[attr-defined]
    return err


def _scrub(message: str) -> str:
    """First line only, without the server-version trailer."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return first.split(" (version ")[0]


def _redpoll_error(_request: Request[Any, Any, Any], exc: RedpollError) -> Response[Any]:
    code = getattr(exc, "db_code", None)
    headers = {"X-DB-Exception-Code": str(code)} if code else None
    return error_response(exc.status, exc.message, headers)


def _database_error(request: Request[Any, Any, Any], exc: DatabaseError) -> Response[Any]:
    return _redpoll_error(request, translate_database_error(exc))


def _http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    message = exc.detail
    extra = exc.extra if isinstance(exc.extra, list | dict) and exc.extra else None
    if extra:
        message = f"{message}: {extra}"
    return error_response(exc.status_code, message, exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error(
        "unexpected error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id(request.scope),
        exc_info=exc,
    )
    return error_response(500, "internal server error; see the server log")


exception_handlers: dict[Any, Any] = {
    RedpollError: _redpoll_error,
    DatabaseError: _database_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
