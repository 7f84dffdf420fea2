"""The SQL API's checks (`/v0/sql`, api/sql.py): one read-only SELECT, and which tables it reads.

`parse_sql` accepts what the `q=` of a pipe accepts (sql_check.py: one SELECT, no SETTINGS,
no query parameters, functions only from the `q=` allow-list, no `IN <table>`), except
that it reads tables instead of `_`: tables of the project's database only (no table
functions, no `system` or `information_schema`, no other database). A trailing
`FORMAT <name>` picks the output. The SQL sent to ClickHouse is generated from the
checked syntax tree (as `compiler.apply_q` does), so ClickHouse runs what was checked.

`check_access` then decides per table (docs/security.md): ADMIN reads everything; a data
source (`datasource_catalog.py`: `sql/` files and materialized view targets) needs
`DATASOURCES:READ[:<name>]`; `<ds>_quarantine` needs `DATASOURCES:READ:<ds>` or a grant
naming it; any other table (internal ones such as `_redpoll_tokens`) only a grant naming
it. A CTE hides a table only inside the query that declares it (a name resolved wrongly
is taken for a table, so a mistake refuses, never allows).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

from sqlglot import TokenType, exp
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import TokenError

from redpoll.endpoints.compiler import with_settings
from redpoll.endpoints.datasource_catalog import DataSourceNames
from redpoll.endpoints.executor import FORMATS, Query
from redpoll.endpoints.model import FunctionSet
from redpoll.endpoints.sql_check import check_columns, check_statement, parse_one
from redpoll.errors import ParameterError, QueryError, Unauthorized
from redpoll.tokens.scopes import DATASOURCES_READ, Principal

__all__ = ("SQL_FORMATS", "SqlQuery", "check_access", "parse_sql")

#: `FORMAT <name>` of the SQL API -> media type (the outputs of pipes, executor.FORMATS)
SQL_FORMATS: Mapping[str, str] = {
    "JSON": FORMATS["json"][1],
    "CSV": FORMATS["csv"][1],
    "CSVWithNames": FORMATS["csv"][1],
    "JSONEachRow": FORMATS["ndjson"][1],
    "Parquet": FORMATS["parquet"][1],
}
_FORBIDDEN_DATABASES = frozenset({"system", "information_schema"})


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A table the query reads; `database` None: the project's database."""

    database: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.database}.{self.name}" if self.database else self.name


@dataclasses.dataclass(frozen=True)
class SqlQuery:
    """A checked query: what to send, in which format, and the tables it reads."""

    query: Query
    media_type: str
    tables: frozenset[TableRef]


def output_format(fmt_param: str | None, clause: str | None) -> str:
    """The ClickHouse output format: the query's `FORMAT` wins over `format=` (a pipe's
    extension: json, csv, ndjson, parquet, or a FORMAT name); JSON by default."""
    if clause is not None:
        if clause not in SQL_FORMATS:
            raise QueryError(f"FORMAT {clause[:64]} is not supported: use {', '.join(SQL_FORMATS)}")
        return clause
    if not fmt_param:
        return "JSON"
    if fmt_param in FORMATS:
        return FORMATS[fmt_param][0]
    if fmt_param in SQL_FORMATS:
        return fmt_param
    raise ParameterError(
        f"Parameter 'format' must be one of {sorted(FORMATS)} or {', '.join(SQL_FORMATS)}"
    )


def _split_format(sql: str) -> tuple[str, str | None]:
    """`sql` without a trailing `FORMAT <name>` (and `;`), and the name."""
    try:
        tokens = ClickHouse().tokenize(sql)
    except TokenError:
        raise QueryError(
            "the query is not valid SQL (an unclosed quote or a stray character)"
        ) from None
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    if len(tokens) >= 2 and tokens[-2].token_type == TokenType.FORMAT:
        return sql[: tokens[-2].start], tokens[-1].text
    end = tokens[-1].end + 1 if tokens else 0
    return sql[:end], None


