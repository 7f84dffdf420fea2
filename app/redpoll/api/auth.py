"""Who may call what: every route but `/v0/health` and `/v0/ready` needs a token.

A token comes as `Authorization: Bearer <token>` or `?token=<token>`: a static token
(`tokens/table.py`, hashed), a token from settings, the local CLI's, or a JWT
(`tokens/jwt.py`). Each route's guard names the scope it needs (`tokens/scopes.py`) and
how to find the resource (the endpoint in the path, the data source in `?name=`). Every
refusal is 403, as Tinybird answers. Before the token is checked the client address is
counted, after it the token (`api/rate_limits.py`); both can answer 429.

With the `auth` setting off every request is the `OPEN` principal (ADMIN): for local
demos only, logged loudly at start (app.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from redpoll.api.rate_limits import RATE_LIMIT_KEY
from redpoll.api.security import is_preflight
from redpoll.api.state import app_state
from redpoll.errors import ParameterError, RedpollError, Unauthorized
from redpoll.tokens.scopes import (
    ADMIN,
    DATASOURCES_APPEND,
    PIPES_READ,
    Principal,
    Scope,
)

__all__ = (
    "OPEN",
    "admin_guard",
    "append_guard",
    "authenticate",
    "granted_scope",
    "optional_principal",
    "pipes_guard",
    "read_guard",
    "request_token",
)

Connection = ASGIConnection[Any, Any, Any, Any]
Guard = Callable[[Connection, BaseRouteHandler], Awaitable[None]]

#: everyone, when the `auth` setting is off
OPEN = Principal("anonymous", (Scope(ADMIN),), kind="open")
_PRINCIPAL_KEY = "principal"
_GRANT_KEY = "granted_scope"
_ADDRESS_COUNTED_KEY = "address_counted"


def request_token(connection: Connection) -> str:
    """The token a caller sent: `Authorization: Bearer` header or `?token=`."""
    header = connection.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return connection.query_params.get("token", "")


def _client_address(connection: Connection) -> str:
    client = connection.scope.get("client")
    return str(client[0]) if client else "unknown"


def authenticate(connection: Connection) -> Principal:
    """The request's principal (once per request), counting it against rate limits.
    Blocking when the token makes the registry re-read its table: guards call
    `_authenticate_on_loop` instead."""
    principal = _authenticate(connection, read_table=True)
    assert principal is not None  # read_table: the registry decides or raises
    return principal


async def _authenticate_on_loop(connection: Connection) -> Principal:
    """`authenticate` without blocking the event loop: on it when memory can tell (every
    known token, JWTs, refusals), in a worker thread only for a table re-read."""
    principal = _authenticate(connection, read_table=False)
    if principal is None:
        principal = await anyio.to_thread.run_sync(authenticate, connection)
    return principal


def _authenticate(connection: Connection, *, read_table: bool) -> Principal | None:
    """`authenticate`; without `read_table`, None where the registry would re-read its
    table (the client address is counted once either way)."""
    state: dict[str, Any] = connection.scope.setdefault("state", {})
    cached = state.get(_PRINCIPAL_KEY)
    if isinstance(cached, Principal):
        return cached
    wiring = app_state(connection.app.state)
    if not wiring.settings.auth:
        state[_PRINCIPAL_KEY] = OPEN
        return OPEN
    if not state.get(_ADDRESS_COUNTED_KEY):
        state[_ADDRESS_COUNTED_KEY] = True
        window = wiring.rate_limits.hit_address(_client_address(connection))
        if window is not None:
            state[RATE_LIMIT_KEY] = window
    token = request_token(connection)
    if read_table:
        principal: Principal | None = wiring.tokens.authenticate(token)
    else:
        principal = wiring.tokens.from_memory(token)
    if principal is None:
        return None
    window = wiring.rate_limits.hit_principal(principal)
    if window is not None:
        state[RATE_LIMIT_KEY] = window
    state[_PRINCIPAL_KEY] = principal
    return principal


def optional_principal(connection: Connection) -> Principal | None:
    """The principal if the request carries a valid token, else None (never raises)."""
    if not request_token(connection) and app_state(connection.app.state).settings.auth:
        return None
    try:
        return authenticate(connection)
    except RedpollError:
        return None


def granted_scope(connection: Connection) -> Scope | None:
    """The scope the route's guard matched (its `fixed_params` apply to the call)."""
    grant = connection.scope.get("state", {}).get(_GRANT_KEY)
    return grant if isinstance(grant, Scope) else None


def require(scope_type: str, resource: Callable[[Connection], str | None] | None = None) -> Guard:
    """A guard: the caller's token must hold `scope_type` on the route's resource (or on
    some resource, when `resource` is None: the route filters what it shows)."""

    async def guard(connection: Connection, _: BaseRouteHandler) -> None:
        # async: Litestar runs a sync guard in a worker thread, a hop that cost a third
        # of a one-event POST /v0/events (README, ingest figures)
        if is_preflight(connection):
            return  # CORS preflights carry no token (api/security.py's CORS answers them)
        principal = await _authenticate_on_loop(connection)
        wanted = resource(connection) if resource is not None else None
        grant = principal.grant(scope_type, wanted)
        if grant is None:
            target = f"{scope_type}:{wanted}" if wanted else scope_type
            raise Unauthorized(f"this token lacks the scope {target}")
        connection.scope["state"][_GRANT_KEY] = grant

    guard.__name__ = f"require_{scope_type.lower().replace(':', '_')}"
    return guard


def _pipe_name(connection: Connection) -> str | None:
    pipe = str(connection.path_params.get("pipe", ""))
    return pipe.rpartition(".")[0] or pipe


def _datasource_name(connection: Connection) -> str | None:
    names = connection.query_params.getall("name", [])
    if len(names) > 1:  # the guard and the handler must see the same data source
        raise ParameterError("'name' (the data source) may be given only once")
    return names[0] if names else ""


admin_guard = require(ADMIN)
#: list and describe endpoints: any PIPES:READ scope (the answer shows only granted ones)
pipes_guard = require(PIPES_READ)
read_guard = require(PIPES_READ, _pipe_name)
append_guard = require(DATASOURCES_APPEND, _datasource_name)
