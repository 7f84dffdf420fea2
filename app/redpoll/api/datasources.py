"""`/v0/datasources` (read part): the data sources a token may see, Tinybird-like.

`GET /v0/datasources` lists every data source the token holds `DATASOURCES:READ` or
`DATASOURCES:APPEND` on (ADMIN: all); `GET /v0/datasources/<name>` describes one. A
scoped token asking for another data source gets 403, whether it exists or not (as
Tinybird answers; existence is not revealed); a token that could read it gets 404 for
an unknown name. What a data source is and how it is described lives in the service
layer (`endpoints/datasource_catalog.py`); this module only adapts HTTP to it.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from redpoll.api.auth import Connection, authenticate
from redpoll.api.security import is_preflight
from redpoll.api.state import app_state
from redpoll.endpoints.datasource_catalog import DataSourceInfo, read_datasources
from redpoll.errors import EndpointNotFound, Unauthorized
from redpoll.tokens.scopes import DATASOURCES_APPEND, DATASOURCES_READ, Principal

__all__ = ("DataSourcesController", "datasources_guard")

_SCOPES = (DATASOURCES_READ, DATASOURCES_APPEND)


def _may_see(principal: Principal, name: str | None) -> bool:
    return any(principal.grant(scope, name) is not None for scope in _SCOPES)


def datasources_guard(connection: Connection, _: BaseRouteHandler) -> None:
    """`DATASOURCES:READ` or `DATASOURCES:APPEND`: on the data source in the path, or on
    any one for the list (which shows only the granted ones)."""
    if is_preflight(connection):
        return
    principal = authenticate(connection)
    name = connection.path_params.get("name")
    wanted = str(name) if name is not None else None
    if not _may_see(principal, wanted):
        target = f":{wanted}" if wanted else ""
        raise Unauthorized(
            f"this token lacks the scope {DATASOURCES_READ}{target} or {DATASOURCES_APPEND}{target}"
        )


def _catalog(state: State) -> dict[str, DataSourceInfo]:
    wiring = app_state(state)
    store = wiring.store
    with store.admin_lock:
        return read_datasources(store.admin, wiring.settings.project_dir, store.target.database)


class DataSourcesController(Controller):
    path = "/v0/datasources"
    guards = [datasources_guard]

    @get("/", sync_to_thread=True)
    def list_datasources(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        principal = authenticate(request)
        return {
            "datasources": [
                info.describe()
                for name, info in _catalog(state).items()
                if _may_see(principal, name)
            ]
        }

    @get("/{name:str}", sync_to_thread=True)
    def describe(self, state: State, name: FromPath[str]) -> dict[str, Any]:
        info = _catalog(state).get(name)
        if info is None:
            raise EndpointNotFound(f"Data Source '{name[:128]}' not found")
        return info.describe()
