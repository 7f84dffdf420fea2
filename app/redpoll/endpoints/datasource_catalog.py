"""The project's data sources as the Data Sources and SQL APIs see them.

A data source is a table declared by a file `sql/<name>.sql` (as in
`ingest/datasources.py`) or a table created by a materialized view file
`materialized_views/<view>.sql` (`materialized.py`): like Tinybird, a view's target table
is read as a data source. Everything else in the database (`_redpoll_tokens`,
`_redpoll_migrations`, `<name>_landing`, `<name>_quarantine`, the views themselves) is
internal.

`datasource_names` reads only the project's files (the SQL API checks every query with
it); `read_datasources` adds what ClickHouse knows: columns, engine, rows and bytes (one
read of `system.tables` and one of `system.columns`). The caller hands in the client.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.errors import ConfigError
from redpoll.materialized import SQL_DIR, load_views

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = ("DataSourceInfo", "DataSourceNames", "datasource_names", "read_datasources")

log = logging.getLogger("redpoll.endpoints.datasource_catalog")


@dataclasses.dataclass(frozen=True)
class DataSourceNames:
    """Data source names: `owner` maps each to the view file that creates it (None for a
    data source of `sql/`); `used_by` to the views that read it."""

    owner: dict[str, str | None]
    used_by: dict[str, tuple[str, ...]]

    def __contains__(self, name: object) -> bool:
        return name in self.owner


def datasource_names(project_dir: Path) -> DataSourceNames:
    """The data sources the project's files declare (no I/O but the files; view files
    are parsed once per change, `materialized.load_views`)."""
    owner: dict[str, str | None] = {p.stem: None for p in (project_dir / SQL_DIR).glob("*.sql")}
    used_by: dict[str, list[str]] = {}
    try:
        views = load_views(project_dir).views
    except ConfigError as exc:  # a broken view file: its tables stay internal until fixed
        log.warning("materialized views not read: %s", exc.message)
        views = ()
    for view in views:
        for table in view.tables:
            owner.setdefault(table, view.name)
        for source in sorted(view.sources):
            used_by.setdefault(source, []).append(view.name)
    return DataSourceNames(owner, {k: tuple(v) for k, v in used_by.items()})


@dataclasses.dataclass(frozen=True)
class DataSourceInfo:
    """One data source as `GET /v0/datasources` describes it (Tinybird-like fields)."""

    name: str
    #: the view file that materializes it, None for a data source of `sql/`
    materialized_by: str | None
    columns: tuple[dict[str, Any], ...]
    engine: dict[str, str]
    rows: int
    bytes: int
    used_by: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "materialized" if self.materialized_by else "datasource",
            "materialized_by": self.materialized_by,
            "columns": list(self.columns),
            "engine": self.engine,
            "statistics": {"row_count": self.rows, "bytes": self.bytes},
            "used_by": [{"name": view, "type": "materialized_view"} for view in self.used_by],
        }


def read_datasources(client: Client, project_dir: Path, database: str) -> dict[str, DataSourceInfo]:
    """Every data source of the project whose table exists in `database`, by name.

    A data source of `sql/` fed through `<name>_landing` (ingest/writer.py) is described by
    its table `<name>` (what queries read), or by the landing table while that is all
    there is.
    """
    names = datasource_names(project_dir)
    tables = {
        row[0]: row
        for row in client.query(
            "SELECT name, engine, sorting_key, partition_key, total_rows, total_bytes"
            " FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    }
    columns: dict[str, list[dict[str, Any]]] = {}
    for table, name, type_, kind, expression in client.query(
        "SELECT table, name, type, default_kind, default_expression FROM system.columns"
        " WHERE database = {db:String} ORDER BY table, position",
        parameters={"db": database},
    ).result_rows:
        columns.setdefault(table, []).append(
            {
                "name": name,
                "type": type_,
                "default_value": f"{kind} {expression}" if kind else None,
                "nullable": type_.startswith("Nullable("),
            }
        )
    found: dict[str, DataSourceInfo] = {}
    for name in sorted(names.owner):
        table = name if name in tables else f"{name}_landing"
        if table not in tables:
            continue
        _, engine, sorting_key, partition_key, rows, size = tables[table]
        found[name] = DataSourceInfo(
            name=name,
            materialized_by=names.owner[name],
            columns=tuple(columns.get(table, ())),
            engine={"engine": engine, "sorting_key": sorting_key, "partition_key": partition_key},
            rows=int(rows or 0),
            bytes=int(size or 0),
            used_by=names.used_by.get(name, ()),
        )
    return found
