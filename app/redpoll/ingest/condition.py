"""`delete_condition` (Tinybird's Data Sources API): one boolean expression over a table.

The caller's text is parsed with sqlglot and allow-listed on its syntax tree, then
re-generated from the tree: the DELETE runs the generated SQL, never the text as sent.
Allowed: the table's own columns (unqualified), literals, operators, `CASE`/`CAST`, and
functions of the `q=` allow-list (`endpoints/loader.py` `q_functions_from_client`: pure
computations, no `IN`-family function). Refused: anything that reads another table
(subqueries, `IN <table>`, table functions), aggregates and window functions, query
parameters, SETTINGS, more than one statement. The checks on functions, SETTINGS and
`IN <table>` are the ones `q=` and `/v0/sql` use (`endpoints/sql_check.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from redpoll.endpoints.model import FunctionSet
from redpoll.endpoints.sql_check import check_columns, check_statement, function_name
from redpoll.errors import ParameterError, PayloadTooLarge, QueryError

__all__ = ("MAX_CONDITION_BYTES", "check_condition")

#: Longest condition accepted (bytes of UTF-8).
MAX_CONDITION_BYTES = 16 * 1024
_PREFIX = "delete_condition: "
#: nodes that read a table or are not part of an expression
_FORBIDDEN = (
    exp.Query,
    exp.Subquery,
    exp.Table,
    exp.DDL,
    exp.DML,
    exp.Command,
    exp.Window,
    exp.Star,
)


def check_condition(text: str, columns: Iterable[str], functions: FunctionSet) -> str:
    """The condition as SQL generated from its checked syntax tree.

    Raises:
        ParameterError: empty, not one expression, or naming something not allowed (400).
        PayloadTooLarge: longer than MAX_CONDITION_BYTES (413).
    """
    text = text.strip()
    if not text:
        raise ParameterError("delete_condition is required: a SQL condition over the columns")
    if len(text.encode("utf-8")) > MAX_CONDITION_BYTES:
        raise PayloadTooLarge(f"delete_condition is longer than {MAX_CONDITION_BYTES} bytes")
    root = _parse(text)
    names = set(columns)
    for node in root.walk():
        if isinstance(node, _FORBIDDEN):
            what = "a subquery or table" if isinstance(node, exp.Query | exp.Table) else node.key
            raise ParameterError(f"{_PREFIX}{what.upper()} is not allowed")
        if isinstance(node, exp.AggFunc) or (
            isinstance(node, exp.Func) and function_name(node) in functions.aggregates
        ):
            raise ParameterError(f"{_PREFIX}aggregate functions are not allowed")
    try:
        check_statement(
            root, functions, prefix=_PREFIX, in_hint="use a list of values", where=" here"
        )
        check_columns(root, set(), prefix=_PREFIX)
    except QueryError as exc:
        raise ParameterError(exc.message) from None
    lambda_args = {
        arg.name for node in root.find_all(exp.Lambda) for arg in node.expressions if arg.name
    }
    for column in root.find_all(exp.Column):
        if column.name not in names and column.name not in lambda_args:
            known = ", ".join(sorted(names))
            raise ParameterError(f"{_PREFIX}unknown column {column.name[:128]!r}; columns: {known}")
    return root.sql(dialect="clickhouse", comments=False)


def _parse(text: str) -> exp.Expression:
    try:
        parsed = [s for s in sqlglot.parse(text, read="clickhouse") if s is not None]
    except RecursionError:
        raise ParameterError(f"{_PREFIX}nested too deeply") from None
    except TokenError:
        raise ParameterError(f"{_PREFIX}not valid SQL (an unclosed quote?)") from None
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise ParameterError(
            f"{_PREFIX}not valid SQL: {first.get('description', 'syntax error')}"
        ) from None
    if len(parsed) != 1:
        raise ParameterError(f"{_PREFIX}must be one expression, found {len(parsed)} statements")
    root = parsed[0]
    if not isinstance(root, exp.Expression):
        raise ParameterError(f"{_PREFIX}must be an expression")
    return root
