"""`create_app(settings)`: the Litestar application, and nothing else.

Wiring (docs/architecture.md): the app's resources live on one typed `AppState`
(`api/state.py`), read by handlers through `app_state`. They are opened by Litestar
lifespan context managers, entered in the order of `LIFESPAN` and left in reverse:
the store, then endpoints (registry and query lanes), ingestion, Kafka consumers. A new
feature adds its controller to `ROUTE_HANDLERS` and, if it holds a resource, a field on
`AppState` and a lifespan here.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.datastructures import State

from redpoll.api.admin import AdminController
from redpoll.api.errors import exception_handlers
from redpoll.api.events import EventsController, ingest_lifespan
from redpoll.api.health import HealthController
from redpoll.api.kafka_status import KafkaStatusController, kafka_lifespan
from redpoll.api.middleware import add_request_id
from redpoll.api.pipes import EndpointsAdminController, PipesController, endpoints_lifespan
from redpoll.api.state import STATE_KEY, AppState, app_state
from redpoll.store import Store

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = ("LIFESPAN", "ROUTE_HANDLERS", "create_app")

log = logging.getLogger("redpoll")

ROUTE_HANDLERS: list[Any] = [
    HealthController,
    AdminController,
    PipesController,
    EndpointsAdminController,
    EventsController,
    KafkaStatusController,
]

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]

#: After the store (opened first by `create_app`'s own lifespan), in this order.
LIFESPAN: list[Lifespan] = [endpoints_lifespan, ingest_lifespan, kafka_lifespan]


def create_app(
    settings: Settings, *, store: Store | None = None, owns_store: bool = False
) -> Litestar:
    """Build the app.

    `store` hands in an already open store: tests do, and `redpoll serve` does so that a
    busy store is a one-line CLI error before uvicorn starts. It is closed on shutdown
    only with `owns_store`; a store the app opens itself it always closes.
    """
    wiring = AppState(settings, settings.admin_token or secrets.token_urlsafe(24))

    @contextlib.asynccontextmanager
    async def store_lifespan(app: Litestar) -> AsyncIterator[None]:
        opened = store or Store.open(
            settings, "redpoll serve", read_clients=settings.read_pool_size
        )
        try:
            app_state(app.state).store = opened
            opened.publish_server(f"http://{settings.host}:{settings.port}", wiring.admin_token)
            log.info("store open: %s", opened.target.describe())
            yield
        finally:
            if store is None or owns_store:
                opened.close()

    return Litestar(
        route_handlers=list(ROUTE_HANDLERS),
        lifespan=[store_lifespan, *LIFESPAN],
        exception_handlers=exception_handlers,
        before_send=[add_request_id],
        state=State({STATE_KEY: wiring}),
        debug=False,
    )
