"""`create_app(settings)`: the Litestar application, and nothing else.

Resources are opened on startup and closed on shutdown (Litestar's lifecycle hooks) and
kept on `app.state`: `store` (ClickHouse clients), `admin_token`. Features register
their controllers in `ROUTE_HANDLERS` and their startup work in `STARTUP_HOOKS`.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.datastructures import State

from redpoll.api.admin import AdminController
from redpoll.api.errors import exception_handlers
from redpoll.api.events import EventsController, start_ingest, stop_ingest
from redpoll.api.health import HealthController
from redpoll.api.kafka_status import KafkaStatusController, start_kafka, stop_kafka
from redpoll.api.middleware import add_request_id
from redpoll.api.pipes import (
    EndpointsAdminController,
    PipesController,
    start_endpoints,
    stop_endpoints,
)
from redpoll.clickhouse.lock import ServerInfo
from redpoll.store import Store

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = ("create_app",)

log = logging.getLogger("redpoll")

ROUTE_HANDLERS: list[Any] = [
    HealthController,
    AdminController,
    PipesController,
    EndpointsAdminController,
    EventsController,
    KafkaStatusController,
]


def create_app(
    settings: Settings, *, store: Store | None = None, owns_store: bool = False
) -> Litestar:
    """Build the app.

    `store` hands in an already open store: tests do, and `redpoll serve` does so that a
    busy store is a one-line CLI error before uvicorn starts. It is closed on shutdown
    only with `owns_store` (then `app.state.store` is None once closed).
    """
    admin_token = settings.admin_token or secrets.token_urlsafe(24)

    def open_store(app: Litestar) -> None:
        if store is None:
            app.state.store = Store.open(
                settings, "redpoll serve", read_clients=settings.read_pool_size
            )
        else:
            app.state.store = store
        lock = app.state.store.lock
        if lock is not None:
            url = f"http://{settings.host}:{settings.port}"
            lock.publish_server(ServerInfo(os.getpid(), url, admin_token))
        log.info("store open: %s", app.state.store.target.describe())

    def close_store(app: Litestar) -> None:
        if (store is None or owns_store) and getattr(app.state, "store", None) is not None:
            app.state.store.close()
            app.state.store = None

    return Litestar(
        route_handlers=list(ROUTE_HANDLERS),
        on_startup=[open_store, start_endpoints, start_ingest, start_kafka],
        on_shutdown=[stop_kafka, stop_ingest, stop_endpoints, close_store],
        exception_handlers=exception_handlers,
        before_send=[add_request_id],
        state=State({"settings": settings, "admin_token": admin_token}),
        debug=False,
    )
