"""An exact result cache for endpoint answers (docs/adr/0020-exact-result-cache.md).

An answer is reused only while the query would return the same bytes now:

* **Key**: the endpoint (name and file text), the request's template parameters as the
  template receives them (only the names it declares, sorted), the output format, `q`
  and the JSON quoting flag. Rendering is a pure function of those, so a hit renders
  nothing. The entry keeps the rendered query (`executor.Prepared`) too: when the answer
  went stale the same SQL runs again without rendering.
* **Data versions**: an answer is stored with the versions (`ingest/versions.py`) of the
  tables its SQL reads and of every table upstream of them (`dependencies.TableGraph`),
  read BEFORE the query ran, and stored only if they are unchanged once it finished.
  Writers bump after their rows are visible and before they acknowledge, so a request
  that starts after an acknowledged write never gets an answer older than that write.
* **Clock**: a query calling `now()`/`today()` is keyed by the current second too
  (ClickHouse's clock functions have one-second resolution); stored only if the second
  did not change during the query.
* **Not cached exactly** (served with `"cache": "off"`): per-call functions (`rand()`,
  `now64()`, `dictGet()` ...), tables Redpoll writes without versions (`unversioned`, e.g.
  the call log's), SQL that cannot be parsed, Parquet answers carrying a query id.
* **TTL mode** (`-- cache_ttl: N` in the endpoint file): for data changed behind
  Redpoll's back. An answer is served for at most N seconds, still dropped at once by
  Redpoll's own writes; clock and per-call functions and unversioned tables are then
  accepted (the author chose the bound).

Per response: `queryID()` is a bound parameter (`analysis.substitute_query_id`), so the
stored answer is kept split at its id and each response joins it with an id of its own;
a JSON answer's `statistics` are rewritten with this response's `elapsed` and
`"cache": "hit" | "miss" | "off"`.

Concurrent identical misses run the query once (single flight, keyed by the versions
read, so a request arriving after a write never takes an answer computed before it); an
error reaches every waiter and is not cached. Memory is bounded by bytes (LRU).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from redpoll.endpoints.analysis import FunctionClasses
from redpoll.endpoints.dependencies import TableGraph

if TYPE_CHECKING:
    from redpoll.endpoints.executor import Prepared, Query
    from redpoll.endpoints.model import Endpoint

__all__ = (
    "Answer",
    "CacheStats",
    "ResultCache",
    "Versions",
    "request_key",
    "with_cache_status",
)

Key = tuple[Hashable, ...]
#: bytes an entry costs besides its answer and SQL (key tuple, objects), roughly
ENTRY_OVERHEAD = 512
HIT, MISS, OFF = "hit", "miss", "off"
_STATISTICS = b'"statistics"'
_NUMBER = {
    name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*([-+0-9.eE]+)')
    for name in ("elapsed", "rows_read", "bytes_read")
}


class Versions(Protocol):
    """`ingest/versions.py` `DataVersions`, as the cache reads it."""

    def of(self, tables: Iterable[str]) -> tuple[int, ...]: ...


def request_key(
    endpoint: Endpoint,
    params: Mapping[str, Any],
    fmt: str,
    q: str | None,
    quote_64bit: bool,
) -> Key:
    """The cache key of one request: what `render` and the output depend on.

    Values are normalized as `template.to_args` hands them to the template (text; a
    repeated parameter as a tuple; one-element lists as their element), and only the
    parameters the template declares count, so `?limit=5&utm=x` and `?limit=5` share an
    answer. The endpoint's file text stands for its version (a changed file is another
    key; the text object is shared, not copied).
    """
    items: list[tuple[str, Any]] = []
    for spec in endpoint.params:  # sorted by name (compiler._extract_params)
        value = params.get(spec.name)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = str(value[0]) if len(value) == 1 else tuple(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        else:
            value = str(value)
        items.append((spec.name, value))
    return (endpoint.name, endpoint.source, tuple(items), fmt, q, quote_64bit)


class Answer:
    """A stored answer: the body split at the query id it carries (when it has one),
    and a JSON answer's statistics apart, so a response is one join and a short tail."""

    __slots__ = ("elapsed", "parts", "pretty", "size", "stats")

    def __init__(self, body: bytes, fmt: str, run_id: str | None) -> None:
        head = body
        self.stats: tuple[int, int] | None = None
        self.elapsed = 0.0
        self.pretty = True
        if fmt == "json":
            at = body.rfind(_STATISTICS)
            if at >= 0:
                tail = body[at:]
                found = {k: p.search(tail) for k, p in _NUMBER.items()}
                if all(found.values()):
                    head = body[:at]
                    self.elapsed = float(found["elapsed"].group(1))  # type: ignore[union-attr]
                    self.stats = (
                        int(found["rows_read"].group(1)),  # type: ignore[union-attr]
                        int(found["bytes_read"].group(1)),  # type: ignore[union-attr]
                    )
                    self.pretty = b"\n" in tail
        self.parts: tuple[bytes, ...] = tuple(head.split(run_id.encode())) if run_id else (head,)
        self.size = len(body)

    def render(self, run_id: str | None, status: str, elapsed: float | None) -> bytes:
        """The body for one response: its own id joined in, statistics of this response
        (`elapsed`: None keeps ClickHouse's; a hit reads no rows)."""
        head = run_id.encode().join(self.parts) if run_id else self.parts[0]
        if self.stats is None:
            return head
        rows, nbytes = self.stats if status != HIT else (0, 0)
        return head + _statistics(
            self.elapsed if elapsed is None else elapsed, rows, nbytes, status, self.pretty
        )


