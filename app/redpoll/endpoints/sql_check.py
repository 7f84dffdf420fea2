"""Checks on caller-written SQL shared by a pipe's `q=` (compiler.apply_q) and the SQL API
(sql_access.parse_sql): one read-only statement, then one rule set on its syntax tree, so
that the two surfaces cannot drift apart. Each caller adds its own rules for tables (`_`
only, or the project's tables) and its own wording (`prefix`, `in_hint`).
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from redpoll.endpoints.model import FunctionSet
from redpoll.errors import QueryError

__all__ = ("check_columns", "check_statement", "function_name", "parse_one", "settings_nodes")

_FUNCTION_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def parse_one(sql: str, what: str) -> exp.Expression:
    """Exactly one SELECT (WITH / UNION allowed) that only reads; `what` names the SQL in
    the QueryError."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="clickhouse") if s is not None]
    except RecursionError:
        raise QueryError(f"{what} is nested too deeply") from None
    except TokenError:  # an unclosed quote, a stray `$`: before parsing starts
        raise QueryError(
            f"{what} is not valid SQL (an unclosed quote or a stray character)"
        ) from None
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line = first.get("line")
        where = f" (line {line} of the rendered SQL)" if line else ""
        raise QueryError(
            f"{what} is not valid SQL{where}: {first.get('description', exc)}"
        ) from None
    if len(statements) != 1:
        raise QueryError(f"{what} must be exactly one statement, found {len(statements)}")
    root = statements[0]
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        raise QueryError(f"{what} must be a SELECT, found {root.key.upper()}")
    for node in root.walk():
        if isinstance(node, (exp.DML, exp.DDL, exp.Command, exp.Set, exp.Into)) or (
            isinstance(node, exp.Select) and node.args.get("format")
        ):
            raise QueryError(f"{what} may only read: {node.key.upper()} is not allowed")
    return root


def settings_nodes(root: exp.Expression) -> list[exp.Expression]:
    """Every `SETTINGS k = v` of the tree, at any depth."""
    out: list[exp.Expression] = []
    for node in root.walk():
        out.extend(node.args.get("settings") or [])
    return out


def function_name(node: exp.Func) -> str | None:
    """The ClickHouse function `node` calls, or None for SQL syntax (CASE, CAST ... AS)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name)
    if isinstance(node, (exp.Case, exp.Cast, exp.Extract, exp.Interval)):
        return None
    match = _FUNCTION_CALL.match(node.sql(dialect="clickhouse"))
    return match[1] if match else None


def check_statement(
    root: exp.Expression, functions: FunctionSet, *, prefix: str, in_hint: str, where: str = ""
) -> None:
    """No SETTINGS, no query parameters, functions only from `functions`, no `IN <table>`
    (the function form of IN takes a table by name, which no table rule would see).

    Messages start with `prefix` ("q: "); `in_hint` says what to write instead of
    `IN <table>`; `where` ends the SETTINGS message.
    """
    if settings_nodes(root):
        raise QueryError(f"{prefix}SETTINGS are not allowed{where}")
    if any(True for _ in root.find_all(exp.Placeholder)):
        raise QueryError(f"{prefix}query parameters are not allowed")
    for func in root.find_all(exp.Func):
        fname = function_name(func)
        if fname is not None and not functions.allows(fname):
            raise QueryError(f"{prefix}function {fname} is not allowed")
    for in_node in root.find_all(exp.In):
        field = in_node.args.get("field")
        if isinstance(field, (exp.Column, exp.Table)) or (
            len(in_node.expressions) == 1 and isinstance(in_node.expressions[0], exp.Column)
        ):
            raise QueryError(f"{prefix}IN <table> is not allowed; {in_hint}")


def check_columns(root: exp.Expression, names: set[str], *, prefix: str) -> None:
    """Columns are qualified only by `names` (the query's tables, aliases and CTEs), never
    by a database or catalog."""
    for column in root.find_all(exp.Column):
        if column.args.get("db") or column.args.get("catalog"):
            raise QueryError(f"{prefix}{column.sql(dialect='clickhouse')} names another table")
        if column.table and column.table not in names:
            raise QueryError(f"{prefix}unknown table or alias {column.table}")
