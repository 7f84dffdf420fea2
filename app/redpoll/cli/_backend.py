"""Where a CLI command runs its operation: in this process, or through a running server.

chDB lets one process open a data directory (ADR 0006). When `redpoll serve` holds the
project's embedded store, commands send the operation to its admin API instead; when
another non-server process holds it, `Store.open` fails fast with `StoreBusy`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import httpx

from redpoll.clickhouse.lock import ServerInfo, read_server_info
from redpoll.clickhouse.query import run_admin_sql
from redpoll.errors import RedpollError
from redpoll.settings import Settings
from redpoll.store import Store

__all__ = ("Backend", "open_backend")


class Backend(Protocol):
    def migrate_status(self) -> list[dict[str, Any]]: ...
    def migrate_up(self, to: int | None) -> dict[str, Any]: ...
    def migrate_unlock(self) -> bool: ...
    def sql(self, query: str, output: str) -> bytes: ...


class LocalBackend:
    def __init__(self, store: Store) -> None:
        self.store = store

    def migrate_status(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.store.migrations().status()]

    def migrate_up(self, to: int | None) -> dict[str, Any]:
        applied = self.store.migrations().up(to=to, log=_echo)
        return {"applied": [s.as_dict() for s in applied]}

    def migrate_unlock(self) -> bool:
        return self.store.migrations().unlock()

    def sql(self, query: str, output: str) -> bytes:
        return run_admin_sql(self.store, query, output)


class RemoteBackend:
    """Sends operations to the admin API of the server that holds the store."""

    def __init__(self, info: ServerInfo) -> None:
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
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError):
                message = response.text
            raise RedpollError(message, status=response.status_code)
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
        yield LocalBackend(store)


def _echo(message: str) -> None:
    print(message, file=sys.stderr)
