"""`GET /v0/metrics` (ADMIN): Prometheus text exposition, and the request observer.

`observe_requests` wraps the app's ASGI handler (app.py), outside routing, so every
request is seen once, whatever answers it (a handler, the 404 of the router, the 414 of
api/security.py). Per request it:

- sets `REQUEST_ID` (logging_setup.py) to the request's id (api/middleware.py), so every
  log line of the request carries it, uvicorn's access line included;
- counts the request and its latency by method, route TEMPLATE (`/v0/pipes/{pipe}`,
  never the raw path: unknown paths are `<unmatched>`) and status, and errors by status
  and `X-DB-Exception-Code` (ClickHouse's error code, api/errors.py);
- hands pipe calls, ingest requests and backfills to the call log (api/request_log.py),
  which writes them off the request path.

Everything else is read at scrape time by `RedpollCollector` from the counters the
services keep anyway (`IngestService.status()`, the Kafka consumers' `status()`, the
call log's), so no hot path is instrumented for it. Each app has its own
`CollectorRegistry` (tests build several apps in one process).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from redpoll.api.auth import admin_guard
from redpoll.api.middleware import request_id
from redpoll.api.request_log import Call
from redpoll.api.state import app_state
from redpoll.logging_setup import REQUEST_ID

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
    from prometheus_client.metrics_core import Metric

    from redpoll.api.state import AppState

__all__ = ("Metrics", "MetricsController", "observe_requests")

#: route label of a request no route matched (404/405 before routing, 414)
UNMATCHED = "<unmatched>"
#: request latency buckets, seconds: endpoint calls are ms, ingests and backfills longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: a POST body kept for the call log (pipe parameters, backfill's view) at most
MAX_KEPT_BODY = 16 * 1024
#: bytes kept of a pipe's answer: ClickHouse's `rows` and `statistics` are at its end
ANSWER_TAIL = 512
#: bytes kept of an error answer (the envelope)
ERROR_BODY = 4096
#: the text format `generate_latest` writes (Litestar appends `; charset=utf-8`)
CONTENT_TYPE = "text/plain; version=0.0.4"
EVENTS_ROUTE = "/v0/events"
BACKFILL_ROUTE = "/redpoll/v1/admin/backfill"


class Metrics:
    """This app's registry and its request-path instruments."""

    def __init__(self, wiring: AppState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "redpoll_http_requests",
            "HTTP requests by method, route template and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "redpoll_http_request_duration_seconds",
            "HTTP request latency (first byte in to last byte out) by route template",
            ("method", "route", "status"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "redpoll_http_errors",
            "HTTP answers >= 400 by route template, status and X-DB-Exception-Code",
            ("route", "status", "code"),
            registry=self.registry,
        )
        self.registry.register(RedpollCollector(wiring))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RedpollCollector(Collector):
    """Reads the services' own counters at scrape time."""

    def __init__(self, wiring: AppState) -> None:
        self._wiring = wiring

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._kafka()
        yield from self._call_log()
        yield from self._result_cache()

    def _ingest(self) -> Iterator[Metric]:
        service = getattr(self._wiring, "ingest", None)
        if service is None:
            return
        status: dict[str, dict[str, Any]] = service.status()
        labels = ["datasource"]
        families = {
            "requests": CounterMetricFamily(
                "redpoll_ingest_requests", "Ingest requests per data source", labels=labels
            ),
            "rows": CounterMetricFamily(
                "redpoll_ingest_rows", "Rows stored per data source", labels=labels
            ),
            "quarantined": CounterMetricFamily(
                "redpoll_ingest_quarantined_rows",
                "Rows quarantined per data source",
                labels=labels,
            ),
            "errors": CounterMetricFamily(
                "redpoll_ingest_insert_errors",
                "Failed INSERTs per data source (a request retried alone counts once)",
                labels=labels,
            ),
        }
        batch_rows = SummaryMetricFamily(
            "redpoll_ingest_insert_batch_rows",
            "Rows per INSERT (group commit): count = INSERTs, sum = rows",
            labels=labels,
        )
        batch_seconds = SummaryMetricFamily(
            "redpoll_ingest_insert_duration_seconds",
            "INSERT duration (grouping, conversion and the INSERT with its views)",
            labels=labels,
        )
        stage = CounterMetricFamily(
            "redpoll_ingest_stage_seconds",
            "Cumulative seconds per ingest stage (decode, validate, group, convert, insert)",
            labels=["datasource", "stage"],
        )
        last = GaugeMetricFamily(
            "redpoll_ingest_last_insert_seconds",
            "Duration of the latest INSERT per data source",
            labels=labels,
        )
        for name, stats in status.items():
            for key, family in families.items():
                family.add_metric([name], float(stats.get(key, 0)))
            inserts = int(stats.get("inserts", 0))
            batch_rows.add_metric([name], inserts, float(stats.get("rows", 0)))
            seconds = sum(float(stats.get(f"{s}_s", 0.0)) for s in ("group", "convert", "insert"))
            batch_seconds.add_metric([name], inserts, seconds)
            for part in ("decode", "validate", "group", "convert", "insert"):
                stage.add_metric([name, part], float(stats.get(f"{part}_s", 0.0)))
            last.add_metric([name], float(stats.get("last_insert_ms", 0.0)) / 1000)
        yield from families.values()
        yield from (batch_rows, batch_seconds, stage, last)

    def _result_cache(self) -> Iterator[Metric]:
        cache = self._wiring.result_cache
        if cache is None:
            return
        stats = cache.stats
        lookups = CounterMetricFamily(
            "redpoll_result_cache_lookups",
            "Endpoint calls by how the result cache answered (hit, miss, off: not cacheable)",
            labels=["result"],
        )
        for result, n in (("hit", stats.hits), ("miss", stats.misses), ("off", stats.bypassed)):
            lookups.add_metric([result], n)
        yield lookups
        yield CounterMetricFamily(
            "redpoll_result_cache_evictions",
            "Answers dropped to stay under cache_max_bytes",
            value=stats.evictions,
        )
        yield CounterMetricFamily(
            "redpoll_result_cache_stale",
            "Answers found stale (a write, the clock's second or the TTL) and dropped",
            value=stats.stale,
        )
        yield CounterMetricFamily(
            "redpoll_result_cache_raced",
            "Answers not stored because a write landed while their query ran",
            value=stats.raced,
        )
        yield GaugeMetricFamily(
            "redpoll_result_cache_bytes", "Bytes the result cache holds", value=cache.size_bytes
        )
        yield GaugeMetricFamily(
            "redpoll_result_cache_entries", "Keys the result cache holds", value=len(cache)
        )

    def _kafka(self) -> Iterator[Metric]:
        consumers = self._wiring.kafka
        if consumers is None:
            return
        labels = ["datasource", "topic", "group"]
        lag = GaugeMetricFamily(
            "redpoll_kafka_consumer_lag",
            "Messages behind the partitions' ends (Kafka consumers of this process)",
            labels=labels,
        )
        messages = CounterMetricFamily("redpoll_kafka_messages", "Messages consumed", labels=labels)
        errors = CounterMetricFamily(
            "redpoll_kafka_errors",
            "Kafka consumer errors by kind (insert, commit, broker)",
            labels=[*labels, "kind"],
        )
        up = GaugeMetricFamily(
            "redpoll_kafka_consumer_running", "1 while the consumer runs", labels=labels
        )
        for name, status in consumers.status().items():
            key = [name, str(status.get("topic", "")), str(status.get("group", ""))]
            lag.add_metric(key, float(status.get("lag", 0)))
            messages.add_metric(key, float(status.get("messages", 0)))
            for kind in ("insert", "commit", "broker"):
                errors.add_metric([*key, kind], float(status.get(f"{kind}_errors", 0)))
            up.add_metric(key, 1.0 if status.get("state") == "running" else 0.0)
        yield from (lag, messages, errors, up)

    def _call_log(self) -> Iterator[Metric]:
        call_log = self._wiring.call_log
        if call_log is None:
            return
        stats = call_log.stats
        yield GaugeMetricFamily(
            "redpoll_call_log_queue_depth", "Calls waiting to be written", value=call_log.depth
        )
        yield CounterMetricFamily(
            "redpoll_call_log_dropped",
            "Calls not recorded because the queue was full",
            value=stats.dropped,
        )
        written = CounterMetricFamily(
            "redpoll_call_log_rows", "Rows written per table", labels=["table"]
        )
        for table, n in sorted(stats.written.items()):
            written.add_metric([table], n)
        yield written
        lost = CounterMetricFamily(
            "redpoll_call_log_lost_rows",
            "Rows not written per table (table missing, INSERT failed)",
            labels=["table"],
        )
        for table, n in sorted(stats.lost.items()):
            lost.add_metric([table], n)
        yield lost
        read_rows = CounterMetricFamily(
            "redpoll_pipe_read_rows",
            "Rows read by endpoint calls (ClickHouse statistics of JSON answers)",
            labels=["pipe"],
        )
        read_bytes = CounterMetricFamily(
            "redpoll_pipe_read_bytes",
            "Bytes read by endpoint calls (ClickHouse statistics of JSON answers)",
            labels=["pipe"],
        )
        for pipe, n in sorted(stats.read_rows.copy().items()):
            read_rows.add_metric([pipe], n)
        for pipe, n in sorted(stats.read_bytes.copy().items()):
            read_bytes.add_metric([pipe], n)
        yield from (read_rows, read_bytes)


def _call_kind(method: str, path: str) -> str | None:
    """Which calls the call log wants, decided from the raw path before routing."""
    if path.startswith("/v0/pipes/") and method in ("GET", "POST"):
        rest = path[len("/v0/pipes/") :]
        if rest and "/" not in rest and rest != "openapi.json":
            return "pipe"
    elif path == EVENTS_ROUTE and method == "POST":
        return "append"
    elif path == BACKFILL_ROUTE and method == "POST":
        return "backfill"
    return None


def observe_requests(app: ASGIApp, wiring: AppState) -> ASGIApp:
    """Wrap the app's ASGI handler (see the module docstring)."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        wall = time.time()
        rid = request_id(scope)
        reset = REQUEST_ID.set(rid)
        method: str = scope["method"]
        kind = _call_kind(method, scope["path"]) if wiring.call_log is not None else None
        status = 500
        db_code = ""
        body_parts: list[bytes] = []
        body_size = 0
        answer = b""
        lines = 0

        async def receive_kept() -> ReceiveMessage:
            nonlocal body_size
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                body_size += len(chunk)
                if body_size <= MAX_KEPT_BODY:
                    body_parts.append(chunk)
            return message

        async def send_seen(message: Message) -> None:
            nonlocal status, db_code, answer, lines
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-db-exception-code":
                        db_code = value.decode("latin-1")[:16]
            elif kind is not None and message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if status >= 400:
                    answer = (answer + chunk)[:ERROR_BODY]
                elif kind == "pipe":
                    answer = (answer + chunk)[-ANSWER_TAIL:]
                    lines += chunk.count(b"\n")
                else:
                    answer = (answer + chunk)[:ERROR_BODY]
            await send(message)

        try:
            await app(scope, receive_kept if kind is not None else receive, send_seen)
        finally:
            elapsed = time.perf_counter() - started
            REQUEST_ID.reset(reset)
            route = scope.get("path_template") or UNMATCHED
            if route != UNMATCHED and scope.get("route_handler") is None:
                route = UNMATCHED
            metrics = wiring.metrics
            code = str(status)
            metrics.requests.labels(method, route, code).inc()
            metrics.latency.labels(method, route, code).observe(elapsed)
            if status >= 400:
                metrics.errors.labels(route, code, db_code).inc()
            call_log = wiring.call_log
            if kind is not None and call_log is not None:
                principal = scope.get("state", {}).get("principal")
                call_log.submit(
                    Call(
                        kind,
                        wall,
                        elapsed,
                        str(scope.get("path_params", {}).get("pipe", ""))
                        if kind == "pipe"
                        else _query_name(scope),
                        status,
                        scope.get("query_string", b""),
                        b"".join(body_parts) if body_size <= MAX_KEPT_BODY else b"",
                        _content_type(scope) if body_parts else "",
                        answer,
                        lines,
                        rid,
                        getattr(principal, "name", ""),
                    )
                )

    return observed


def _query_name(scope: Scope) -> str:
    """`?name=` of an ingest request (the data source), raw: parsed off the request path."""
    query: bytes = scope.get("query_string", b"")
    for pair in query.split(b"&"):
        if pair.startswith(b"name="):
            from urllib.parse import unquote

            return unquote(pair[5:].decode("latin-1"))[:200]
    return ""


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return ""


class MetricsController(Controller):
    path = "/v0/metrics"
    guards = [admin_guard]

    @get("", sync_to_thread=False, include_in_schema=True)
    def metrics(self, state: State) -> Response[bytes]:
        """Prometheus text exposition of this process (docs/operations.md)."""
        body = app_state(state).metrics.exposition()
        return Response(body, media_type=CONTENT_TYPE)
