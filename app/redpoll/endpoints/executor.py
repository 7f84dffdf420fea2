"""Run a rendered endpoint on a read client and return ClickHouse's bytes untouched.

Caps (`max_execution_time`, `max_result_rows`) and output settings ride in a trailing
`SETTINGS` clause rather than per-call settings: on chDB per-call settings cost two `SET`
round trips (~2 ms measured), the clause costs nothing. The read client itself is
`readonly=2` (ADR 0004) and carries the memory and read limits (store.py). Every query
is tagged with a unique `log_comment` so a query past its deadline can be found in
`system.processes` and killed (`endpoints/lanes.py`). ClickHouse errors propagate as
`DatabaseError`; the app's one handler (`api/errors.py`) turns them into 4xx/5xx.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redpoll.endpoints.compiler import apply_q, render, with_settings
from redpoll.errors import ParameterError, PayloadTooLarge

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.endpoints.model import Endpoint, FunctionSet, Rendered

__all__ = ("FORMATS", "Query", "check_q_size", "execute", "prepare")

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


def check_q_size(q: str, max_bytes: int) -> None:
    """413 for a `q` longer than `max_bytes` UTF-8 bytes (checked before it is parsed)."""
    if len(q) > max_bytes or len(q.encode()) > max_bytes:  # chars <= bytes: cheap first
        raise PayloadTooLarge(f"q is longer than {max_bytes} bytes")


def prepare(
    endpoint: Endpoint,
    params: Mapping[str, Any],
    *,
    fmt: str = "json",
    q: str | None = None,
    q_functions: FunctionSet | None = None,
    quote_64bit: bool = True,
    default_timeout: float = 10.0,
    default_max_rows: int = 100_000,
    session_caps: bool = False,
) -> Query:
    """Render and wrap one request (pure Python, no I/O; with `q`, a sqlglot parse: call it
    off the event loop).

    Args:
        q_functions: the functions `q` may call (required with `q`).
        session_caps: the client already has the default caps as session settings.
    """
    if fmt not in FORMATS:
        raise ParameterError(f"Unsupported format '{fmt}': use one of {sorted(FORMATS)}")
    rendered: Rendered = render(endpoint, params)
    if q:
        if q_functions is None:
            raise ParameterError("q is not available here")
        sql = apply_q(rendered.sql, q, q_functions)
    else:
        sql = rendered.sql
    meta = endpoint.meta
    settings: dict[str, Any] = dict(meta.settings)
    # The read clients already carry the default caps as session settings (store.py);
    # repeat them only when the endpoint overrides them (each clause setting costs time).
    if meta.max_execution_time is not None or not session_caps:
        settings["max_execution_time"] = meta.max_execution_time or default_timeout
    if meta.max_result_rows is not None or not session_caps:
        settings["max_result_rows"] = meta.max_result_rows or default_max_rows
        settings["result_overflow_mode"] = "throw"
    if fmt == "json":
        settings["output_format_json_quote_64bit_integers"] = 1 if quote_64bit else 0
    marker = f"redpoll:{uuid.uuid4().hex}"
    settings["log_comment"] = marker
    timeout = float(meta.max_execution_time or default_timeout)
    return Query(
        with_settings(sql, settings), rendered.parameters, FORMATS[fmt][0], timeout, marker
    )


def execute(client: Client, query: Query) -> bytes:
    """Run `query`; blocking, call it from a worker thread.

    Raises:
        DatabaseError: the app's handler (`api/errors.py`) maps it to 400/408/500.
    """
    return client.raw_query(query.sql, parameters=dict(query.parameters) or None, fmt=query.fmt)
