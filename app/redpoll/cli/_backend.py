"""Where a CLI command runs its operation: in this process, or through a running server.

chDB lets one process open a data directory (ADR 0006). When `redpoll serve` holds the
project's embedded store, commands send the operation to its HTTP API instead; when
another non-server process holds it, `Store.open` fails fast with `StoreBusy`.

Commands see only the `Backend` protocol: `LocalBackend` runs each operation with the
services the HTTP API uses (`IngestService`, the endpoint registry's loader and
executor, `Store`, `TokenTable`), `RemoteBackend` sends it to a server: the one holding
the project's store, or any server named by the `server_url` setting. A command never
asks which one it has.

Which token a remote call sends, per surface: the surface's own setting (`admin_token`,
`read_token`, `append_token`), else `token`, else the running server's per-start local
token (from its lock file; ADMIN, readable only by this user). A scoped token thus works
for the commands its scopes allow and gets the server's 403 message for the others.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from redpoll.api.errors import translate_database_error
from redpoll.api.jobs import ops_recorder
from redpoll.api.request_log import CallLog
from redpoll.endpoints.executor import execute, prepare
from redpoll.endpoints.loader import catalog_from_client, load_endpoint
from redpoll.endpoints.model import Catalog, LoadError
from redpoll.errors import RedpollError
from redpoll.ingest.mutations import Mutations, Who
from redpoll.ingest.service import IngestService
from redpoll.ingest.writer import check_view
from redpoll.settings import Settings
from redpoll.store import DatabaseError, ServerInfo, Store
from redpoll.store import running_server as _server_info
from redpoll.tokens.scopes import parse_scope
from redpoll.tokens.table import TokenRecord, TokenTable

__all__ = (
    "Backend",
    "LocalBackend",
    "RemoteBackend",
    "open_backend",
    "open_scratch_backend",
    "running_server",
)


class Backend(Protocol):
    """What commands may ask of the project's store, wherever it runs."""

    def migrate_status(self) -> list[dict[str, Any]]: ...
    def migrate_up(self, to: int | None) -> dict[str, Any]: ...
    def migrate_unlock(self) -> bool: ...
    def sql(self, query: str, output: str) -> bytes: ...
    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]: ...
    def backfill(self, view: str) -> dict[str, Any]: ...
    def erase(self, key: str, value: str) -> dict[str, Any]:
        """Remove every row whose `key` (user_id, item_id) is `value`, views rebuilt
        (ingest/mutations.py `Mutations.erase`): what was removed, per table."""
        ...

    def run_endpoint(self, name: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        """Call endpoint `name` as `GET /v0/pipes/<name>.json` does: (HTTP status, the
        JSON `data` on 200, else the error message)."""
        ...

    def token_list(self) -> list[dict[str, Any]]: ...
    def token_create(self, name: str, scopes: list[str], rps: int | None) -> dict[str, Any]: ...
    def token_refresh(self, name: str) -> dict[str, Any]: ...
    def token_revoke(self, name: str) -> None: ...


class LocalBackend:
    """Runs operations in this process on a store it opened."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ingest: IngestService | None = None
        self._reader: Any = None
        self._catalog: Catalog | None = None
        self._token_table: TokenTable | None = None

    def migrate_status(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.store.migrations().status()]

    def migrate_up(self, to: int | None) -> dict[str, Any]:
        applied = self.store.migrations().up(to=to, log=_echo)
        return {"applied": [s.as_dict() for s in applied]}

    def migrate_unlock(self) -> bool:
        return self.store.migrations().unlock()

    def sql(self, query: str, output: str) -> bytes:
        return self.store.sql(query, output)

    def _service(self) -> IngestService:
        """The ingestion service (one events writer), opened on first use."""
        if self._ingest is None:
            self._ingest = IngestService.for_store(self.store)
        return self._ingest

    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]:
        return self._service().ingest(datasource, ndjson, first_line=line_offset + 1).as_dict()

    def erase(self, key: str, value: str) -> dict[str, Any]:
        """Run in this process, logged to `datasources_ops_log` like the server does."""
        call_log = CallLog(self.store, retention_days=self.store.settings.stats_retention_days)
        call_log.start()
        try:
            mutations = Mutations(
                self._service(), self.store.new_client, record=ops_recorder(lambda: call_log)
            )
            return mutations.erase(key, value, Who(token_name="cli"))
        finally:
            call_log.close()

    def backfill(self, view: str) -> dict[str, Any]:
        started = time.perf_counter()
        check_view(view)
        self._service().rebuild_view(view)
        return {"view": view, "seconds": round(time.perf_counter() - started, 3)}

    def run_endpoint(self, name: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        store = self.store
        if self._catalog is None:
            with store.admin_lock:
                self._catalog = catalog_from_client(store.admin, store.target.database)
            self._reader = store.new_client(readonly=True)
        path = store.settings.project_dir / "endpoints" / f"{name}.sql"
        endpoint = load_endpoint(path, self._catalog)
        if isinstance(endpoint, LoadError):
            return 500, str(endpoint)
        try:
            query = prepare(endpoint, {k: _text(v) for k, v in params.items()})
            return 200, json.loads(execute(self._reader, query))["data"]
        except RedpollError as exc:
            return exc.status, exc.message
        except DatabaseError as exc:  # the status and message the API would answer
            err = translate_database_error(exc)
            return err.status, err.message

    def _tokens(self) -> TokenTable:
        """The token table, created if missing on first use (its DDL runs once)."""
        if self._token_table is None:
            self._token_table = TokenTable.for_store(self.store)
        return self._token_table

    def token_list(self) -> list[dict[str, Any]]:
        return [r.describe() for r in sorted(self._tokens().load().values(), key=_by_name)]

    def token_create(self, name: str, scopes: list[str], rps: int | None) -> dict[str, Any]:
        written = self._tokens().create(name, [parse_scope(s) for s in scopes], rps)
        return {**written.records[name].describe(), "token": written.value}

    def token_refresh(self, name: str) -> dict[str, Any]:
        written = self._tokens().refresh(name)
        return {**written.records[name].describe(), "token": written.value}

    def token_revoke(self, name: str) -> None:
        self._tokens().revoke(name)

    def close(self) -> None:
        if self._ingest is not None:
            self._ingest.close()
        if self._reader is not None:
            self._reader.close()


class RemoteBackend:
    """Sends operations to a server with the configured tokens (module docstring)."""

    def __init__(self, info: ServerInfo, settings: Settings) -> None:
        fallback = settings.token or info.local_token
        self._tokens = {
            "admin": settings.admin_token or fallback,
            "read": settings.read_token or fallback,
            "append": settings.append_token or fallback,
        }
        self.url = info.url
        self.http = httpx.Client(base_url=info.url, timeout=600)

    def _call(
        self,
        method: str,
        path: str,
        role: str = "admin",
        body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._tokens[role]}"}
        try:
            return self.http.request(method, path, json=body, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RedpollError(f"the running server did not answer ({exc})") from exc

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        response = self._call(method, "/redpoll/v1/admin" + path, body=body)
        _raise_for_error(response)
        return response

    def migrate_status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._admin("GET", "/migrations").json()
        return result

    def migrate_up(self, to: int | None) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "/migrations/up", {"to": to}).json()
        for line in result.get("log", []):
            _echo(line)
        return result

    def migrate_unlock(self) -> bool:
        return bool(self._admin("POST", "/migrations/unlock").json()["removed"])

    def sql(self, query: str, output: str) -> bytes:
        return self._admin("POST", "/sql", {"query": query, "format": output}).content

    def backfill(self, view: str) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "/backfill", {"view": view}).json()
        return result

    def erase(self, key: str, value: str) -> dict[str, Any]:
        """`POST /redpoll/v1/admin/erase`, then wait for its job (`GET /v0/jobs/<id>`)."""
        job: dict[str, Any] = self._admin("POST", "/erase", {key: value}).json()
        while job["status"] in ("waiting", "working"):
            time.sleep(0.2)
            response = self._call("GET", f"/v0/jobs/{quote(job['id'])}")
            _raise_for_error(response)
            job = response.json()
        if job["status"] != "done":
            raise RedpollError(str(job.get("error") or f"the erasure ended {job['status']}"))
        return {"key": job.get("key", key), "removed": job.get("removed", {})}

    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]:
        response = self._call(
            "POST",
            "/v0/events",
            "append",
            params={"name": datasource, "wait": "true", "line_offset": line_offset},
            content=ndjson,
        )
        _raise_for_error(response)
        result: dict[str, int] = response.json()
        return result

    def run_endpoint(self, name: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        response = self._call("GET", f"/v0/pipes/{name}.json", "read", params=dict(params))
        try:
            body = response.json()
        except ValueError:  # not our envelope (a proxy's error page)
            return response.status_code, response.text
        return response.status_code, body.get("data") if response.is_success else body.get("error")

    def _tokens_api(
        self, method: str, path: str = "", params: dict[str, Any] | None = None
    ) -> httpx.Response:
        response = self._call(method, "/v0/tokens" + path, params=params)
        _raise_for_error(response)
        return response

    def token_list(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._tokens_api("GET").json()["tokens"]
        return listed

    def token_create(self, name: str, scopes: list[str], rps: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name, "scope": scopes}
        if rps is not None:
            params["rps"] = rps
        created: dict[str, Any] = self._tokens_api("POST", "/", params).json()
        return created

    def token_refresh(self, name: str) -> dict[str, Any]:
        refreshed: dict[str, Any] = self._tokens_api("POST", f"/{quote(name)}/refresh").json()
        return refreshed

    def token_revoke(self, name: str) -> None:
        self._tokens_api("DELETE", f"/{quote(name)}")

    def ingest_status(self) -> dict[str, Any]:
        """The server's Kafka consumers and per-data-source counters."""
        result: dict[str, Any] = self._admin("GET", "/ingest/status").json()
        return result

    def close(self) -> None:
        self.http.close()


def running_server(settings: Settings) -> tuple[ServerInfo, RemoteBackend] | None:
    """The `redpoll serve` process holding this project's embedded store, if any."""
    info = _server_info(settings)
    return None if info is None else (info, RemoteBackend(info, settings))


@contextlib.contextmanager
def open_backend(settings: Settings, role: str) -> Iterator[Backend]:
    """The backend for one command: the server named by `server_url`, else the running
    server's if it holds the store, else the store itself."""
    if settings.server_url:
        remote = RemoteBackend(ServerInfo(0, settings.server_url.rstrip("/"), ""), settings)
        print(f"(through the server at {remote.url})", file=sys.stderr)
        try:
            yield remote
        finally:
            remote.close()
        return
    server = running_server(settings)
    if server is not None:
        info, remote = server
        print(f"(through the running server, pid {info.pid}, {info.url})", file=sys.stderr)
        try:
            yield remote
        finally:
            remote.close()
        return
    with Store.open(settings, role) as store:
        backend = LocalBackend(store)
        try:
            yield backend
        finally:
            backend.close()


@contextlib.contextmanager
def open_scratch_backend(settings: Settings, role: str) -> Iterator[Backend]:
    """A local backend on a throwaway embedded store with the project's migrations.

    Never the project's own store: `Store.open_scratch` in a temporary directory, deleted
    on exit. Fixture data has fixed timestamps, so the tables' TTLs (relative to the wall
    clock, e.g. `trending`'s 90 days) are removed on this copy: rows never expire here.
    """
    work = Path(tempfile.mkdtemp(prefix="redpoll-scratch-"))
    try:
        with Store.open_scratch(
            settings.project_dir, work / "data", "redpoll_scratch", role
        ) as store:
            store.migrations().up()
            db = store.target.database
            with store.admin_lock:
                rows = store.admin.query(
                    "SELECT name FROM system.tables WHERE database = {db:String} "
                    "AND engine LIKE '%MergeTree' AND create_table_query LIKE '% TTL %'",
                    parameters={"db": db},
                ).result_rows
                for (table,) in rows:
                    store.admin.command(f"ALTER TABLE {db}.`{table}` REMOVE TTL")
            backend = LocalBackend(store)
            try:
                yield backend
            finally:
                backend.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise RedpollError(message, status=response.status_code)


def _text(value: Any) -> Any:
    """A fixture's YAML value as the query string would carry it."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _by_name(record: TokenRecord) -> str:
    return record.name


def _echo(message: str) -> None:
    print(message, file=sys.stderr)
