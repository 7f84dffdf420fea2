"""HTTP hardening that applies to every response, whatever produced it.

- `add_security_headers`: an app-level `before_send` hook (like `add_request_id` in
  api/middleware.py), so 404/405 answered before routing and error envelopes carry the
  headers too; api/http_protocol.py adds `SECURITY_HEADERS` to the 408/431 it writes.
- `cors_config`: CORS from the `cors_origins` setting. Litestar's CORS middleware wraps
  the router and answers a preflight (OPTIONS with an `Origin`) itself, so route guards
  never see it; `is_preflight` tells a guard or middleware the same thing.
- `limit_request_target`: 414 for a path and query longer than `max_url_bytes`, before
  routing.
- `RedactSecrets`: a logging filter that keeps tokens out of the server log.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType

from redpoll.api.errors import DOCS_URL

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from redpoll.settings import Settings

__all__ = (
    "NO_STORE",
    "SECURITY_HEADERS",
    "RedactSecrets",
    "add_security_headers",
    "cors_config",
    "install_log_redaction",
    "is_preflight",
    "limit_request_target",
    "redact",
)

#: Sent on every response. The API serves JSON to scripts and to browser apps on other
#: origins: nothing may be framed, sniffed or run as a page; other origins may read it.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"cross-origin"),
)
NO_STORE = (b"cache-control", b"no-store")

CORS_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-Request-Id")
CORS_EXPOSE_HEADERS = (
    "X-Request-Id",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
)


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Add `SECURITY_HEADERS`, and `Cache-Control: no-store` unless the handler chose a
    cache policy: answers carry tokens' data, which shared caches must not keep."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", []))
    present = {bytes(name).lower() for name, _ in headers}
    headers += [pair for pair in SECURITY_HEADERS if pair[0] not in present]
    if b"cache-control" not in present:
        headers.append(NO_STORE)
    message["headers"] = headers


def is_preflight(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """A CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`.

    Browsers send it without credentials, so it must not need a token. With CORS on,
    Litestar's CORS middleware answers it before routing; this is for code that runs
    earlier or without CORS (a guard may `return` on it)."""
    headers = connection.headers
    return (
        connection.scope.get("method") == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the origins in `cors_origins` (comma-separated, `*` any); None when empty.

    Tokens travel in `Authorization` or the query, never in cookies: no credentials."""
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=list(CORS_METHODS),  # type: ignore[arg-type]
        allow_headers=list(CORS_ALLOW_HEADERS),
        expose_headers=list(CORS_EXPOSE_HEADERS),
        allow_credentials=False,
        max_age=600,
    )


def request_target_bytes(scope: Scope) -> int:
    """Length of the request target as sent: path, and `?query` when there is one.

    uvicorn's `raw_path` is the path alone; httpx's test transport puts the query in it."""
    raw_path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
    query: bytes = scope.get("query_string", b"")
    return len(raw_path) + (1 + len(query) if query else 0)


def limit_request_target(app: ASGIApp, limit: int) -> ASGIApp:
    """Wrap Litestar's ASGI handler: a target longer than `limit` bytes gets 414 before
    routing (an unknown long path is refused the same way). Runs inside the app's
    `before_send` hooks, so the answer carries the request id and security headers."""
    body = json.dumps(
        {"error": f"the request target exceeds {limit} bytes", "documentation": DOCS_URL}
    ).encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or request_target_bytes(scope) <= limit:
            await app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 414,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return guarded


# `token=<value>` in a query string (any case, also `access_token=`), and bearer tokens
_TOKEN_PARAM = re.compile(r"(?i)(token=)[^&\s\"'#]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with token values replaced by `[redacted]`."""
    text = _TOKEN_PARAM.sub(r"\g<1>" + REDACTED, text)
    return _BEARER.sub(r"\g<1>" + REDACTED, text)


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites token values in a record's message and arguments, in place.

    uvicorn's access log prints the full request target (`?token=...`); a token in the
    log is a token for anyone who reads it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {key: _redact_arg(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(value) for value in record.args)
        return True


#: where `redpoll serve` logs: uvicorn's access and error logs, Redpoll's own, Litestar's
LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "redpoll", "litestar", "")


def install_log_redaction() -> None:
    """Add `RedactSecrets` to `LOGGERS` and their handlers.

    A logger's filter sees only records logged to that logger, not its children's
    (`redpoll.api.events`); a handler's filter sees every record it writes. Call once
    logging is configured (uvicorn configures its loggers in `uvicorn.Config`)."""
    redactor = RedactSecrets()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if not any(isinstance(f, RedactSecrets) for f in target.filters):
                target.addFilter(redactor)
