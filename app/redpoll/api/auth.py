"""Tokens, Tinybird style: `Authorization: Bearer <token>` or `?token=<token>`.

Three roles: the admin token (always required for /redpoll/v1/admin, random per start
unless set), `read_token` for /v0/pipes and `append_token` for /v0/events. When a
read/append token is not configured, that surface is open (the default for local use);
the admin token is accepted wherever a read or append token is.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from redpoll.api.state import app_state
from redpoll.errors import Unauthorized

__all__ = ("admin_guard", "append_guard", "read_guard", "request_token")

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def request_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token a caller sent: `Authorization: Bearer` header or `?token=`."""
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return connection.query_params.get("token", "")


def _matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not _matches(request_token(connection), app_state(connection.app.state).admin_token):
        raise Unauthorized("admin token required (Authorization: Bearer <token>)")


def _surface_guard(setting: str) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        wiring = app_state(connection.app.state)
        expected = getattr(wiring.settings, setting)
        if not expected:
            return
        given = request_token(connection)
        if not (_matches(given, expected) or _matches(given, wiring.admin_token)):
            raise Unauthorized("Invalid token: use Authorization: Bearer <token> or ?token=")

    guard.__name__ = f"{setting}_guard"
    return guard


read_guard = _surface_guard("read_token")
append_guard = _surface_guard("append_token")
