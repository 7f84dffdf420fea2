"""Which tables an answer depends on: the tables it reads and every table feeding them.

Writers bump the version of the table they write (`ingest/versions.py`): `events_landing`
for the events data source, `items` for the catalog. Endpoints read the views' tables
(`trending`, `buyer_pairs`, `items_latest` ...), which materialized views fill from
those. So the result cache guards an answer by the versions of the tables it reads AND of
every table upstream of them: a write anywhere up the chain (`events_landing` ->
`events` -> `trending`) invalidates it, whichever table name the writer bumped.

The graph is the union of the project's schema files (`materialized.schema_files`:
`sql/*.sql` and `materialized_views/*.sql`, the views' `TO` tables and what their
SELECTs read) and the views that exist in the database (`system.tables`: views added by
migrations or by hand), each edge `table <- table its view reads`. A plain VIEW or a
view without `TO` is an edge from its own name.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import sqlglot
from sqlglot.errors import ParseError, TokenError

from redpoll.clickhouse.views import view_target_and_reads
from redpoll.errors import ConfigError
from redpoll.materialized import schema_files

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = ("SELF_WRITING_ENGINES", "TableGraph")

#: table engines whose rows change without a write by Redpoll (the server consumes a
#: queue or flushes a buffer) or that read other tables (Merge, Distributed): a table
#: fed by one has no data version, so answers over it are not cached exactly
SELF_WRITING_ENGINES = frozenset(
    {
        "Kafka",
        "RabbitMQ",
        "NATS",
        "S3Queue",
        "AzureQueue",
        "FileLog",
        "Buffer",
        "Merge",
        "Distributed",
        "Dictionary",
    }
)
_REFRESH = re.compile(r"\bREFRESH\s+(EVERY|AFTER)\b", re.IGNORECASE)

log = logging.getLogger("redpoll.endpoints.cache")


class TableGraph:
    """`feeds[t]`: the tables whose rows flow into `t` through one view."""

    def __init__(
        self, feeds: Mapping[str, Iterable[str]] | None = None, opaque: Iterable[str] = ()
    ) -> None:
        """Args:
        opaque: tables without a data version: filled by the server itself (a queue
            engine, a buffer, a refreshable view), reading unknown tables (Merge,
            Distributed) or fed by a view that could not be read. Answers over them or
            over a table they feed are not cached exactly.
        """
        self.feeds: dict[str, frozenset[str]] = {
            table: frozenset(sources) for table, sources in (feeds or {}).items()
        }
        self.opaque = frozenset(opaque)
        self.upstream = functools.lru_cache(maxsize=1024)(self._upstream)

    def _upstream(self, tables: frozenset[str]) -> tuple[str, ...]:
        """`tables` and every table upstream of them, sorted (cycles are fine:
        `events` <-> `event_ids` in sql/events.sql)."""
        seen = set(tables)
        todo = list(tables)
        while todo:
            for source in self.feeds.get(todo.pop(), ()):
                if source not in seen:
                    seen.add(source)
                    todo.append(source)
        return tuple(sorted(seen))

    def union(self, other: TableGraph) -> TableGraph:
        merged: dict[str, set[str]] = {}
        for graph in (self, other):
            for table, sources in graph.feeds.items():
                merged.setdefault(table, set()).update(sources)
        return TableGraph(merged, self.opaque | other.opaque)

    @classmethod
    def from_project(cls, project_dir: Path) -> TableGraph:
        """The views declared in the project's schema files."""
        feeds: dict[str, set[str]] = {}
        try:
            files = schema_files(project_dir)
        except ConfigError as exc:  # reported by migrations; the database's views remain
            log.warning("result cache: schema files not read: %s", exc)
            return cls()
        for schema_file in files:
            for obj in schema_file.objects:
                if obj.kind != "table":
                    feeds.setdefault(obj.to or obj.name, set()).update(obj.reads)
        return cls(feeds)

    @classmethod
    def from_client(cls, client: Client, database: str) -> TableGraph:
        """The views that exist in `database` (materialized and plain)."""
        rows = client.query(
            "SELECT name, engine, create_table_query FROM system.tables"
            " WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
        feeds: dict[str, set[str]] = {}
        opaque: set[str] = set()
        for name, engine, create in rows:
            if engine in SELF_WRITING_ENGINES:
                opaque.add(name)
            if engine not in ("MaterializedView", "View"):
                continue
            if _REFRESH.search(create):  # a refreshable view rewrites its target itself
                opaque.add(name)
            try:
                parsed = sqlglot.parse_one(create, dialect="clickhouse")
                target, reads = view_target_and_reads(parsed)
            except (ParseError, TokenError, AttributeError) as exc:
                log.warning("result cache: view %s not read, its answers uncached: %s", name, exc)
                opaque.add(name)
                continue
            if name in opaque and target:
                opaque.add(target)
            feeds.setdefault(target or name, set()).update(reads)
        return cls(feeds, opaque)
