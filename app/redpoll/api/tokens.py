"""Tinybird's Tokens API (ADMIN scope) and the lifespan that loads the tokens.

    POST   /v0/tokens?name=<n>&scope=<scope>[&scope=...][&rps=<n>]  -> the value, once
    GET    /v0/tokens                                               -> names and scopes
    GET    /v0/tokens/<name>
    POST   /v0/tokens/<name>/refresh                                -> a new value, once
    DELETE /v0/tokens/<name>                                        -> 204

Unlike Tinybird, values are stored hashed, so listing never shows them. Changes apply on
this server's next request (`tokens/registry.py`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from redpoll.api.auth import admin_guard
from redpoll.api.state import app_state
from redpoll.errors import NotFound, ParameterError
from redpoll.settings import Settings
from redpoll.tokens.jwt import check_signing_key
from redpoll.tokens.registry import TokenRegistry
from redpoll.tokens.scopes import (
    ADMIN,
    DATASOURCES_APPEND,
    PIPES_READ,
    Principal,
    Scope,
    parse_scope,
)
from redpoll.tokens.table import TokenRecord, TokenTable

__all__ = ("FIRST_ADMIN_NAME", "TokensController", "settings_principals", "tokens_lifespan")

log = logging.getLogger("redpoll.api.tokens")
#: the token the first start creates when no ADMIN token exists
FIRST_ADMIN_NAME = "admin"


def settings_principals(settings: Settings) -> list[tuple[str, Principal]]:
    """Tokens given in settings, for automation: `(value, principal)`; hashed on load."""
    given = (
        (settings.admin_token, "admin_token", ADMIN),
        (settings.read_token, "read_token", PIPES_READ),
        (settings.append_token, "append_token", DATASOURCES_APPEND),
    )
    return [
        (value, Principal(f"settings:{name}", (Scope(scope),), kind="settings"))
        for value, name, scope in given
        if value
    ]


def _describe_fixed(principal: Principal) -> dict[str, Any]:
    return {
        "name": principal.name,
        "scopes": [{"type": s.type, "resource": s.resource} for s in principal.scopes],
        "scope": [str(s) for s in principal.scopes],
        "limits": {},
        "created_at": None,
        "origin": "settings",
    }


def _created(name: str, value: str, record: TokenRecord | None) -> dict[str, Any]:
    body = record.describe() if record else {"name": name}
    body["token"] = value
    return body


class TokensController(Controller):
    path = "/v0/tokens"
    guards = [admin_guard]

    @get("/", sync_to_thread=False)
    def list_tokens(self, state: State) -> dict[str, Any]:
        """Every token's name, scopes and limits; never a value."""
        registry = app_state(state).tokens
        fixed = [
            _describe_fixed(p)
            for p in {p.name: p for _, p in settings_principals(app_state(state).settings)}.values()
        ]
        return {"tokens": fixed + [r.describe() for r in registry.records()]}

    @get("/{name:str}", sync_to_thread=False)
    def get_token(self, state: State, name: FromPath[str]) -> dict[str, Any]:
        for record in app_state(state).tokens.records():
            if record.name == name:
                return record.describe()
        raise NotFound(f"no token named '{name[:128]}'")

    @post("/", sync_to_thread=True, status_code=200)
    def create(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        """Create a static token; its value is in this answer only."""
        params = request.query_params
        name = params.get("name") or ""
        if not name:
            raise ParameterError("`name` is required")
        scopes = [parse_scope(s) for s in params.getall("scope", [])]
        if not scopes:
            raise ParameterError("at least one `scope` is required, e.g. scope=PIPES:READ")
        rps = _positive_int(params.get("rps"), "rps")
        registry = app_state(state).tokens
        value = registry.create(name, scopes, rps)
        record = next((r for r in registry.records() if r.name == name), None)
        return _created(name, value, record)

    @post("/{name:str}/refresh", sync_to_thread=True, status_code=200)
    def refresh(self, state: State, name: FromPath[str]) -> dict[str, Any]:
        """A new value for the token; the old one fails from the next request."""
        registry = app_state(state).tokens
        value = registry.refresh(name)
        record = next((r for r in registry.records() if r.name == name), None)
        return _created(name, value, record)

    @delete("/{name:str}", sync_to_thread=True, status_code=204)
    def revoke(self, state: State, name: FromPath[str]) -> Response[None]:
        app_state(state).tokens.revoke(name)
        return Response(None, status_code=204)


def _positive_int(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or not 0 < int(text) < 10**9:
        raise ParameterError(f"`{name}` must be a positive integer")
    return int(text)


@contextlib.asynccontextmanager
async def tokens_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Load the tokens (needs the store); on a first start with auth on and no ADMIN
    token anywhere, create one and print it once."""
    wiring = app_state(app.state)
    settings = wiring.settings
    local = Principal("local-cli", (Scope(ADMIN),), kind="local")
    registry = TokenRegistry(
        TokenTable.for_store(wiring.store),
        fixed=[*settings_principals(settings), (wiring.local_token, local)],
        jwt_key=check_signing_key(settings.jwt_signing_key),
        refresh_s=settings.token_refresh_s,
    )
    registry.start()
    wiring.tokens = registry
    if not settings.auth:
        log.warning(
            "AUTH IS OFF (REDPOLL_AUTH=off): every route, admin included, is open to anyone "
            "who can reach %s:%s. Use this for local demos only.",
            settings.host,
            settings.port,
        )
    elif not registry.has_admin():
        value = registry.create(FIRST_ADMIN_NAME, [Scope(ADMIN)])
        print(
            f"\nCreated the first ADMIN token '{FIRST_ADMIN_NAME}'. It is shown only now; "
            f"store it safely:\n\n    {value}\n\n"
            "Create scoped tokens with `redpoll token create` (docs/security.md).\n",
            file=sys.stderr,
            flush=True,
        )
    try:
        yield
    finally:
        registry.stop()
