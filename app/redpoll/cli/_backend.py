"""Where a CLI command runs its operation: in this process, or through a running server.

chDB lets one process open a data directory (ADR 0006). When `redpoll serve` holds the
project's embedded store, commands send the operation to its admin API instead; when
another non-server process holds it, `Store.open` fails fast with `StoreBusy`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

import httpx

from redpoll.clickhouse.lock import ServerInfo, read_server_info
from redpoll.clickhouse.query import run_admin_sql
from redpoll.errors import RedpollError
from redpoll.ingest.service import IngestService
from redpoll.ingest.writer import check_view
from redpoll.settings import Settings
from redpoll.store import Store

__all__ = ("Backend", "open_backend")


class Backend(Protocol):
    def migrate_status(self) -> list[dict[str, Any]]: ...
    def migrate_up(self, to: int | None) -> dict[str, Any]: ...
    def migrate_unlock(self) -> bool: ...
    def sql(self, query: str, output: str) -> bytes: ...
    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]: ...
    def backfill(self, view: str) -> dict[str, Any]: ...


class LocalBackend:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._ingest: IngestService | None = None

    def migrate_status(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.store.migrations().status()]

    def migrate_up(self, to: int | None) -> dict[str, Any]:
        applied = self.store.migrations().up(to=to, log=_echo)
        return {"applied": [s.as_dict() for s in applied]}

    def migrate_unlock(self) -> bool:
        return self.store.migrations().unlock()

    def sql(self, query: str, output: str) -> bytes:
        return run_admin_sql(self.store, query, output)

    def _service(self) -> IngestService:
        """The ingestion service (one events writer), opened on first use."""
        if self._ingest is None:
            self._ingest = IngestService(
                self.store.target, self.store.settings.project_dir, settings=self.store.settings
            )
        return self._ingest

    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]:
        return self._service().ingest(datasource, ndjson, first_line=line_offset + 1).as_dict()

    def backfill(self, view: str) -> dict[str, Any]:
        started = time.perf_counter()
        check_view(view)
        self._service().rebuild_view(view)
        return {"view": view, "seconds": round(time.perf_counter() - started, 3)}

    def close(self) -> None:
        if self._ingest is not None:
            self._ingest.close()


class RemoteBackend:
    """Sends operations to the admin API of the server that holds the store."""

    def __init__(self, info: ServerInfo) -> None:
        self.events = httpx.Client(base_url=info.url, timeout=600)
        self.client = httpx.Client(
            base_url=info.url + "/redpoll/v1/admin",
            timeout=600,
            headers={"Authorization": f"Bearer {info.admin_token}"},
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RedpollError(f"the running server did not answer ({exc})") from exc
        _raise_for_error(response)
        return response

    def migrate_status(self) -> list[dict[str, Any]]:
        return self._call("GET", "/migrations").json()

    def migrate_up(self, to: int | None) -> dict[str, Any]:
        result = self._call("POST", "/migrations/up", {"to": to}).json()
        for line in result.get("log", []):
            _echo(line)
        return result

    def migrate_unlock(self) -> bool:
        return bool(self._call("POST", "/migrations/unlock").json()["removed"])

    def sql(self, query: str, output: str) -> bytes:
        return self._call("POST", "/sql", {"query": query, "format": output}).content

    def backfill(self, view: str) -> dict[str, Any]:
        return self._call("POST", "/backfill", {"view": view}).json()

    def ingest(self, datasource: str, ndjson: bytes, line_offset: int = 0) -> dict[str, int]:
        try:
            response = self.events.post(
                "/v0/events",
                params={"name": datasource, "wait": "true", "line_offset": line_offset},
                content=ndjson,
            )
        except httpx.HTTPError as exc:
            raise RedpollError(f"the running server did not answer ({exc})") from exc
        return _json_or_error(response)


@contextlib.contextmanager
def open_backend(settings: Settings, role: str) -> Iterator[Backend]:
    """The backend for one command: the running server's if it holds the store."""
    if settings.is_embedded:
        info = read_server_info(settings.state_dir)
        if info is not None:
            print(f"(through the running server, pid {info.pid}, {info.url})", file=sys.stderr)
            yield RemoteBackend(info)
            return
    with Store.open(settings, role) as store:
        backend = LocalBackend(store)
        try:
            yield backend
        finally:
            backend.close()


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError):
            message = response.text
        raise RedpollError(message, status=response.status_code)


def _json_or_error(response: httpx.Response) -> dict[str, int]:
    _raise_for_error(response)
    return response.json()


def _echo(message: str) -> None:
    print(message, file=sys.stderr)