def _statistics(elapsed: float, rows: int, nbytes: int, status: str, pretty: bool) -> bytes:
    if pretty:  # ClickHouse's own layout (FORMAT JSON)
        return (
            f'"statistics":\n\t{{\n\t\t"elapsed": {elapsed!r},\n\t\t"rows_read": {rows},\n'
            f'\t\t"bytes_read": {nbytes},\n\t\t"cache": "{status}"\n\t}}\n}}\n'
        ).encode()
    return (
        f'"statistics":{{"elapsed":{elapsed!r},"rows_read":{rows},"bytes_read":{nbytes},'
        f'"cache":"{status}"}}}}\n'
    ).encode()


def with_cache_status(body: bytes, fmt: str, status: str) -> bytes:
    """A JSON answer with `"cache": <status>` in its statistics (other formats as is)."""
    if fmt != "json":
        return body
    answer = Answer(body, fmt, None)
    return answer.render(None, status, None) if answer.stats is not None else body


@dataclasses.dataclass
class CacheStats:
    """Counters since start (Prometheus reads them at scrape time: api/metrics.py)."""

    hits: int = 0
    misses: int = 0
    #: answered without the cache: the query is not cacheable (see the module docstring)
    bypassed: int = 0
    #: answers dropped to stay under `max_bytes`
    evictions: int = 0
    #: answers found stale (a write, the clock's second or the TTL) and dropped
    stale: int = 0
    #: answers not stored because a write landed while their query ran
    raced: int = 0


class _Entry:
    __slots__ = ("answer", "deps", "expires", "prepared", "second", "size", "versions")

    def __init__(self, prepared: Prepared, deps: tuple[str, ...]) -> None:
        self.prepared = prepared
        self.deps = deps
        self.answer: Answer | None = None
        self.versions: tuple[int, ...] = ()
        self.second: int | None = None
        self.expires: float | None = None
        self.size = ENTRY_OVERHEAD + prepared.size


class _LeaderGone(Exception):
    """The request running a shared miss was cancelled: its waiters run it themselves."""


