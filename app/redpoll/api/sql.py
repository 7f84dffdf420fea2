"""`/v0/sql`: Tinybird's Query API, SQL over the data sources a token may read.

`GET /v0/sql?q=<SQL>` or `POST /v0/sql` (the SQL as `q` in a form or a JSON object, or as
the whole `text/plain` body, as tinybird-sdk's `TinybirdApi.sql` sends it). The output is
the query's trailing `FORMAT` (JSON, CSV, CSVWithNames, JSONEachRow, Parquet) or the
`format` parameter (a pipe's extension: json, csv, ndjson, parquet); JSON by default.

The guard asks for some `DATASOURCES:READ` scope; which tables the query reads, and
whether the token may read each, is decided after parsing (`endpoints/sql_access.py`,
off the event loop), before the query takes a heavy client. It then runs like a pipe's
`q=` (api/pipes.py): on the heavy lane (`endpoints/lanes.py`), on read-only clients with
the server's read limits (store.py `read_limits`), its time charged to the token's `q=`
budget (api/rate_limits.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post

from redpoll.api.auth import authenticate, require
from redpoll.api.request_log import reported_read_rows
from redpoll.api.state import app_state
from redpoll.endpoints.datasource_catalog import datasource_names
from redpoll.endpoints.executor import check_q_size
from redpoll.endpoints.sql_access import SqlQuery, check_access, parse_sql
from redpoll.errors import ParameterError
from redpoll.tokens.scopes import DATASOURCES_READ

__all__ = ("SqlController", "sql_guard")

#: Largest POST body (the SQL itself is capped by `max_q_bytes`).
MAX_SQL_BODY_BYTES = 1024 * 1024

#: any DATASOURCES:READ scope; each table is checked once the query is parsed
sql_guard = require(DATASOURCES_READ)


def _last(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[-1] if value else None
    return None if value is None else str(value)


async def _sql_params(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """`q`, `format` and `output_format_json_quote_64bit_integers`, from the query string
    and, for POST, a JSON object, a form or a plain-text body (the SQL); the body wins."""
    params: dict[str, Any] = dict(request.query_params.items())
    if request.method != "POST":
        return params
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = msgspec.json.decode(await request.body())
        except (msgspec.DecodeError, RecursionError):
            raise ParameterError("the body is not valid JSON (or nested too deeply)") from None
        if not isinstance(body, Mapping):
            raise ParameterError("the JSON body must be an object with 'q'")
        params.update({str(k): v for k, v in body.items() if not isinstance(v, (dict, list))})
    elif ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    else:
        raw = await request.body()
        if raw.strip():
            try:
                params["q"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ParameterError("the body is not valid UTF-8") from None
    return params


def _flag(value: str | None, name: str) -> bool:
    text = (value or "1").strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ParameterError(f"Parameter '{name}' must be 0 or 1")


class SqlController(Controller):
    path = "/v0/sql"
    guards = [sql_guard]

    @get("/")
    async def sql_get(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await _run(request)

    @post("/", status_code=200, request_max_body_size=MAX_SQL_BODY_BYTES)
    async def sql_post(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await _run(request)


async def _run(request: Request[Any, Any, Any]) -> Response[bytes]:
    wiring = app_state(request.app.state)
    settings = wiring.settings
    params = await _sql_params(request)
    q = _last(params.get("q"))
    if not q or not q.strip():
        raise ParameterError("Parameter 'q' (the SQL query) is required")
    check_q_size(q, settings.max_q_bytes)  # before parsing: an oversized q never queues
    fmt = _last(params.get("format"))
    quote = _flag(
        _last(params.get("output_format_json_quote_64bit_integers")),
        "output_format_json_quote_64bit_integers",
    )
    principal = authenticate(request)
    wiring.rate_limits.check_q_budget(principal)
    database = wiring.store.target.database
    timeout = float(settings.query_timeout_s)

    def checked() -> SqlQuery:
        parsed = parse_sql(
            q,
            wiring.q_functions,
            database=database,
            fmt_param=fmt,
            timeout=timeout,
            quote_64bit=quote,
        )
        check_access(parsed, principal, datasource_names(settings.project_dir))
        return parsed

    parsed = await anyio.to_thread.run_sync(checked)
    started = time.monotonic()
    try:
        body = await wiring.query_lanes.lane(heavy=True).run(lambda: parsed.query, timeout)
    finally:
        wiring.rate_limits.spend_q_time(principal, time.monotonic() - started)
    wiring.rate_limits.spend_q_rows(principal, reported_read_rows(body))
    return Response(body, media_type=parsed.media_type)
