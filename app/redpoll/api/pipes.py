"""`/v0/pipes`: endpoint files served over HTTP, wire-compatible with Tinybird's pipes API.

The controller only adapts HTTP to `redpoll.endpoints`: it collects the
parameters (query string, form or JSON body) and hands rendering and the query to a lane
(`endpoints/lanes.py`: ordinary and `q=` calls have separate clients, threads and
deadlines). The lane renders in a worker thread (sqlglot may take a while over a `q`)
and returns ClickHouse's bytes as they are. Errors are raised as `RedpollError` or
`DatabaseError` and turned into the JSON envelope by the app's handlers (`api/errors.py`).

With the result cache on (settings `cache`, `cache_max_bytes`; `-- cache: off` per
endpoint), a call goes through `endpoints/cache.py`: a hit is answered on the event loop
without rendering or a thread; a miss renders once in a worker thread and runs on the
lane. Every answer says how it was served: header `X-Redpoll-Cache` and, in JSON,
`statistics.cache` (`hit`, `miss` or `off`).

Also here: `POST /redpoll/v1/admin/reload` (admin token) and `endpoints_lifespan`, which
builds the registry (and the result cache), watches files in dev mode and reloads on
SIGHUP. The OpenAPI document is built in `api/openapi.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from redpoll.api.auth import admin_guard, authenticate, granted_scope, pipes_guard, read_guard
from redpoll.api.openapi import openapi_document
from redpoll.api.request_log import OPS_LOG, PIPE_STATS, reported_read_rows
from redpoll.api.state import app_state
from redpoll.endpoints.cache import OFF, ResultCache, request_key, with_cache_status
from redpoll.endpoints.compiler import RESERVED_PARAMS
from redpoll.endpoints.dependencies import TableGraph
from redpoll.endpoints.executor import (
    FORMATS,
    RequestOptions,
    check_q_size,
    prepare,
    prepare_reusable,
)
from redpoll.endpoints.lanes import HEAVY_QUEUE_S, Lane, QueryLanes
from redpoll.endpoints.loader import (
    catalog_from_client,
    function_classes_from_client,
    q_functions_from_client,
)
from redpoll.endpoints.registry import Registry
from redpoll.errors import ConfigError, EndpointNotFound, ParameterError
from redpoll.tokens.scopes import PIPES_READ

if TYPE_CHECKING:
    from redpoll.endpoints.executor import Prepared, Query
    from redpoll.store import Store

__all__ = (
    "EndpointsAdminController",
    "PipesController",
    "endpoints_lifespan",
)

log = logging.getLogger("redpoll.api.pipes")
#: Largest POST body of a pipe call (parameters as a form or a JSON object).
MAX_PARAMS_BODY_BYTES = 1024 * 1024


def _registry(state: State) -> Registry:
    return app_state(state).endpoints


def _split_name(pipe: str) -> tuple[str, str]:
    name, dot, ext = pipe.rpartition(".")
    if not dot:
        return pipe, "json"
    if ext not in FORMATS:
        raise EndpointNotFound(f"Unsupported format '.{ext}': use {sorted(FORMATS)}")
    return name, ext


async def _request_params(request: Request[Any, Any, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        _add(params, key, value)
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                body = msgspec.json.decode(await request.body())
            except (msgspec.DecodeError, RecursionError):
                raise ParameterError("the body is not valid JSON (or nested too deeply)") from None
            if not isinstance(body, Mapping):
                raise ParameterError("JSON body must be an object of parameters")
            for key, value in body.items():
                if isinstance(value, (dict,)):
                    raise ParameterError(f"Parameter '{key}' must be a scalar or a list")
                params[str(key)] = value
        elif ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            for key, value in form.multi_items():
                if isinstance(value, str):
                    _add(params, key, value)
    return params


def _add(params: dict[str, Any], key: str, value: str) -> None:
    if key in params:
        existing = params[key]
        params[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
    else:
        params[key] = value


def _flag(value: Any, name: str) -> bool:
    text = str(value[-1] if isinstance(value, list) else value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ParameterError(f"Parameter '{name}' must be 0 or 1")


class PipesController(Controller):
    """Listing and the OpenAPI document show only the endpoints the token may read."""

    path = "/v0/pipes"

    @get("/", sync_to_thread=False, guards=[pipes_guard])
    def list_pipes(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        """Every live endpoint the token may read, with its parameters (and, for ADMIN,
        the files that failed to load)."""
        snap = _registry(state).snapshot
        principal = authenticate(request)
        names = principal.resources(PIPES_READ, snap.endpoints)
        return {
            "pipes": [snap.endpoints[n].describe() for n in names],
            "errors": [str(e) for e in snap.errors] if principal.is_admin else [],
        }

    @get("/openapi.json", sync_to_thread=False, guards=[pipes_guard])
    def openapi(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        principal = authenticate(request)
        return openapi_document(
            _registry(state),
            str(request.base_url).rstrip("/"),
            only=lambda name: principal.grant(PIPES_READ, name) is not None,
        )

    @get("/{pipe:str}", guards=[read_guard])
    async def query_get(
        self, request: Request[Any, Any, Any], pipe: FromPath[str]
    ) -> Response[bytes]:
        return await self._query(request, pipe)

    @post(
        "/{pipe:str}",
        status_code=200,
        request_max_body_size=MAX_PARAMS_BODY_BYTES,
        guards=[read_guard],
    )
    async def query_post(
        self, request: Request[Any, Any, Any], pipe: FromPath[str]
    ) -> Response[bytes]:
        return await self._query(request, pipe)

    async def _query(self, request: Request[Any, Any, Any], pipe: str) -> Response[bytes]:
        started = time.perf_counter()
        wiring = app_state(request.app.state)
        name, ext = _split_name(pipe)
        endpoint = wiring.endpoints.snapshot.get(name)
        params = await _request_params(request)
        q = params.get("q")
        q_text = str(q[-1] if isinstance(q, list) else q) if q else None
        quote = params.get("output_format_json_quote_64bit_integers", "1")
        settings = wiring.settings
        if q_text is not None:  # before the heavy lane: an oversized q never queues
            check_q_size(q_text, settings.max_q_bytes)
        template_params = {k: v for k, v in params.items() if k not in RESERVED_PARAMS}
        grant = granted_scope(request)
        if grant is not None and grant.fixed_params:  # a JWT's: the caller cannot override
            template_params.update(grant.fixed_params)
        quote_64bit = _flag(quote, "output_format_json_quote_64bit_integers")

        options = RequestOptions.serving(
            settings, fmt=ext, q=q_text, q_functions=wiring.q_functions, quote_64bit=quote_64bit
        )

        def build() -> Query:
            return prepare(endpoint, template_params, options)

        timeout = options.timeout(endpoint)
        lane = wiring.query_lanes.lane(heavy=q_text is not None)
        cache = wiring.result_cache
        status = OFF

        async def answer() -> bytes:
            nonlocal status
            if cache is None or not endpoint.meta.cache:
                return with_cache_status(await lane.run(build, timeout), ext, OFF)

            def build_reusable(only_known: bool = False) -> Prepared | None:
                return prepare_reusable(
                    endpoint, template_params, options, classes=cache.classes, only_known=only_known
                )

            async def render() -> Prepared:
                """A new key: rendered here when its template shape is known (Jinja only,
                ~0.1-0.2 ms: no thread hop), else (a new shape: a sqlglot parse; any `q`)
                in a worker thread holding a lane slot."""
                prepared = build_reusable(only_known=True)
                if prepared is None:
                    prepared = await lane.call(build_reusable, timeout)
                assert prepared is not None
                return prepared

            async def run(query: Query) -> bytes:
                return await lane.run(lambda: query, timeout)

            key = request_key(endpoint, template_params, ext, q_text, quote_64bit)
            body, status = await cache.serve(
                key,
                fmt=ext,
                ttl_s=endpoint.meta.cache_ttl,
                prepare=render,
                run=run,
                started=started,
            )
            return body

        if q_text is None:
            body = await answer()
        else:  # q= time and rows read are charged to the token (api/rate_limits.py)
            principal = authenticate(request)
            wiring.rate_limits.check_q_budget(principal)
            q_started = time.monotonic()
            try:
                body = await answer()
            finally:
                wiring.rate_limits.spend_q_time(principal, time.monotonic() - q_started)
            wiring.rate_limits.spend_q_rows(principal, reported_read_rows(body))
        headers = {"X-Redpoll-Cache": status}
        if endpoint.meta.cache_ttl:
            headers["Cache-Control"] = f"max-age={endpoint.meta.cache_ttl}"
        return Response(body, media_type=FORMATS[ext][1], headers=headers)


class EndpointsAdminController(Controller):
    path = "/redpoll/v1/admin"
    guards = [admin_guard]

    @post("/reload", sync_to_thread=True, status_code=200)
    def reload(self, state: State) -> dict[str, Any]:
        """Recompile endpoint files now; broken files keep their last good version."""
        snap = _registry(state).reload()
        return {
            "version": snap.version,
            "endpoints": sorted(snap.endpoints),
            "errors": [str(e) for e in snap.errors],
        }


@contextlib.asynccontextmanager
async def endpoints_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Load `<project>/endpoints` and open the query lanes; watch files in dev mode and
    reload on SIGHUP. Needs the store (app.py's lifespan order)."""
    wiring = app_state(app.state)
    settings, store = wiring.settings, wiring.store

    cache: ResultCache | None = None
    if settings.cache and settings.cache_max_bytes > 0:
        cache = ResultCache(
            settings.cache_max_bytes,
            lambda: wiring.ingest.versions,  # the ingest service opens after this lifespan
            # the call log writes its tables itself, without a version: never cached exactly
            unversioned=(PIPE_STATS, OPS_LOG),
        )

    def catalog() -> Any:
        with store.admin_lock:
            if cache is not None:  # views may have changed too (migrations reload)
                cache.set_graph(_table_graph(store, settings.project_dir))
            return catalog_from_client(store.admin, store.target.database)

    registry = Registry(settings.project_dir / "endpoints", catalog)
    with store.admin_lock:
        wiring.q_functions = q_functions_from_client(store.admin)
        if cache is not None:
            cache.classes = function_classes_from_client(store.admin)
    wiring.result_cache = cache
    if store.read_pool is None:
        raise ConfigError("the store was opened without read clients")
    heavy_pool = store.heavy_pool or store.read_pool
    wiring.query_lanes = QueryLanes(
        Lane("ordinary", store.read_pool, store.kill_query),
        Lane("heavy", heavy_pool, store.kill_query, queue_s=HEAVY_QUEUE_S),
    )
    snap = registry.reload()
    log.info("endpoints: %d loaded, %d with errors", len(snap.endpoints), len(snap.errors))
    wiring.endpoints = registry
    try:
        if settings.dev:
            registry.watch()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.run_in_executor(None, registry.reload)
            )
        yield
    finally:
        registry.stop()
        wiring.result_cache = None


def _table_graph(store: Store, project_dir: Any) -> TableGraph:
    """Which tables feed which: the project's schema files and the database's views.
    Call with the admin lock held."""
    return TableGraph.from_project(project_dir).union(
        TableGraph.from_client(store.admin, store.target.database)
    )
