"""Which materialized views feed which tables, read from the store itself.

Used by `redpoll evaluate` to leave out, in its throwaway store, the views whose output
no evaluated query reads, and their tables, so that a query reaching one fails loudly
(the pair views cost most of the ingest time, and the default variants of the
recommendation endpoints read only some of them). Read from `system.tables`, so views a
project adds are handled like the bundled ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from redpoll.clickhouse.client import Client

__all__ = (
    "MaterializedView",
    "materialized_views",
    "view_target_and_reads",
    "views_not_feeding",
)


@dataclasses.dataclass(frozen=True)
class MaterializedView:
    name: str
    target: str | None  # the `TO` table; None for a view with an inner table
    reads: frozenset[str]  # every table its SELECT names (source, joins, subqueries)


def materialized_views(client: Client, database: str) -> list[MaterializedView]:
    """The materialized views of `database` with their target and the tables they read."""
    rows = client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = {db:String} AND engine = 'MaterializedView' ORDER BY name",
        parameters={"db": database},
    ).result_rows
    views = []
    for name, create in rows:
        target, reads = view_target_and_reads(sqlglot.parse_one(create, dialect="clickhouse"))
        views.append(MaterializedView(name, target, reads))
    return views


def view_target_and_reads(statement: exp.Expr) -> tuple[str | None, frozenset[str]]:
    """A parsed CREATE [MATERIALIZED] VIEW's `TO` table and the tables its SELECT names
    (CTE names left out); also how materialized_views/*.sql files are read."""
    to_table = statement.find(exp.ToTableProperty)
    select = statement.expression
    ctes = {cte.alias_or_name for cte in select.find_all(exp.CTE)}
    reads = frozenset(
        t.name for t in select.find_all(exp.Table) if t.name and (t.db or t.name not in ctes)
    )
    return (to_table.this.name if to_table else None), reads


def views_not_feeding(
    views: Iterable[MaterializedView], tables: Iterable[str]
) -> tuple[list[str], list[str]]:
    """The views that contribute nothing to any of `tables`, directly or through other
    views and the tables their SELECTs read (e.g. the dedup index), and the tables only
    those views write (nothing needed reads them).

    A view without a `TO` table is always kept (its output cannot be traced).
    """
    views = list(views)
    needed = set(tables)
    keep = {v.name for v in views if v.target is None}
    needed |= {t for v in views if v.target is None for t in v.reads}
    changed = True
    while changed:
        changed = False
        for view in views:
            if view.name not in keep and view.target in needed:
                keep.add(view.name)
                needed |= view.reads
                changed = True
    unread = [v.name for v in views if v.name not in keep]
    written_by_kept = {v.target for v in views if v.name in keep}
    orphans = sorted(
        {
            v.target
            for v in views
            if v.name not in keep and v.target and v.target not in needed | written_by_kept
        }
    )
    return unread, orphans
