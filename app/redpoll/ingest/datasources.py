"""Data sources: which tables accept events, and their columns.

A data source is declared by a file `sql/<name>.sql` (its documented schema; migrations
create it). Its columns are read from ClickHouse (`system.columns`), so validation always
matches the live table. If a table `<name>_landing` exists, rows go there (the real-time
protocol of `ingest/writer.py`: the `events` data source); otherwise straight into
`<name>`. Bad rows go to `<name>_quarantine`, created on first use by Redpoll.

Each column's converter is built once here, with the String length caps (`Limits`) of
the service that discovered it, so every ingestion path (HTTP, `redpoll load`, Kafka)
validates with the same caps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import quote_identifier
from redpoll.ingest.convert import Converter, Limits, converter_for

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = ("Column", "DataSource", "discover_datasources", "ensure_quarantine_table")

#: Columns the writer manages itself; clients never send them.
_PROTOCOL_COLUMNS = {"batch"}


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    default_expression: str  # '' when the column has no DEFAULT
    convert: Converter = dataclasses.field(compare=False, repr=False)

    @property
    def zero(self) -> Any:
        """The value ClickHouse uses for a missing field without a DEFAULT."""
        return _zero(self.type)


@dataclasses.dataclass(frozen=True)
class DataSource:
    name: str
    table: str  # where inserts go
    columns: tuple[Column, ...]
    uses_landing: bool

    @property
    def quarantine_table(self) -> str:
        return f"{self.name}_quarantine"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def discover_datasources(
    project_dir: Path, client: Client, database: str, limits: Limits | None = None
) -> dict[str, DataSource]:
    """Data sources declared in `sql/` whose table exists in `database` (one read of
    `system.columns`); `limits`: String length caps, the settings' defaults if None."""
    declared = sorted(p.stem for p in (project_dir / "sql").glob("*.sql"))
    if not declared:
        return {}
    rows = client.query(
        "SELECT table, name, type, default_kind, default_expression FROM system.columns"
        " WHERE database = {db:String} ORDER BY table, position",
        parameters={"db": database},
    ).result_rows
    tables: dict[str, list[tuple[str, str, str, str]]] = {}
    for table, name, type_, kind, expr in rows:
        tables.setdefault(table, []).append((name, type_, kind, expr))
    found: dict[str, DataSource] = {}
    for name in declared:
        landing = f"{name}_landing"
        table = landing if landing in tables else name
        if table not in tables:
            continue
        columns = tuple(
            Column(col, type_, expr if kind == "DEFAULT" else "", converter_for(type_, col, limits))
            for col, type_, kind, expr in tables[table]
            if kind not in {"MATERIALIZED", "ALIAS", "EPHEMERAL"} and col not in _PROTOCOL_COLUMNS
        )
        found[name] = DataSource(name, table, columns, uses_landing=table == landing)
    return found


def ensure_quarantine_table(client: Client, database: str, datasource: DataSource) -> None:
    """Create `<name>_quarantine` (kept 30 days) if it does not exist."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(database)}."
        f"{quote_identifier(datasource.quarantine_table)} ("
        " received_at DateTime64(3, 'UTC'), line UInt64, column String, error String,"
        " raw String"
        ") ENGINE = MergeTree ORDER BY received_at"
        " TTL toDateTime(received_at) + INTERVAL 30 DAY"
    )


def _zero(type_name: str) -> Any:
    t = type_name
    while t.startswith("LowCardinality("):
        t = t[len("LowCardinality(") : -1]
    if t.startswith("Nullable("):
        return None
    if t.startswith(("Array(",)):
        return []
    if t.startswith("Map("):
        return {}
    if t.startswith(("Int", "UInt")):
        return 0
    if t.startswith(("Float", "Decimal")):
        return 0.0
    if t in {"Bool", "Boolean"}:
        return False
    if t.startswith(("Date", "UUID", "Enum")):
        return None  # the writer or ClickHouse must supply it; see validate.py
    return ""