def parse_sql(
    sql: str,
    functions: FunctionSet,
    *,
    database: str,
    fmt_param: str | None = None,
    timeout: float,
    quote_64bit: bool = True,
) -> SqlQuery:
    """Check one caller-written query and build what to run (pure Python: call it off the
    event loop, sqlglot may take a while).

    Raises:
        QueryError: not one plain SELECT over tables, or it names something not allowed.
        Unauthorized: it reads a system table or another database.
    """
    text, clause = _split_format(sql)
    fmt = output_format(fmt_param, clause)
    if not text.strip():
        raise QueryError("the query is empty")
    try:
        root = parse_one(text, "the query")
        tables = _check(root, functions, database)
        generated = root.sql(dialect="clickhouse")
    except RecursionError:
        raise QueryError("the query is nested too deeply") from None
    marker = f"redpoll:{uuid.uuid4().hex}"
    settings: dict[str, object] = {"log_comment": marker}
    if fmt == "JSON":
        settings["output_format_json_quote_64bit_integers"] = 1 if quote_64bit else 0
    query = Query(with_settings(generated, settings), {}, fmt, timeout, marker)
    return SqlQuery(query, SQL_FORMATS[fmt], frozenset(tables))


def _check(root: exp.Expression, functions: FunctionSet, database: str) -> set[TableRef]:
    check_statement(
        root,
        functions,
        prefix="",
        in_hint="use IN (SELECT ... FROM <table>)",
        where=" in the query",
    )
    tables: set[TableRef] = set()
    names: set[str] = set()
    for table in root.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            fn = table.this.name if isinstance(table.this, exp.Func) else "a table function"
            raise QueryError(f"table function {fn}() is not allowed; read data sources by name")
        if table.alias:
            names.add(table.alias)
        if table.args.get("catalog"):
            raise QueryError(f"{table.sql(dialect='clickhouse')} is not a table of this project")
        db = table.db or None
        if db is None and _is_cte_reference(table):
            continue
        if db is not None and db.lower() in _FORBIDDEN_DATABASES:
            raise Unauthorized(f"the SQL API reads only data sources, not {db}.{table.name}")
        if db is not None and db != database:
            raise Unauthorized(
                f"the SQL API reads only this project's tables, not {db}.{table.name}"
            )
        tables.add(TableRef(None, table.name))
        names.add(table.name)
    names |= {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    names |= {s.alias for s in root.find_all(exp.Subquery) if s.alias}
    check_columns(root, names, prefix="")
    return tables


def _is_cte_reference(table: exp.Table) -> bool:
    """True if `table` names a CTE visible where it stands: declared by an enclosing query,
    not inside that CTE's own definition nor a later CTE's of the same WITH. A WITH that
    sqlglot hangs on a UNION counts for its first SELECT only (anything doubtful is taken
    for a table: checked, not trusted)."""
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With):
            index = next((i for i, c in enumerate(node.expressions) if c is child), 0)
            if any(c.alias_or_name == table.name for c in node.expressions[:index]):
                return True
            if node.parent is None:
                return False
            child, node = node.parent, node.parent.parent  # past the WITH's own query
            continue
        with_ = node.args.get("with_") or node.args.get("with")
        if isinstance(with_, exp.With) and any(
            c.alias_or_name == table.name for c in with_.expressions
        ):
            first: exp.Expr = node
            while isinstance(first, exp.SetOperation):
                first = first.this
            if first is node or _inside(table, first):
                return True
        child, node = node, node.parent
    return False


def _inside(node: exp.Expr, ancestor: exp.Expr) -> bool:
    parent = node.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


def check_access(query: SqlQuery, principal: Principal, datasources: DataSourceNames) -> None:
    """Unauthorized (403, naming the table) unless `principal` may read every table."""
    if principal.is_admin:
        return
    for table in sorted(query.tables, key=str):
        name = table.name
        if name in datasources:
            if principal.grant(DATASOURCES_READ, name) is None:
                raise Unauthorized(f"this token lacks the scope {DATASOURCES_READ}:{name}")
            continue
        if _named_grant(principal, name):
            continue
        source = name.removesuffix("_quarantine")
        if source != name and source in datasources and _named_grant(principal, source):
            continue
        raise Unauthorized(
            f"this token may not read {name}: it is not a data source granted to it "
            f"(needs {DATASOURCES_READ}:{name})"
        )


def _named_grant(principal: Principal, name: str) -> bool:
    return any(s.type == DATASOURCES_READ and s.resource == name for s in principal.scopes)
