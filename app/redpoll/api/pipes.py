"""`/v0/pipes`: endpoint files served over HTTP, wire-compatible with Tinybird's pipes API.

The controller only adapts HTTP to `redpoll.endpoints`: it collects the
parameters (query string, form or JSON body) and hands rendering and the query to a lane
(`endpoints/lanes.py`: ordinary and `q=` calls have separate clients, threads and
deadlines). The lane renders in a worker thread (sqlglot may take a while over a `q`)
and returns ClickHouse's bytes as they are. Errors are raised as `RedpollError` or
`DatabaseError` and turned into the JSON envelope by the app's handlers (`api/errors.py`).

Also here: `POST /redpoll/v1/admin/reload` (admin token) and `endpoints_lifespan`, which
builds the registry, watches files in dev mode and reloads on SIGHUP. The OpenAPI
document is built in `api/openapi.py`.
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
from redpoll.api.state import app_state
from redpoll.endpoints.compiler import RESERVED_PARAMS
from redpoll.endpoints.executor import FORMATS, check_q_size, prepare
from redpoll.endpoints.lanes import HEAVY_QUEUE_S, Lane, QueryLanes
from redpoll.endpoints.loader import catalog_from_client, q_functions_from_client
from redpoll.endpoints.registry import Registry
from redpoll.errors import ConfigError, EndpointNotFound, ParameterError
from redpoll.tokens.scopes import PIPES_READ

if TYPE_CHECKING:
    from redpoll.endpoints.executor import Query

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

        def build() -> Query:
            return prepare(
                endpoint,
                template_params,
                fmt=ext,
                q=q_text,
                q_functions=wiring.q_functions,
                quote_64bit=quote_64bit,
                default_timeout=settings.query_timeout_s,
                default_max_rows=settings.max_result_rows,
                session_caps=True,
            )

        timeout = float(endpoint.meta.max_execution_time or settings.query_timeout_s)
        lanes: QueryLanes = wiring.query_lanes
        if q_text is None:
            body = await lanes.lane(heavy=False).run(build, timeout)
        else:  # q= time is charged to the token's per-minute budget (api/rate_limits.py)
            principal = authenticate(request)
            wiring.rate_limits.check_q_budget(principal)
            started = time.monotonic()
            try:
                body = await lanes.lane(heavy=True).run(build, timeout)
            finally:
                wiring.rate_limits.spend_q_time(principal, time.monotonic() - started)
        headers = {}
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

    def catalog() -> Any:
        with store.admin_lock:
            return catalog_from_client(store.admin, store.target.database)

    registry = Registry(settings.project_dir / "endpoints", catalog)
    with store.admin_lock:
        wiring.q_functions = q_functions_from_client(store.admin)
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
