"""`AppState`: everything the app's handlers use, typed, on one object.

`create_app` (app.py) builds it with what exists before startup (settings, the local
CLI's token, rate limits);
the lifespan context managers fill in the rest in order (store, endpoints, ingestion,
Kafka) and undo it in reverse. Handlers and guards reach it through `app_state` only,
never through attributes of Litestar's `app.state`.

Fields without a default are set by their lifespan before the first request; reading one
earlier raises AttributeError (a wiring bug, not a state to handle).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from litestar.datastructures import State

    from redpoll.api.metrics import Metrics
    from redpoll.api.rate_limits import RateLimits
    from redpoll.api.request_log import CallLog
    from redpoll.endpoints.cache import ResultCache
    from redpoll.endpoints.lanes import QueryLanes
    from redpoll.endpoints.model import FunctionSet
    from redpoll.endpoints.registry import Registry
    from redpoll.ingest.jobs import JobRunner
    from redpoll.ingest.mutations import Mutations
    from redpoll.ingest.service import IngestService
    from redpoll.kafka.consumer import KafkaIngestors
    from redpoll.settings import Settings
    from redpoll.store import Store
    from redpoll.tokens.registry import TokenRegistry

__all__ = ("STATE_KEY", "AppState", "app_state")

#: The one key of Litestar's `app.state` that Redpoll uses.
STATE_KEY = "redpoll"


@dataclasses.dataclass(eq=False)
class AppState:
    """The app's resources; one per `create_app` (tests may build several per store)."""

    settings: Settings
    #: random per start, ADMIN, published in the lock file for CLI commands on this machine
    local_token: str = dataclasses.field(repr=False)
    rate_limits: RateLimits = dataclasses.field(repr=False)
    store: Store = dataclasses.field(init=False, repr=False)
    tokens: TokenRegistry = dataclasses.field(init=False, repr=False)
    endpoints: Registry = dataclasses.field(init=False, repr=False)
    query_lanes: QueryLanes = dataclasses.field(init=False, repr=False)
    q_functions: FunctionSet = dataclasses.field(init=False, repr=False)
    #: answers of endpoint calls (endpoints/cache.py); None: the cache is off
    result_cache: ResultCache | None = None
    ingest: IngestService = dataclasses.field(init=False, repr=False)
    #: the threads `POST /v0/events` validates and logs in (api/events.py)
    ingest_threads: ThreadPoolExecutor = dataclasses.field(init=False, repr=False)
    #: long data operations (api/jobs.py) and the data source mutations they run
    jobs: JobRunner = dataclasses.field(init=False, repr=False)
    mutations: Mutations = dataclasses.field(init=False, repr=False)
    #: the Kafka consumers, when bindings and brokers are configured
    kafka: KafkaIngestors | None = None
    #: this app's Prometheus registry and request instruments (api/metrics.py)
    metrics: Metrics = dataclasses.field(init=False, repr=False)
    #: writes `pipe_stats` and `datasources_ops_log` (api/request_log.py); None: not recorded
    call_log: CallLog | None = None
    #: extra entries of the `/v0/ready` body, e.g. the Kafka consumers' status
    readiness_probes: list[Callable[[], dict[str, Any]]] = dataclasses.field(default_factory=list)


def app_state(state: State) -> AppState:
    """The typed state behind Litestar's `app.state` (a handler's `state` argument, or
    `connection.app.state` in a guard)."""
    wiring: AppState = state[STATE_KEY]
    return wiring
