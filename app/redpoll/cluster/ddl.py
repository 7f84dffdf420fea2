"""Migrations rendered for a ClickHouse cluster from the same files as a single node.

Single-node rendering (`migrations/files.py:render_statements`) is untouched; this module
rewrites its output per statement (docs/adr/0023-cluster-sharding.md):

* Objects fed by events (the tables of sql/events.sql and every table or view that reads
  them, directly or through another view: `sharded_objects`) are created in the shard
  database `<database>_shard` on every node; their `*MergeTree` engines become
  `Replicated*MergeTree` with the Keeper path `/clickhouse/tables/{shard}/<db>/<table>`
  and the replica `{replica}` (macros of each node's config); each such table gets a
  `Distributed` twin of the same name in `<database>`, which is what endpoints read, so
  their SQL does not change. `events`' twin has the routing key as its sharding key
  (`routing.SHARDING_KEY_SQL`).
* Everything else (the catalog, request logs, trained vectors) stays whole in
  `<database>` on every node. A `*MergeTree` table that feeds a materialized view there
  (`items` -> `items_latest`, a Join table, which cannot be replicated) keeps its engine
  and gets `<name>_all_nodes`, a `Distributed` table over the cluster `<cluster>_all`
  (one shard holding every node, `internal_replication` false): one INSERT through it
  reaches every node and fires each node's own views. Any other `*MergeTree` table
  becomes `Replicated*MergeTree` with one Keeper path for the whole cluster
  (`/clickhouse/tables/all/...`, replica `{shard}-{replica}`): every node holds it all.
* The event-fed objects must not read catalog tables, and data statements (INSERT,
  TRUNCATE, ...) on them are refused: a migration runs on one node, so they would touch
  one shard only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from redpoll.cluster.keys import SHARDING_KEY_SQL
from redpoll.errors import MigrationError
from redpoll.migrations.files import MigrationFile, Statement, render_statements, template_variables

__all__ = (
    "EVENT_TABLES",
    "ClusterLayout",
    "fanout_tables",
    "layout_for",
    "render_cluster_statements",
    "replicated_on_every_node",
    "shard_database",
    "sharded_objects",
)

#: sql/events.sql's tables: the roots of everything that is sharded.
EVENT_TABLES = frozenset({"events_landing", "events", "event_ids"})
_PLACEHOLDER_DB = "redpoll_placeholder_db"
_ENGINE = re.compile(
    r"ENGINE\s*=\s*(?P<engine>(?!Replicated)\w*MergeTree)\b(?:\s*\((?P<args>[^()]*)\))?"
)
_ANY_ENGINE = re.compile(r"ENGINE\s*=\s*(\w+)")
_COMMENT = re.compile(r"--[^\n]*")


def _code(sql: str) -> str:
    """`sql` with its `--` comments blanked (same length, so positions still match)."""
    return _COMMENT.sub(lambda m: " " * len(m.group(0)), sql)


def shard_database(database: str) -> str:
    """Where a node keeps its shard's own tables (written by that shard's writer)."""
    return f"{database}_shard"


@dataclasses.dataclass(frozen=True)
class ClusterLayout:
    """What the cluster rendering needs besides the migration files.

    Attributes:
        database: the database endpoints and everything but event-fed objects use.
        cluster: the `remote_servers` cluster of all shards; `<cluster>_all` must list
            every node as replicas of one shard (deploy/cluster/ has both).
        sharded: names of the event-fed objects (`sharded_objects`).
        fanout: tables written to every node through `<name>_all_nodes` (those that
            feed a view outside the shard database, `fanout_tables`).
        twins: sharded tables with a `Distributed` twin (the MergeTree ones): an ALTER
            of their columns is repeated on the twin.
    """

    database: str
    cluster: str
    sharded: frozenset[str]
    fanout: frozenset[str] = frozenset()
    twins: frozenset[str] = frozenset()

    @property
    def shard_database(self) -> str:
        return shard_database(self.database)


@dataclasses.dataclass(frozen=True)
class _Info:
    verb: str  # create, drop, alter, other
    kind: str  # TABLE, VIEW, MATERIALIZED VIEW ('' unless created)
    names: tuple[str, ...]  # the objects the statement creates, drops or changes
    reads: frozenset[str]  # other tables it names (incl. an MV's TO target)
    to: str = ""  # a materialized view's TO target
    merge_tree: bool = False  # a created table of the MergeTree family


def _table_name(node: exp.Expression) -> str:
    table = node.this if isinstance(node, exp.Schema) else node
    return str(table.name)


def _inspect(sql: str, where: str) -> _Info:
    try:
        parsed = sqlglot.parse_one(sql, dialect="clickhouse")
    except ParseError as exc:
        raise MigrationError(f"{where}: sqlglot cannot parse the statement: {exc}") from exc
    ctes = {cte.alias for cte in parsed.find_all(exp.CTE)}
    every = {t.name for t in parsed.find_all(exp.Table) if t.name and t.name not in ctes}
    if isinstance(parsed, exp.Create):
        name = _table_name(parsed.this)
        props = parsed.args.get("properties")
        materialized = props is not None and any(
            isinstance(p, exp.MaterializedProperty) for p in props.expressions
        )
        kind = "MATERIALIZED VIEW" if materialized else str(parsed.kind or "")
        to = (
            next((p.this.name for p in props.expressions if isinstance(p, exp.ToTableProperty)), "")
            if props
            else ""
        )
        merge_tree = kind == "TABLE" and _has_merge_tree(sql)
        return _Info("create", kind, (name,), frozenset(every - {name}), to, merge_tree)
    if isinstance(parsed, exp.Drop):
        names = tuple(t.name for t in (parsed.args.get("tables") or [parsed.this]))
        return _Info("drop", "", names, frozenset())
    if isinstance(parsed, exp.Alter):
        name = _table_name(parsed.this)
        return _Info("alter", "", (name,), frozenset(every - {name}))
    return _Info("other", "", tuple(sorted(every)), frozenset())


def _infos(migrations: Sequence[MigrationFile]) -> list[_Info]:
    return [
        _inspect(s.sql, f"{m.path}:{s.line}")
        for m in migrations
        for s in render_statements(m, template_variables(_PLACEHOLDER_DB, ""))
    ]


def sharded_objects(migrations: Sequence[MigrationFile]) -> frozenset[str]:
    """The objects fed by events: sql/events.sql's tables, every view that reads one,
    and every view's target table, to a fixed point over all statements of all files
    (a table is created before the view that fills it)."""
    infos = _infos(migrations)
    sharded = set(EVENT_TABLES)
    changed = True
    while changed:
        changed = False
        for info in infos:
            if info.verb != "create" or info.kind not in {"VIEW", "MATERIALIZED VIEW"}:
                continue
            fed = {*info.names, info.to} - {""}
            if info.reads & sharded and not fed <= sharded:
                sharded |= fed  # a view of events and the table it fills
                changed = True
    return frozenset(sharded)


def _replicated(
    sql: str, layout: ClusterLayout, table: str, where: str, *, everywhere: bool = False
) -> str:
    match = _ENGINE.search(_code(sql))
    if match is None:
        engine = _ANY_ENGINE.search(_code(sql))
        if (
            engine
            and "MergeTree" in engine.group(1)
            and not engine.group(1).startswith("Replicated")
        ):
            raise MigrationError(f"{where}: cannot rewrite the engine of {table} for a cluster")
        return sql
    if everywhere:  # one replica set of every node
        path, replica = f"'/clickhouse/tables/all/{layout.database}/{table}'", "'{shard}-{replica}'"
    else:
        path, replica = (
            f"'/clickhouse/tables/{{shard}}/{layout.shard_database}/{table}'",
            "'{replica}'",
        )
    args = ", ".join(a for a in (path, replica, (match["args"] or "").strip()) if a)
    return f"{sql[: match.start()]}ENGINE = Replicated{match['engine']}({args}){sql[match.end() :]}"


def replicated_on_every_node(sql: str, database: str, table: str) -> str:
    """A `CREATE TABLE` of the MergeTree family made in code, not in a migration (the
    token table, tokens/table.py), with the engine of the request logs: one replica set
    of every node (`/clickhouse/tables/all/<database>/<table>`), so a row written on one
    node is read on all."""
    layout = ClusterLayout(database, "", frozenset())
    return _replicated(sql, layout, table, table, everywhere=True)


def _has_merge_tree(sql: str) -> bool:
    engine = _ANY_ENGINE.search(_code(sql))
    return engine is not None and engine.group(1).endswith("MergeTree")


def _distributed(layout: ClusterLayout, table: str, cluster: str, source_db: str, key: str) -> str:
    args = f"`{cluster}`, {source_db}, {table}" + (f", {key}" if key else "")
    return (
        f"CREATE TABLE IF NOT EXISTS {layout.database}.{table} ON CLUSTER `{layout.cluster}`"
        f" AS {source_db}.{table}\nENGINE = Distributed({args})"
    )


def render_cluster_statements(migration: MigrationFile, layout: ClusterLayout) -> list[Statement]:
    """The statements a cluster runs for `migration` (once, on any node: every
    statement is `ON CLUSTER`).

    Raises:
        MigrationError: a statement this mode cannot place (see the module docstring).
    """
    on_main = render_statements(migration, template_variables(layout.database, layout.cluster))
    on_shard = render_statements(
        migration, template_variables(layout.shard_database, layout.cluster)
    )
    out: list[tuple[int, str]] = []
    uses_shard = False
    for main, local in zip(on_main, on_shard, strict=True):
        where = f"{migration.path}:{main.line}"
        info = _inspect(main.sql, where)
        sharded = [n for n in info.names if n in layout.sharded]
        if not sharded:
            if info.verb == "create" and info.kind == "TABLE" and _has_merge_tree(main.sql):
                name = info.names[0]
                if name in layout.fanout:
                    out += [(main.line, main.sql), (main.line, _fanout(layout, name))]
                else:
                    out.append(
                        (main.line, _replicated(main.sql, layout, name, where, everywhere=True))
                    )
            else:
                out.append((main.line, main.sql))
            continue
        if len(sharded) != len(info.names):
            raise MigrationError(f"{where}: one statement names sharded and other objects")
        if info.reads - layout.sharded:
            raise MigrationError(
                f"{where}: {info.names[0]} is fed by events but reads "
                f"{sorted(info.reads - layout.sharded)}, which are not sharded"
            )
        uses_shard = True
        if info.verb == "create":
            name = info.names[0]
            if info.kind == "TABLE":
                out.append((main.line, _replicated(local.sql, layout, name, where)))
                if _has_merge_tree(local.sql):
                    key = SHARDING_KEY_SQL if name == "events" else ""
                    out.append(
                        (
                            main.line,
                            _distributed(layout, name, layout.cluster, layout.shard_database, key),
                        )
                    )
            else:
                out.append((main.line, local.sql))
        elif info.verb == "drop":
            out.append((main.line, local.sql))
            for name in info.names:
                twin = f"{layout.database}.{name} ON CLUSTER `{layout.cluster}`"
                out.append((main.line, f"DROP TABLE IF EXISTS {twin}"))
        elif (
            info.verb == "alter"
            and info.names[0] in layout.twins
            and re.search(r"\bCOLUMN\b", _code(main.sql), re.IGNORECASE)
        ):
            out.append((main.line, local.sql))
            out.append((main.line, main.sql))  # the Distributed twin's columns follow
        elif info.verb == "alter":
            out.append((main.line, local.sql))
        else:
            raise MigrationError(
                f"{where}: data statements on sharded tables ({', '.join(sharded)}) run on one"
                " node only: not supported in cluster mode (use `redpoll backfill` per shard)"
            )
    if uses_shard:
        create = (
            f"CREATE DATABASE IF NOT EXISTS {layout.shard_database} ON CLUSTER `{layout.cluster}`"
        )
        out.insert(0, (out[0][0] if out else 1, create))
    return [Statement(i + 1, line, sql) for i, (line, sql) in enumerate(out)]


def _fanout(layout: ClusterLayout, table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {layout.database}.{table}_all_nodes"
        f" ON CLUSTER `{layout.cluster}` AS {layout.database}.{table}\n"
        f"ENGINE = Distributed(`{layout.cluster}_all`, {layout.database}, {table})"
    )


def fanout_tables(migrations: Sequence[MigrationFile], sharded: frozenset[str]) -> frozenset[str]:
    """Tables outside the shard database that a materialized view there reads: each
    node's view fires only on an INSERT into that node, so they are written to all."""
    return frozenset(
        table
        for info in _infos(migrations)
        if info.kind == "MATERIALIZED VIEW" and not set(info.names) & sharded
        for table in info.reads - sharded
        if table not in info.names and table != info.to
    )


def layout_for(migrations: Iterable[MigrationFile], database: str, cluster: str) -> ClusterLayout:
    """The layout of a project's migrations (`sharded_objects` over all of them)."""
    files = list(migrations)
    sharded = sharded_objects(files)
    twins = frozenset(
        info.names[0] for info in _infos(files) if info.merge_tree and info.names[0] in sharded
    )
    return ClusterLayout(database, cluster, sharded, fanout_tables(files, sharded), twins)
