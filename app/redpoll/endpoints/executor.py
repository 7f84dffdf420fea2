"""Run a rendered endpoint on a read client and return ClickHouse's bytes untouched.

Caps (`max_execution_time`, `max_result_rows`) and output settings ride in a trailing
`SETTINGS` clause rather than per-call settings: on chDB per-call settings cost two `SET`
round trips (~2 ms measured), the clause costs nothing. The read client itself is
`readonly=2` (ADR 0004) and carries the memory and read limits (store.py). Every query
is tagged with a unique `log_comment` so a query past its deadline can be found in
`system.processes` and killed (`endpoints/lanes.py`). ClickHouse errors propagate as
`DatabaseError`; the app's one handler (`api/errors.py`) turns them into 4xx/5xx.

`prepare_reusable` renders a request once into a `Prepared` that the result cache
(`endpoints/cache.py`) keeps with the answer: a request whose answer went stale runs the
kept SQL again without re-rendering, and each run gets an id of its own that
`queryID()` returns (`analysis.substitute_query_id`), so a cached answer can be given a
fresh id per response.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redpoll.endpoints.analysis import (
    QUERY_ID_PARAM,
    Analysis,
    FunctionClasses,
    analyze,
    known,
    substitute_query_id,
)
from redpoll.endpoints.compiler import apply_q, render, with_settings
from redpoll.errors import ParameterError, PayloadTooLarge

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.endpoints.model import Endpoint, FunctionSet, Rendered
    from redpoll.settings import Settings

__all__ = (
    "FORMATS",
    "Prepared",
    "Query",
    "RequestOptions",
    "check_q_size",
    "execute",
    "prepare",
    "prepare_reusable",
)

FORMATS: Mapping[str, tuple[str, str]] = {
    "json": ("JSON", "application/json"),
    "csv": ("CSVWithNames", "text/csv; charset=utf-8"),
    "ndjson": ("JSONEachRow", "application/x-ndjson"),
    "parquet": ("Parquet", "application/vnd.apache.parquet"),
}


class Query:
    """What to send: SQL with placeholders, its parameter values, the output format, its
    time limit (seconds) and the tag that finds it in `system.processes`."""

    __slots__ = ("fmt", "marker", "parameters", "sql", "timeout")

    def __init__(
        self,
        sql: str,
        parameters: Mapping[str, Any],
        fmt: str,
        timeout: float = 10.0,
        marker: str = "",
    ) -> None:
        self.sql = sql
        self.parameters = parameters
        self.fmt = fmt
        self.timeout = timeout
        self.marker = marker


@dataclasses.dataclass(frozen=True, slots=True)
class RequestOptions:
    """How a request is answered besides its endpoint and parameters: output format, the
    caller's `q` (with the functions it may call), 64-bit quoting in JSON, and the caps
    that apply when the endpoint names none.

    Attributes:
        session_caps: the read client already carries the default caps as session
            settings (store.py), so they are repeated only where the endpoint differs.
        time_limit: replaces every endpoint's own `max_execution_time`: an offline
            replay (`redpoll evaluate`) measures answers, and a serving deadline there
            only turns a busy machine into a failed run.
    """

    fmt: str = "json"
    q: str | None = None
    q_functions: FunctionSet | None = None
    quote_64bit: bool = True
    default_timeout: float = 10.0
    default_max_rows: int = 100_000
    session_caps: bool = False
    time_limit: float | None = None

    @classmethod
    def serving(cls, settings: Settings, **changes: Any) -> RequestOptions:
        """The options of a request served by the app (its read clients carry the caps)."""
        return cls(
            default_timeout=settings.query_timeout_s,
            default_max_rows=settings.max_result_rows,
            session_caps=True,
            **changes,
        )

    def timeout(self, endpoint: Endpoint) -> float:
        """Seconds the endpoint's query may run: `time_limit`, else its own
        `max_execution_time`, else ours."""
        if self.time_limit is not None:
            return self.time_limit
        return float(endpoint.meta.max_execution_time or self.default_timeout)


def check_q_size(q: str, max_bytes: int) -> None:
    """413 for a `q` longer than `max_bytes` UTF-8 bytes (checked before it is parsed)."""
    if len(q) > max_bytes or len(q.encode()) > max_bytes:  # chars <= bytes: cheap first
        raise PayloadTooLarge(f"q is longer than {max_bytes} bytes")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ParameterError(f"Unsupported format '{fmt}': use one of {sorted(FORMATS)}")


def _settings(endpoint: Endpoint, options: RequestOptions) -> dict[str, Any]:
    meta = endpoint.meta
    settings: dict[str, Any] = dict(meta.settings)
    # The read clients already carry the default caps as session settings (store.py);
    # repeat them only when the endpoint overrides them (each clause setting costs time).
    if meta.max_execution_time is not None or options.time_limit is not None:
        settings["max_execution_time"] = options.timeout(endpoint)
    elif not options.session_caps:
        settings["max_execution_time"] = options.default_timeout
    if meta.max_result_rows is not None or not options.session_caps:
        settings["max_result_rows"] = meta.max_result_rows or options.default_max_rows
        settings["result_overflow_mode"] = "throw"
    if options.fmt == "json":
        settings["output_format_json_quote_64bit_integers"] = 1 if options.quote_64bit else 0
    return settings


_DEFAULTS = RequestOptions()


def _with_q(sql: str, q: str | None, q_functions: FunctionSet | None) -> str:
    """`sql` wrapped by the caller's `q` when there is one; `q` needs the function set
    it may call, so without one `q` is refused rather than run unchecked."""
    if not q:
        return sql
    if q_functions is None:
        raise ParameterError("q is not available here")
    return apply_q(sql, q, q_functions)


def prepare(
    endpoint: Endpoint, params: Mapping[str, Any], options: RequestOptions = _DEFAULTS
) -> Query:
    """Render and wrap one request (pure Python, no I/O; with `q`, a sqlglot parse: call it
    off the event loop)."""
    _check_format(options.fmt)
    rendered: Rendered = render(endpoint, params)
    sql = _with_q(rendered.sql, options.q, options.q_functions)
    settings = _settings(endpoint, options)
    marker = f"redpoll:{uuid.uuid4().hex}"
    settings["log_comment"] = marker
    return Query(
        with_settings(sql, settings),
        rendered.parameters,
        FORMATS[options.fmt][0],
        options.timeout(endpoint),
        marker,
    )


class Prepared:
    """One rendered request, reusable: `query()` gives a `Query` with a fresh id.

    `analysis` says what the answer depends on besides the SQL and its values (tables,
    clock, volatile functions); with `analysis.query_id`, `queryID()` was replaced by a
    parameter and `query(run_id)` binds `run_id` to it.
    """

    __slots__ = ("analysis", "fmt", "parameters", "settings", "size", "sql", "timeout")

    def __init__(
        self,
        sql: str,
        parameters: Mapping[str, Any],
        settings: Mapping[str, Any],
        fmt: str,
        timeout: float,
        analysis: Analysis,
    ) -> None:
        self.sql = sql
        self.parameters = dict(parameters)
        self.settings = dict(settings)
        self.fmt = fmt
        self.timeout = timeout
        self.analysis = analysis
        #: bytes it keeps, roughly (the result cache counts them)
        self.size = len(sql) + sum(len(str(v)) + len(k) for k, v in self.parameters.items())

    def query(self, run_id: uuid.UUID | None = None) -> Query:
        """A `Query` for one run; `run_id` is its id (what `queryID()` returns) and tags
        it in `system.processes` (`log_comment`)."""
        run_id = run_id or uuid.uuid4()
        marker = f"redpoll:{run_id.hex}"
        parameters = self.parameters
        if self.analysis.query_id:
            parameters = {**parameters, QUERY_ID_PARAM: str(run_id)}
        sql = with_settings(self.sql, {**self.settings, "log_comment": marker})
        return Query(sql, parameters, self.fmt, self.timeout, marker)


def prepare_reusable(
    endpoint: Endpoint,
    params: Mapping[str, Any],
    options: RequestOptions,
    *,
    classes: FunctionClasses,
    only_known: bool = False,
) -> Prepared | None:
    """Like `prepare`, plus the analysis of what the answer depends on (tables read,
    clock, per-call functions; memoized per rendered text) and `queryID()` replaced by a
    parameter. Pure Python; a new template shape or a `q` costs a sqlglot parse: call it
    off the event loop.

    Args:
        classes: which functions give a different value per call (the server's list).
        only_known: return None instead of parsing a template shape not seen yet (the
            caller renders on the event loop, and parses in a worker thread only then).
    """
    _check_format(options.fmt)
    rendered: Rendered = render(endpoint, params)
    q = options.q
    if only_known and (q or not known(rendered.sql, classes)):
        return None
    analysis = analyze(rendered.sql, classes)
    sql = _with_q(rendered.sql, q, options.q_functions)
    if q:
        analysis = analysis.merge(analyze(q, classes, tables=False))
    if analysis.query_id:
        sql = substitute_query_id(sql)
    return Prepared(
        sql,
        rendered.parameters,
        _settings(endpoint, options),
        FORMATS[options.fmt][0],
        options.timeout(endpoint),
        analysis,
    )


def execute(client: Client, query: Query) -> bytes:
    """Run `query`; blocking, call it from a worker thread.

    Raises:
        DatabaseError: the app's handler (`api/errors.py`) maps it to 400/408/500.
    """
    return client.raw_query(query.sql, parameters=dict(query.parameters) or None, fmt=query.fmt)
