"""Run ad-hoc SQL for `redpoll sql` (locally or via the admin API) and return ClickHouse's
own formatted bytes: `table` -> PrettyCompactMonoBlock, `json` -> JSON, `csv` -> CSVWithNames.
Statements that return no result set (DDL, INSERT ... VALUES) run as commands.

It takes a client, not a `Store`: this package is the bottom layer and knows none of its
callers (`Store.sql` serializes the admin client around it; docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot.dialects.clickhouse import ClickHouse

from redpoll.errors import ConfigError

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = ("OUTPUT_FORMATS", "run_admin_sql")

OUTPUT_FORMATS = {"table": "PrettyCompactMonoBlock", "json": "JSON", "csv": "CSVWithNames"}
_RESULT_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK", "("}


def returns_rows(query: str) -> bool:
    """True when the statement yields a result set (decided by its first keyword)."""
    tokens = ClickHouse().tokenize(query)
    return bool(tokens) and tokens[0].text.upper() in _RESULT_KEYWORDS


def run_admin_sql(client: Client, query: str, output: str) -> bytes:
    """Run one statement on `client` (an admin client the caller holds exclusively); a
    result set comes back in `output` form."""
    query = query.strip().rstrip(";")
    if not query:
        raise ConfigError("empty query")
    if output not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown format {output!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    if returns_rows(query):
        return client.raw_query(query, fmt=OUTPUT_FORMATS[output])
    summary = client.command(query)
    written = getattr(summary, "written_rows", None)
    return (f"ok ({written} rows written)\n" if written else "ok\n").encode()
