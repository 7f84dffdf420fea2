"""`/v0/datasources`: Tinybird's Data Sources API.

Read: `GET /v0/datasources` lists every data source the token holds `DATASOURCES:READ` or
`DATASOURCES:APPEND` on (ADMIN: all); `GET /v0/datasources/<name>` describes one. A
scoped token asking for another data source gets 403, whether it exists or not (as
Tinybird answers; existence is not revealed); a token that could read it gets 404 for
an unknown name. What a data source is and how it is described lives in the service
layer (`endpoints/datasource_catalog.py`).

Write (docs/api.md, ADR 0021), each answered with a job object (api/jobs.py):
- `POST /v0/datasources?name=<ds>&mode=append` with a file (multipart field `csv`,
  `ndjson`, `parquet` or any, or the raw body; `format=` or the file name says which):
  runs in the request, answered with a job already `done` (Tinybird's synchronous
  append). With `url=` (query or form) the file is fetched first (in the request: an
  unreachable URL is a 4xx at once), then appended by a job. `DATASOURCES:APPEND:<ds>`.
- `mode=replace`: the same, always as a job; ADMIN (it removes every row).
- `POST /v0/datasources/<ds>/truncate`: in the request, a `done` job. ADMIN.
- `POST /v0/datasources/<ds>/delete` with `delete_condition=<SQL>` (form, JSON or query;
  checked before the job is queued: a bad condition is a 400 at once) and optional
  `dry_run=true` (answers `{"rows_to_be_deleted": n}`). ADMIN.
The operations themselves are `ingest/mutations.py`'s; this module only adapts HTTP.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, Parameter

from redpoll.api.auth import Connection, admin_guard, append_guard, authenticate
from redpoll.api.jobs import job_body, who
from redpoll.api.security import is_preflight
from redpoll.api.state import app_state
from redpoll.api.uploads import MAX_FORM_BYTES, read_small_body, receive
from redpoll.endpoints.datasource_catalog import DataSourceInfo, read_datasources
from redpoll.errors import EndpointNotFound, ParameterError, Unauthorized
from redpoll.ingest.download import check_url, download
from redpoll.ingest.files import FORMATS
from redpoll.ingest.jobs import Job
from redpoll.tokens.scopes import DATASOURCES_APPEND, DATASOURCES_READ, Principal

__all__ = (
    "DataSourcesController",
    "datasources_guard",
    "read_form",
)

_MODES = ("append", "replace")
_TYPES = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/json": "ndjson",
    "application/vnd.apache.parquet": "parquet",
}

_SCOPES = (DATASOURCES_READ, DATASOURCES_APPEND)


def _may_see(principal: Principal, name: str | None) -> bool:
    return any(principal.grant(scope, name) is not None for scope in _SCOPES)


def datasources_guard(connection: Connection, _: BaseRouteHandler) -> None:
    """`DATASOURCES:READ` or `DATASOURCES:APPEND`: on the data source in the path, or on
    any one for the list (which shows only the granted ones)."""
    if is_preflight(connection):
        return
    principal = authenticate(connection)
    name = connection.path_params.get("name")
    wanted = str(name) if name is not None else None
    if not _may_see(principal, wanted):
        target = f":{wanted}" if wanted else ""
        raise Unauthorized(
            f"this token lacks the scope {DATASOURCES_READ}{target} or {DATASOURCES_APPEND}{target}"
        )


def _catalog(state: State) -> dict[str, DataSourceInfo]:
    wiring = app_state(state)
    store = wiring.store
    with store.admin_lock:
        return read_datasources(store.admin, wiring.settings.project_dir, store.target.database)


async def import_guard(connection: Connection, handler: BaseRouteHandler) -> None:
    """`mode=append` (default): `DATASOURCES:APPEND` on `?name=`; `mode=replace`: ADMIN."""
    mode = connection.query_params.get("mode", "append")
    await (admin_guard if mode == "replace" else append_guard)(connection, handler)


def _format(given: str | None, filename: str, field: str, content_type: str) -> str:
    """`format=`, else the file name's extension, else the multipart field's name
    (Tinybird's `csv`/`ndjson`/`parquet`), else the body's Content-Type."""
    if given:
        fmt = given.strip().lower()
        if fmt not in FORMATS:
            raise ParameterError(f"format must be one of {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower().lstrip(".") for s in PurePosixPath(filename).suffixes if s != ".gz"]
    extension = (
        {"jsonl": "ndjson", "json": "ndjson"}.get(suffixes[-1], suffixes[-1]) if suffixes else ""
    )
    for candidate in (extension, field.lower(), _TYPES.get(content_type, "")):
        if candidate in FORMATS:
            return candidate
    raise ParameterError(f"cannot tell the file's format: pass format={'|'.join(FORMATS)}")


def _shown(url: str) -> str:
    """The URL as a job shows it: without a `user:password@`."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _import_body(job: Job, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Tinybird's import answer: the job's fields, `import_id` and the job itself."""
    body = job_body(job, request)
    return {**body, "import_id": job.id, "job": dict(body), "error": job.error or False}


async def read_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """A small body as fields: JSON object or urlencoded form (Tinybird's SDK)."""
    body = await read_small_body(request, MAX_FORM_BYTES)
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ParameterError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ParameterError("the body must be a JSON object")
        return {str(k): str(v) for k, v in data.items()}
    return dict(urllib.parse.parse_qsl(text))


class DataSourcesController(Controller):
    """Read, and (the routes below, each with its own guard) write."""

    path = "/v0/datasources"

    @get("/", guards=[datasources_guard], sync_to_thread=True)
    def list_datasources(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        principal = authenticate(request)
        return {
            "datasources": [
                info.describe()
                for name, info in _catalog(state).items()
                if _may_see(principal, name)
            ]
        }

    @get("/{name:str}", guards=[datasources_guard], sync_to_thread=True)
    def describe(self, state: State, name: FromPath[str]) -> dict[str, Any]:
        info = _catalog(state).get(name)
        if info is None:
            raise EndpointNotFound(f"Data Source '{name[:128]}' not found")
        return info.describe()

    @post("/", guards=[import_guard], status_code=200, request_max_body_size=None)
    async def import_data(
        self,
        request: Request[Any, Any, Any],
        state: State,
        name: FromQuery[str | None] = None,
        mode: FromQuery[str] = "append",
        given_format: Annotated[str | None, Parameter(query="format")] = None,
        url: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Append a file or URL to a data source, or replace its rows with it."""
        wiring = app_state(state)
        settings = wiring.settings
        if not name:
            raise ParameterError("missing required parameter 'name' (the data source)")
        if mode not in _MODES:
            raise ParameterError(
                f"mode must be append or replace (data sources are created by migrations "
                f"from sql/<name>.sql), not {mode[:32]!r}"
            )
        mutations = wiring.mutations
        await anyio.to_thread.run_sync(mutations.datasource, name)  # 404 before the upload
        caller = who(request)
        work = Path(tempfile.mkdtemp(prefix="redpoll-import-"))
        handed_over = False
        try:
            received = await receive(request, settings.import_max_bytes, work)
            url = url or received.form.get("url")
            given = given_format or received.form.get("format")
            if url:
                if received.path is not None:
                    raise ParameterError("send a file or url=, not both")
                checked = url  # resolving the host blocks: off the event loop
                source = await anyio.to_thread.run_sync(
                    lambda: check_url(checked, allow_private=settings.import_private_urls)
                )
                path_part = urllib.parse.urlsplit(source).path
                fmt = _format(given, path_part, "", "")
                data = work / ("data.gz" if path_part.endswith(".gz") else "data")
                await anyio.to_thread.run_sync(
                    lambda: download(
                        source,
                        data,
                        max_bytes=settings.import_max_bytes,
                        timeout_s=settings.import_timeout_s,
                        allow_private=settings.import_private_urls,
                    )
                )
            else:
                if received.path is None:
                    raise ParameterError(
                        "no data: send a file (multipart field csv, ndjson or parquet, or "
                        "the body) or url="
                    )
                fmt = _format(given, received.filename, received.field, received.content_type)
                data = received.path
                if received.filename.lower().endswith(".gz"):
                    data = data.rename(work / "data.gz")
            params = {"mode": mode, "format": fmt, **({"url": _shown(url)} if url else {})}
            if mode == "append" and not url:
                result = await anyio.to_thread.run_sync(
                    lambda: mutations.append(name, data, fmt, caller)
                )
                job = wiring.jobs.record("import", result, datasource=name, params=params)
                return _import_body(job, request)
            operation = mutations.append if mode == "append" else mutations.replace

            def run() -> dict[str, Any]:
                try:
                    return dict(operation(name, data, fmt, caller))
                finally:
                    shutil.rmtree(work, ignore_errors=True)

            job = wiring.jobs.submit("import", run, datasource=name, params=params)
            handed_over = True
            return _import_body(job, request)
        finally:
            if not handed_over:
                shutil.rmtree(work, ignore_errors=True)

    @post("/{name:str}/truncate", guards=[admin_guard], status_code=200, sync_to_thread=True)
    def truncate(
        self, request: Request[Any, Any, Any], state: State, name: FromPath[str]
    ) -> dict[str, Any]:
        """Remove every row of a data source; its views are rebuilt (empty)."""
        wiring = app_state(state)
        result = wiring.mutations.truncate(name, who(request))
        job = wiring.jobs.record("truncate", result, datasource=name)
        return job_body(job, request)

    @post("/{name:str}/delete", guards=[admin_guard], status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        state: State,
        name: FromPath[str],
        delete_condition: FromQuery[str | None] = None,
        dry_run: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Delete the rows matching `delete_condition`; its views are rebuilt."""
        wiring = app_state(state)
        form = await read_form(request)
        condition = delete_condition or form.get("delete_condition", "")
        dry = (dry_run or form.get("dry_run", "false")).lower() in {"true", "1"}
        mutations = wiring.mutations
        caller = who(request)
        if dry:
            return await anyio.to_thread.run_sync(
                lambda: mutations.delete(name, condition, caller, dry_run=True)
            )
        sql = await anyio.to_thread.run_sync(mutations.check_delete, name, condition)
        job = wiring.jobs.submit(
            "delete_data",
            lambda: mutations.delete(name, condition, caller),
            datasource=name,
            params={"delete_condition": sql},
        )
        body = job_body(job, request)
        return {**body, "delete_id": job.id, "job": dict(body)}