class ResultCache:
    """Answers by request key, bounded by bytes; one per app (`AppState.result_cache`)."""

    def __init__(
        self,
        max_bytes: int,
        versions: Callable[[], Versions],
        *,
        graph: TableGraph | None = None,
        classes: FunctionClasses | None = None,
        unversioned: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        versions: returns the data versions (the ingest service's, opened after this).
        graph: which tables feed which (views); an answer depends on all upstream.
        classes: which functions give a different value per call.
        unversioned: tables written without a version bump: not cached exactly.
        clock, monotonic: the wall clock (seconds, for `now()`) and the TTL clock.
        """
        self.max_bytes = max_bytes
        self.graph = graph or TableGraph()
        self.classes = classes or FunctionClasses()
        self.unversioned = frozenset(unversioned)
        self.stats = CacheStats()
        self._versions = versions
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self._bytes = 0
        self._flights: dict[Hashable, asyncio.Future[Answer]] = {}

    # --- state --------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes held (answers, kept SQL and a fixed overhead per entry)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def answers(self) -> int:
        """Entries holding an answer (the others keep only their rendered query)."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.answer is not None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def set_graph(self, graph: TableGraph) -> None:
        """New view graph (endpoint reload, after migrations): drop everything."""
        self.graph = graph
        self.clear()

    # --- serving ------------------------------------------------------------------------
    async def serve(
        self,
        key: Key,
        *,
        fmt: str,
        ttl_s: float,
        prepare: Callable[[], Awaitable[Prepared]],
        run: Callable[[Query], Awaitable[bytes]],
        started: float,
    ) -> tuple[bytes, str]:
        """Answer one request: `(body, "hit" | "miss" | "off")`.

        Args:
            fmt: the output format's extension (json, csv, ndjson, parquet).
            ttl_s: > 0: TTL mode (see the module docstring); 0: exact.
            prepare: renders the request (called on the first miss of a key only).
            run: runs a query on a read client and returns ClickHouse's bytes.
            started: `time.perf_counter()` when the request arrived (a hit's `elapsed`).
        """
        while True:
            now_s = int(self._clock())
            entry, answer = self._lookup(key, now_s)
            if answer is not None:
                self.stats.hits += 1
                return self._respond(answer, entry, HIT, started), HIT
            prepared = entry.prepared if entry is not None else await prepare()
            deps = self.graph.upstream(prepared.analysis.tables)
            if entry is None:
                entry = self._remember(key, prepared, deps)
            if self._uncacheable(prepared, deps, fmt, ttl_s):
                self.stats.bypassed += 1
                body = await run(prepared.query())
                return with_cache_status(body, fmt, OFF), OFF
            versions = self._versions().of(deps)
            second = now_s if ttl_s <= 0 and prepared.analysis.clock else None
            flight_key = (key, versions, second)
            flight = self._flights.get(flight_key)
            if flight is not None:
                try:
                    shared = await asyncio.shield(flight)
                except _LeaderGone:
                    continue  # its leader was cancelled: look again, maybe lead
                self.stats.hits += 1
                return self._respond(shared, entry, HIT, started), HIT
            return await self._lead(key, entry, flight_key, versions, second, fmt, ttl_s, run), MISS

    async def _lead(
        self,
        key: Key,
        entry: _Entry,
        flight_key: Hashable,
        versions: tuple[int, ...],
        second: int | None,
        fmt: str,
        ttl_s: float,
        run: Callable[[Query], Awaitable[bytes]],
    ) -> bytes:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._flights[flight_key] = future
        expires = self._monotonic() + ttl_s if ttl_s > 0 else None
        prepared = entry.prepared
        run_id = uuid.uuid4()
        try:
            body = await run(prepared.query(run_id))
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else _LeaderGone())
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._flights.pop(flight_key, None)
        id_text = str(run_id) if prepared.analysis.query_id else None
        answer = Answer(body, fmt, id_text)
        if not future.done():
            future.set_result(answer)
        self.stats.misses += 1
        self._store(key, entry, answer, versions, second, expires)
        return answer.render(id_text, MISS, None)

    def _respond(self, answer: Answer, entry: _Entry | None, status: str, started: float) -> bytes:
        run_id = (
            str(uuid.uuid4()) if entry is not None and entry.prepared.analysis.query_id else None
        )
        return answer.render(run_id, status, time.perf_counter() - started)

    def _uncacheable(
        self, prepared: Prepared, deps: tuple[str, ...], fmt: str, ttl_s: float
    ) -> bool:
        analysis = prepared.analysis
        if analysis.error or (fmt == "parquet" and analysis.query_id):
            return True  # tables unknown; a query id inside Parquet cannot be replaced
        if ttl_s > 0:
            return False
        if analysis.volatile:
            return True
        dep_set = set(deps)
        return bool(dep_set & self.unversioned or dep_set & self.graph.opaque)

    # --- the LRU ------------------------------------------------------------------------
    def _lookup(self, key: Key, now_s: int) -> tuple[_Entry | None, Answer | None]:
        """The entry of `key` and its answer if still valid (a stale one is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None, None
            self._entries.move_to_end(key)
            answer = entry.answer
            if answer is None:
                return entry, None
            if (
                (entry.expires is not None and self._monotonic() >= entry.expires)
                or (entry.second is not None and entry.second != now_s)
                or self._versions().of(entry.deps) != entry.versions
            ):
                self.stats.stale += 1
                self._drop_answer(entry)
                return entry, None
            return entry, answer

    def _remember(self, key: Key, prepared: Prepared, deps: tuple[str, ...]) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # another request rendered it meanwhile
                return entry
            entry = _Entry(prepared, deps)
            self._entries[key] = entry
            self._bytes += entry.size
            self._evict()
            return entry

    def _store(
        self,
        key: Key,
        entry: _Entry,
        answer: Answer,
        versions: tuple[int, ...],
        second: int | None,
        expires: float | None,
    ) -> None:
        """Keep `answer` if nothing it depends on changed since `versions` were read."""
        if (
            self.max_bytes <= 0
            or ENTRY_OVERHEAD + entry.prepared.size + answer.size > self.max_bytes
        ):
            return
        with self._lock:
            if self._versions().of(entry.deps) != versions or (
                second is not None and int(self._clock()) != second
            ):
                self.stats.raced += 1
                return
            current = self._entries.get(key)
            if current is not entry:  # evicted (and maybe rendered again) meanwhile
                if current is not None:
                    self._bytes -= current.size
                self._entries[key] = entry
                self._bytes += entry.size
            self._drop_answer(entry)
            entry.answer = answer
            entry.versions = versions
            entry.second = second
            entry.expires = expires
            entry.size += answer.size
            self._bytes += answer.size
            self._entries.move_to_end(key)
            self._evict()

    def _drop_answer(self, entry: _Entry) -> None:
        if entry.answer is not None:
            entry.size -= entry.answer.size
            self._bytes -= entry.answer.size
            entry.answer = None

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
            if oldest.answer is not None:
                self.stats.evictions += 1
