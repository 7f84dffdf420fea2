"""The console's own reads: what no API route answers in the shape a page needs.

Each function takes a client (the caller holds `store.admin_lock`) and the database,
binds values as `{name:Type}` parameters and returns plain Python values. Table names
come from the project's catalog (`endpoints/datasource_catalog.py`), never from a
request, and are quoted with `clickhouse/client.py:quote_identifier`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import quote_identifier

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.endpoints.datasource_catalog import DataSourceInfo

__all__ = (
    "QuarantinePage",
    "freshness",
    "item_series",
    "latest_trending_hour",
    "quarantine_page",
    "request_series",
    "request_summary",
)


def _table(database: str, name: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(name)}"


def _time_column(info: DataSourceInfo) -> str | None:
    """The first DateTime column: what "freshness" is measured on."""
    for column in info.columns:
        if str(column["type"]).removeprefix("Nullable(").startswith("DateTime"):
            return str(column["name"])
    return None


def freshness(client: Client, database: str, info: DataSourceInfo) -> dt.datetime | None:
    """The newest value of the data source's first DateTime column (None: no such column
    or no rows)."""
    column = _time_column(info)
    if column is None or info.rows == 0:
        return None
    rows = client.query(
        f"SELECT max({quote_identifier(column)}) FROM {_table(database, info.name)}"
    ).result_rows
    value = rows[0][0] if rows else None
    return value if isinstance(value, dt.datetime) and value.year > 1970 else None


@dataclasses.dataclass(frozen=True)
class QuarantinePage:
    rows: list[dict[str, Any]]
    total: int


def quarantine_page(
    client: Client, database: str, name: str, page: int, size: int
) -> QuarantinePage | None:
    """One page of `<name>_quarantine`, newest first (None: nothing was ever quarantined,
    so the table does not exist)."""
    table = f"{name}_quarantine"
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows[0][0]
    if not exists:
        return None
    total = int(client.query(f"SELECT count() FROM {_table(database, table)}").result_rows[0][0])
    result = client.query(
        f"SELECT received_at, line, column, error, substring(raw, 1, 300) AS raw"
        f" FROM {_table(database, table)} ORDER BY received_at DESC, line"
        " LIMIT {size:UInt32} OFFSET {offset:UInt64}",
        parameters={"size": size, "offset": page * size},
    )
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    return QuarantinePage(rows, total)


def latest_trending_hour(client: Client, database: str) -> dt.datetime | None:
    """The newest hour of the `trending` view: the demo data may be years old."""
    value = client.query(f"SELECT max(hour) FROM {_table(database, 'trending')}").result_rows[0][0]
    return value if isinstance(value, dt.datetime) and value.year > 1970 else None


def item_series(
    client: Client, database: str, items: list[str], until: dt.datetime, hours: int
) -> dict[str, list[int]]:
    """Events per item and hour over the `hours` up to `until` (the `trending` view),
    one count per hour, oldest first, zero-filled."""
    if not items:
        return {}
    result = client.query(
        f"SELECT item_id, dateDiff('hour', hour, toStartOfHour({{until:DateTime('UTC')}})) AS age,"
        f" sum(events) FROM {_table(database, 'trending')}"
        " WHERE item_id IN {items:Array(String)}"
        " AND hour > {until:DateTime('UTC')} - INTERVAL {hours:UInt32} HOUR"
        " AND hour <= {until:DateTime('UTC')}"
        " GROUP BY item_id, age",
        parameters={"items": items, "until": until, "hours": hours},
    )
    series = {item: [0] * hours for item in items}
    for item, age, events in result.result_rows:
        if 0 <= age < hours:
            series[item][hours - 1 - int(age)] = int(events)
    return series


def request_summary(client: Client, database: str, minutes: int) -> list[dict[str, Any]]:
    """Per endpoint over the last `minutes`: calls, errors and latency percentiles (ms)."""
    result = client.query(
        "SELECT pipe_name, count() AS calls, countIf(status_code >= 400) AS errors,"
        " round(quantileExact(0.5)(duration) * 1000, 2) AS p50_ms,"
        " round(quantileExact(0.9)(duration) * 1000, 2) AS p90_ms,"
        " round(quantileExact(0.99)(duration) * 1000, 2) AS p99_ms,"
        " round(max(duration) * 1000, 2) AS max_ms"
        f" FROM {_table(database, 'pipe_stats')}"
        " WHERE start_datetime > now64(3) - INTERVAL {minutes:UInt32} MINUTE"
        " GROUP BY pipe_name ORDER BY calls DESC, pipe_name",
        parameters={"minutes": minutes},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def request_series(
    client: Client, database: str, minutes: int
) -> dict[str, dict[str, list[float]]]:
    """Per endpoint and minute (oldest first, zero-filled): p90 latency (ms) and errors."""
    result = client.query(
        "SELECT pipe_name, dateDiff('minute', toStartOfMinute(start_datetime),"
        " toStartOfMinute(now64(3))) AS age,"
        " quantileExact(0.9)(duration) * 1000, countIf(status_code >= 400)"
        f" FROM {_table(database, 'pipe_stats')}"
        " WHERE start_datetime > now64(3) - INTERVAL {minutes:UInt32} MINUTE"
        " GROUP BY pipe_name, age",
        parameters={"minutes": minutes},
    )
    out: dict[str, dict[str, list[float]]] = {}
    for pipe, age, p90, errors in result.result_rows:
        series = out.setdefault(pipe, {"p90_ms": [0.0] * minutes, "errors": [0.0] * minutes})
        if 0 <= age < minutes:
            series["p90_ms"][minutes - 1 - int(age)] = round(float(p90), 2)
            series["errors"][minutes - 1 - int(age)] = float(errors)
    return out
