"""Build clickhouse-connect clients for embedded chDB or a ClickHouse server (ADR 0001).

This is the only module that imports `clickhouse_connect`. The URL decides the backend:
`chdb:///abs/path` opens the in-process engine, `http(s)://user:pass@host:port/db` a
server. Two roles exist (ADR 0004): *admin* clients run migrations and inserts; *read*
clients serve endpoints with `readonly=2` and result caps set when they are created.

chDB limits honoured here: one data directory per process (the lock in `lock.py` makes a
second process fail fast), and one client per thread (see `ClientPool`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import clickhouse_connect.driver.client as _driver_client
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.exceptions import Error as DriverError

from redpoll.errors import ConfigError

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = (
    "Client",
    "ClientPool",
    "DatabaseError",
    "DriverError",
    "PoolExhausted",
    "Target",
    "connect",
    "parse_url",
    "quote_identifier",
    "target_from_settings",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the per-call tag `endpoints/executor.py` puts in a query's SETTINGS clause
_RUN_TAG = re.compile(r"log_comment = 'redpoll:[0-9a-f]{32}'")


def _memoize_read_only_check() -> None:
    """Compute clickhouse-connect's read-only check once per query shape, not per call.

    Before every raw query the driver tokenizes the whole SQL in Python to decide whether
    an HTTP retry would be safe (`_query_is_read_only`): ~1.2 ms per call for
    endpoints/for_user.sql (ADR 0012). Endpoint queries of one template shape differ per
    call only in their `log_comment` tag (a string literal in SETTINGS, which cannot make
    a query read or write), so the answer is memoized per text with the tag blanked.
    A driver without that function is left alone.
    """
    check = getattr(_driver_client, "_query_is_read_only", None)
    if check is None or hasattr(check, "cache_info"):
        return

    @functools.lru_cache(maxsize=4096)
    def by_shape(query: str) -> bool:
        return bool(check(query))

    def read_only(query: str | bytes) -> bool:
        if isinstance(query, str) and len(query) < 65536:
            return by_shape(_RUN_TAG.sub("log_comment = ''", query))
        return bool(check(query))

    read_only.cache_info = by_shape.cache_info  # type: ignore[attr-defined]
    _driver_client._query_is_read_only = read_only  # type: ignore[attr-defined]


_memoize_read_only_check()


@dataclasses.dataclass(frozen=True)
class Target:
    """Where ClickHouse is: an embedded chDB path or a server address."""

    kind: str  # "chdb" or "http"
    path: str = ""
    host: str = ""
    port: int = 0
    secure: bool = False
    username: str = "default"
    password: str = ""
    database: str = "default"

    @property
    def embedded(self) -> bool:
        return self.kind == "chdb"

    def describe(self) -> str:
        """A printable form without the password."""
        if self.embedded:
            return f"chdb://{self.path} (database {self.database})"
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def parse_url(url: str, database: str = "") -> Target:
    """Parse `REDPOLL_CLICKHOUSE_URL`; `database` (if set) wins over the URL's path."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"chDB URL needs an absolute path (chdb:///abs/path): {url!r}")
        return Target(kind="chdb", path=path, database=database or "default")
    if parts.scheme in {"http", "https"}:
        secure = parts.scheme == "https"
        return Target(
            kind="http",
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if secure else 8123),
            secure=secure,
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database or parts.path.strip("/") or "default",
        )
    raise ConfigError(f"unsupported ClickHouse URL {url!r}: use chdb:///path or http(s)://host")


def quote_identifier(name: str) -> str:
    """Back-quote a database/table name after checking it is a plain identifier."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"not a valid identifier: {name!r}")
    return f"`{name}`"


def connect(
    target: Target,
    *,
    readonly: bool = False,
    settings: Mapping[str, Any] | None = None,
    create_database: bool = False,
) -> Client:
    """Open one client. Read clients get `readonly=2` (settings may still be changed per query).

    Args:
        target: from `parse_url`.
        readonly: the read role (ADR 0004).
        settings: session settings, e.g. `max_execution_time` caps for the read role.
        create_database: create `target.database` first (admin role only).
    """
    session: dict[str, Any] = dict(settings or {})
    if readonly:
        session["readonly"] = 2
    if create_database and target.database != "default":
        bootstrap = _open(dataclasses.replace(target, database="default"), {})
        try:
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(target.database)}")
        finally:
            bootstrap.close()
    return _open(target, session)


def _open(target: Target, session: dict[str, Any]) -> Client:
    if target.embedded:
        return clickhouse_connect.get_client(
            dsn=f"chdb://{target.path}", database=target.database, settings=session
        )
    return clickhouse_connect.get_client(
        host=target.host,
        port=target.port,
        secure=target.secure,
        username=target.username,
        password=target.password,
        database=target.database,
        settings=session,
        autogenerate_session_id=False,
    )


def target_from_settings(settings: Settings) -> Target:
    return parse_url(settings.effective_clickhouse_url, settings.database)


class PoolExhausted(Exception):
    """No client became free within the wait (the caller answers 429/503)."""


class ClientPool:
    """A fixed number of clients, one borrowed per call, so no client is shared by two threads.

    chDB clients must not be used from two threads at once for parameterized queries (a
    race on query parameters was observed with 4 threads); a pool of N clients on the same
    path gives N-way concurrency safely.

    A client whose call raised is closed and replaced, never reused: a chDB connection
    keeps the unread output of a failed query and prepends it to the next answer (the
    test `test_failed_query_does_not_leak_into_the_next_answer` in tests/api/test_pipes.py
    reproduces it), and an HTTP client may be left mid-stream. The replacement is opened
    lazily by the next borrower, so a failing `factory` fails that call, not the pool.
    """

    def __init__(self, factory: Callable[[], Client], size: int) -> None:
        if size < 1:
            raise ConfigError(f"a client pool needs at least one client, not {size}")
        self.size = size
        self.replaced = 0
        self._factory = factory
        self._lock = threading.Lock()
        self._clients: dict[int, Client] = {}
        self._free: queue.Queue[Client | None] = queue.Queue()
        for _ in range(size):
            self._free.put(self._new())

    def _new(self) -> Client:
        client = self._factory()
        with self._lock:
            self._clients[id(client)] = client
        return client

    def _discard(self, client: Client) -> None:
        with self._lock:
            self._clients.pop(id(client), None)
            self.replaced += 1
        with contextlib.suppress(Exception):
            client.close()

    @contextlib.contextmanager
    def borrow(self, timeout: float = 30.0) -> Iterator[Client]:
        """Lend a client for one call.

        Raises:
            PoolExhausted: none became free within `timeout` seconds.
        """
        try:
            slot = self._free.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise PoolExhausted(f"no free client within {timeout:.1f} s") from None
        try:
            client = slot if slot is not None else self._new()
        except BaseException:
            self._free.put(None)
            raise
        try:
            yield client
        except BaseException:
            self._discard(client)
            self._free.put(None)
            raise
        self._free.put(client)

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
