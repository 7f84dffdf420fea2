"""Run ad-hoc SQL for `redpoll sql` (locally or via the admin API) and return ClickHouse's
own formatted bytes: `table` -> PrettyCompactMonoBlock, `json` -> JSON, `csv` -> CSVWithNames.
Statements that return no result set (DDL, INSERT ... VALUES) run as commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot.dialects.clickhouse import ClickHouse

from redpoll.errors import ConfigError

if TYPE_CHECKING:
    from redpoll.store import Store

__all__ = ("OUTPUT_FORMATS", "run_admin_sql")

OUTPUT_FORMATS = {"table": "PrettyCompactMonoBlock", "json": "JSON", "csv": "CSVWithNames"}
_RESULT_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK", "("}


def returns_rows(query: str) -> bool:
    """True when the statement yields a result set (decided by its first keyword)."""
    tokens = ClickHouse().tokenize(query)
    return bool(tokens) and tokens[0].text.upper() in _RESULT_KEYWORDS


def run_admin_sql(store: Store, query: str, output: str) -> bytes:
    """Run one statement with the admin client; a result set comes back in `output` form."""
    query = query.strip().rstrip(";")
    if not query:
        raise ConfigError("empty query")
    if output not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown format {output!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    with store.admin_lock:
        if returns_rows(query):
            return store.admin.raw_query(query, fmt=OUTPUT_FORMATS[output])
        summary = store.admin.command(query)
    written = getattr(summary, "written_rows", None)
    return (f"ok ({written} rows written)\n" if written else "ok\n").encode()
