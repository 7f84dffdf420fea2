"""The one JSON error envelope and the handlers that produce it (ADR 0003).

Body: `{"error": "<message>", "documentation": "<url>"}`, as Tinybird's API answers, with
the status on the exception class. ClickHouse errors add the `X-DB-Exception-Code`
header. No handler ever puts a stack trace in a body; unexpected exceptions are logged
with the request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from redpoll.api.middleware import request_id
from redpoll.clickhouse.client import DatabaseError
from redpoll.clickhouse.errors import DbErrorKind, classify, error_code, public_message
from redpoll.errors import QueryError, QueryTimeout, RedpollError, TooBusy

__all__ = ("DOCS_URL", "error_response", "exception_handlers")

DOCS_URL = "https://github.com/redpoll-dev/redpoll/blob/main/docs/api.md"
log = logging.getLogger("redpoll.api")
# a path followed by its query string ("POST /v0/events?name=e&token=..." in Litestar's
# validation errors): a query may carry `token=`, so bodies name the path alone
_QUERY_AFTER_PATH = re.compile(r"(/[^\s?]*)\?[^\s]*")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content={"error": message, "documentation": DOCS_URL},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers or {},
    )


def translate_database_error(exc: DatabaseError, request_id: str = "") -> RedpollError:
    """Map a ClickHouse error (classified in `clickhouse/errors.py`) to what a caller reads.

    Caller mistakes and limit hits are 400, timeouts 408, overload 429; anything else is
    ours: 500 with only the request id, the details go to the log.
    """
    kind = classify(exc)
    code = error_code(exc)
    err: RedpollError
    if kind is DbErrorKind.TIMEOUT:
        err = QueryTimeout("the query exceeded its time limit")
    elif kind is DbErrorKind.BUSY:
        err = TooBusy("too many queries at once; retry shortly")
    elif kind in (DbErrorKind.CALLER, DbErrorKind.LIMIT):
        err = QueryError(public_message(exc))
    else:
        log.error("ClickHouse error %s (request %s): %s", code, request_id, exc)
        # the HTTP body says only "internal error" (`_redpoll_error`); the CLI prints this
        err = RedpollError(f"ClickHouse error {code}: {public_message(exc)}", status=500)
    err.db_code = code  # type: ignore[attr-defined]
    return err


def _redpoll_error(request: Request[Any, Any, Any], exc: RedpollError) -> Response[Any]:
    code = getattr(exc, "db_code", None)
    headers = {"X-DB-Exception-Code": str(code)} if code else {}
    headers.update(getattr(exc, "headers", None) or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    message = exc.message
    # our fault: the details (paths, SQL) go to the log only, unless the error says it
    # is meant for the caller (e.g. a full ingest backlog: ingest/backlog.py)
    if exc.status >= 500 and not exc.public:
        rid = request_id(request.scope)
        log.error("%s on %s %s (request %s)", message, request.method, request.url.path, rid)
        message = f"internal error (request {rid}); see the server log"
    return error_response(exc.status, message, headers)


def _database_error(request: Request[Any, Any, Any], exc: DatabaseError) -> Response[Any]:
    return _redpoll_error(request, translate_database_error(exc, request_id(request.scope)))


def without_query(message: str) -> str:
    """`message` with every `path?query` cut to `path`: error bodies never echo a query."""
    return _QUERY_AFTER_PATH.sub(r"\1", message)


def _http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    message = without_query(exc.detail)
    extra = exc.extra if isinstance(exc.extra, list | dict) and exc.extra else None
    if extra:
        message = f"{message}: {without_query(str(extra))}"
    return error_response(exc.status_code, message, exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error(
        "unexpected error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id(request.scope),
        exc_info=exc,
    )
    return error_response(
        500, f"internal server error (request {request_id(request.scope)}); see the server log"
    )


exception_handlers: dict[Any, Any] = {
    RedpollError: _redpoll_error,
    DatabaseError: _database_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
