"""`create_app(settings)`: the Litestar application, and nothing else.

Wiring (docs/architecture.md): the app's resources live on one typed `AppState`
(`api/state.py`), read by handlers through `app_state`. They are opened by Litestar
lifespan context managers, entered in the order of `LIFESPAN` and left in reverse:
the store, then tokens, endpoints (registry and query lanes), ingestion, Kafka consumers. A new
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
from redpoll.api.datasources import DataSourcesController
from redpoll.api.erase import EraseController
from redpoll.api.errors import exception_handlers
from redpoll.api.events import EventsController, ingest_lifespan
from redpoll.api.health import HealthController
from redpoll.api.jobs import JobsController, jobs_lifespan
from redpoll.api.kafka_status import KafkaStatusController, kafka_lifespan
from redpoll.api.metrics import Metrics, MetricsController, observe_requests
from redpoll.api.middleware import add_request_id
from redpoll.api.openapi import openapi_config
from redpoll.api.pipes import EndpointsAdminController, PipesController, endpoints_lifespan
from redpoll.api.rate_limits import RateLimits, add_rate_limit_headers
from redpoll.api.request_log import CallLog
from redpoll.api.security import add_security_headers, cors_config, limit_request_target
from redpoll.api.sql import SqlController
from redpoll.api.state import STATE_KEY, AppState, app_state
from redpoll.api.tokens import TokensController, tokens_lifespan
from redpoll.console import CONSOLE_HANDLERS
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
    TokensController,
    SqlController,
    DataSourcesController,
    JobsController,
    EraseController,
    MetricsController,
    *CONSOLE_HANDLERS,
]

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]

#: After the store (opened first by `create_app`'s own lifespan), in this order.
LIFESPAN: list[Lifespan] = [
    tokens_lifespan,
    endpoints_lifespan,
    ingest_lifespan,
    jobs_lifespan,
    kafka_lifespan,
]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    owns_store: bool = False,
    record_calls: bool = True,
) -> Litestar:
    """Build the app.

    `store` hands in an already open store: tests do, and `redpoll serve` does so that a
    busy store is a one-line CLI error before uvicorn starts. It is closed on shutdown
    only with `owns_store`; a store the app opens itself it always closes.
    `record_calls=False` leaves `pipe_stats` and `datasources_ops_log` unwritten
    (bench/bench_pipe_stats.py compares both).
    """
    wiring = AppState(
        settings,
        local_token=secrets.token_urlsafe(32),
        rate_limits=RateLimits(
            settings.rate_limit_rps,
            settings.rate_limit_ip_rps,
            settings.q_seconds_per_minute,
            settings.q_rows_per_minute,
        ),
    )

    wiring.metrics = Metrics(wiring)

    @contextlib.asynccontextmanager
    async def call_log_lifespan(app: Litestar) -> AsyncIterator[None]:
        """The call log's writer thread (api/request_log.py), after the store."""
        if not record_calls:
            yield
            return
        call_log = CallLog(
            app_state(app.state).store, retention_days=settings.stats_retention_days
        ).start()
        wiring.call_log = call_log
        try:
            yield
        finally:
            wiring.call_log = None
            call_log.close()

    @contextlib.asynccontextmanager
    async def store_lifespan(app: Litestar) -> AsyncIterator[None]:
        opened = store or Store.open(
            settings, "redpoll serve", read_clients=settings.read_pool_size
        )
        try:
            app_state(app.state).store = opened
            opened.publish_server(f"http://{settings.host}:{settings.port}", wiring.local_token)
            log.info("store open: %s", opened.target.describe())
            yield
        finally:
            if store is None or owns_store:
                opened.close()

    app = Litestar(
        route_handlers=list(ROUTE_HANDLERS),
        lifespan=[store_lifespan, call_log_lifespan, *LIFESPAN],
        exception_handlers=exception_handlers,
        before_send=[add_request_id, add_security_headers, add_rate_limit_headers],
        cors_config=cors_config(settings),
        openapi_config=openapi_config(),
        state=State({STATE_KEY: wiring}),
        debug=False,
        # logging is the process's (cli/commands/core.py, logging_setup.py): Litestar's
        # default config would replace the root handlers with its own line format
        logging_config=None,
    )
    # before routing, CORS and the exception handler, inside the `before_send` hooks
    # (Litestar calls `asgi_handler` with its wrapped `send`): api/security.py
    app.asgi_handler = limit_request_target(app.asgi_handler, settings.max_url_bytes)
    # outermost: counts and times every request (the 414 above too), sets the request id
    # for log lines and queues calls for `pipe_stats` (api/metrics.py)
    app.asgi_handler = observe_requests(app.asgi_handler, wiring)
    return app
