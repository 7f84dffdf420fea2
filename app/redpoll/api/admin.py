"""Admin API under /redpoll/v1/admin, guarded by the admin token (Bearer or ?token=).

It exists so CLI commands keep working while `redpoll serve` holds an embedded store
(chDB allows one process per data directory, ADR 0006): the CLI sends the same operation
here and the server runs it with its own clients.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

from redpoll.api.auth import admin_guard
from redpoll.api.state import app_state
from redpoll.clickhouse.query import returns_rows
from redpoll.ingest.writer import check_view

__all__ = ("AdminController",)


class MigrateUpRequest(msgspec.Struct, forbid_unknown_fields=True):
    to: int | None = None


class SqlRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    format: str = "table"


class BackfillRequest(msgspec.Struct, forbid_unknown_fields=True):
    view: str


class AdminController(Controller):
    path = "/redpoll/v1/admin"
    guards = [admin_guard]

    @get("/migrations", sync_to_thread=True)
    def migrations(self, state: State) -> list[dict[str, Any]]:
        store = app_state(state).store
        with store.admin_lock:
            return [s.as_dict() for s in store.migrations().status()]

    @post("/migrations/up", sync_to_thread=True, status_code=200)
    def migrate_up(self, state: State, data: JSONBody[MigrateUpRequest]) -> dict[str, Any]:
        wiring = app_state(state)
        log: list[str] = []
        with wiring.store.admin_lock:
            applied = wiring.store.migrations().up(to=data.to, log=log.append)
        if applied:  # tables changed: endpoints and data sources see them at once
            wiring.endpoints.reload()
            wiring.ingest.refresh()
        return {"applied": [s.as_dict() for s in applied], "log": log}

    @post("/migrations/unlock", sync_to_thread=True, status_code=200)
    def migrate_unlock(self, state: State) -> dict[str, bool]:
        store = app_state(state).store
        with store.admin_lock:
            return {"removed": store.migrations().unlock()}

    @post("/sql", sync_to_thread=True, status_code=200)
    def sql(self, state: State, data: JSONBody[SqlRequest]) -> Response[bytes]:
        """Any statement, as `redpoll sql` runs it. One that may write drops every cached
        answer: which tables it changed is not known here (endpoints/cache.py)."""
        wiring = app_state(state)
        try:
            body = wiring.store.sql(data.query, data.format)
        finally:
            if wiring.result_cache is not None and not returns_rows(data.query):
                wiring.result_cache.clear()
        return Response(body, media_type="text/plain; charset=utf-8")

    @post("/backfill", sync_to_thread=True, status_code=200)
    def backfill(self, state: State, data: JSONBody[BackfillRequest]) -> dict[str, Any]:
        """Recompute a view's tables from `events` without stopping the server."""
        started = time.perf_counter()
        app_state(state).ingest.rebuild_view(check_view(data.view))
        return {"view": data.view, "seconds": round(time.perf_counter() - started, 3)}
