"""Compile endpoint templates once, render them per request.

`compile_endpoint` turns a file's text into an `Endpoint`: it parses the Jinja template,
lists its parameters from the template's syntax tree, renders it twice at load time (with
defaults only, and with every parameter present) and checks each result with sqlglot: one
read-only SELECT (WITH / UNION allowed), reading only known tables, no FORMAT clause, no
top-level SETTINGS (settings go in the header), no placeholders other than the ones typed
functions produced. `render` produces a request's SQL and its parameter values;
`apply_q` wraps a caller's `q=` query around it. No values are ever put in the SQL text.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from sqlglot import exp

from redpoll.endpoints.model import (
    Catalog,
    Endpoint,
    EndpointMeta,
    FunctionSet,
    ParamSpec,
    Rendered,
)
from redpoll.endpoints.sql_check import check_columns, check_statement, parse_one, settings_nodes
from redpoll.endpoints.template import (
    FUNCTIONS,
    TYPE_FUNCTIONS,
    RenderState,
    TemplateError,
    make_environment,
    render_template,
    to_args,
)
from redpoll.errors import ParameterError, QueryError, RedpollError

__all__ = (
    "RESERVED_PARAMS",
    "apply_q",
    "compile_endpoint",
    "render",
    "with_settings",
)

# Request parameters that drive Redpoll itself and never reach a template.
RESERVED_PARAMS = frozenset(
    {"q", "token", "format", "from", "output_format_json_quote_64bit_integers", "pipeline"}
)
# Settings an endpoint may not change from inside its SQL (the read role's caps).
PROTECTED_SETTINGS = frozenset(
    {
        "readonly",
        "max_execution_time",
        "max_result_rows",
        "max_result_bytes",
        "result_overflow_mode",
        "timeout_overflow_mode",
        "max_rows_to_read",
        "max_bytes_to_read",
        "allow_ddl",
    }
)
TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series"})
_SUBQUERY_TOKEN = "__redpoll_endpoint__"
_ENV = make_environment()
_END_TAG = re.compile(r"\{%(-?)\s*(\w+)([^%]*?)(-?)%\}")
_BLOCKS = {"if", "for", "macro", "call", "filter", "raw"}
# Quoted strings and identifiers (kept whole) or a `--` comment (dropped), left to right.
_QUOTED_OR_COMMENT = re.compile(
    r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`\\]|\\.|``)*`|--[^\n]*", re.S
)


def preprocess(source: str) -> str:
    """Accept Tinybird's syntax: a leading `%` line and `{% end %}` for any block.

    Line count is preserved so error lines still point into the file.
    """
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "":
            continue
        if line.strip() == "%":
            lines[i] = ""
        break
    source = "\n".join(lines)
    stack: list[str] = []

    def fix(match: re.Match[str]) -> str:
        lead, tag, rest, trail = match.groups()
        if tag in _BLOCKS or (tag == "set" and "=" not in rest):
            stack.append(tag)
        elif tag.startswith("end") and tag != "end" and stack:
            stack.pop()
        elif tag == "end":
            if not stack:
                return match.group(0)
            return f"{{%{lead} end{stack.pop()} {trail}%}}"
        return match.group(0)

    return _END_TAG.sub(fix, source)


def compile_endpoint(
    name: str,
    source: str,
    *,
    path: Path,
    meta: EndpointMeta,
    catalog: Catalog,
    mtime_ns: int = 0,
) -> Endpoint:
    """Compile and check one endpoint.

    Raises:
        TemplateError: with `.line` set when known; the message never includes values.
    """
    text = preprocess(source)
    try:
        ast = _ENV.parse(text, name=name, filename=str(path))
        code = _ENV.compile(ast, name=name, filename=str(path))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax: {exc.message}", line=exc.lineno) from None
    template = _ENV.template_class.from_code(_ENV, code, _ENV.globals, None)
    params = _extract_params(ast)
    variables = tuple(p.name for p in params)
    _check_raw_outputs(ast, set(variables))

    # Pass 1: defaults only. Pass 2: every parameter present (its example/default value).
    probe_values = {p.name: _probe_value(p) for p in params}
    tables: set[str] = set()
    used: set[str] = set()
    for args in ({}, probe_values):
        state = RenderState(check=True, identifiers=None)
        sql = _render_checked(template, args, variables, state, path)
        tables |= validate_select(sql, catalog, set(state.parameters), text)
        used |= state.used_identifiers
    identifiers = catalog.columns_of(tables) | frozenset(meta.columns)
    unknown = sorted(i for i in used if i not in identifiers)
    if unknown:
        raise TemplateError(f"default column(s) {unknown} not found in {sorted(tables)}")
    return Endpoint(
        name=name,
        path=path,
        source=source,
        meta=meta,
        template=template,
        params=params,
        tables=frozenset(tables),
        identifiers=identifiers,
        mtime_ns=mtime_ns,
    )


def _probe_value(spec: ParamSpec) -> Any:
    for candidate in (spec.example, spec.default, (spec.enum or (None,))[0]):
        if candidate is not None:
            return str(candidate) if not isinstance(candidate, list) else candidate
    return None


def _render_checked(
    template: Any,
    values: Mapping[str, Any],
    variables: tuple[str, ...],
    state: RenderState,
    path: Path,
) -> str:
    args = to_args({k: v for k, v in values.items() if v is not None}, variables)
    try:
        return render_template(template, args, state)
    except TemplateError as exc:
        exc.line = exc.line or _template_line(path)
        raise
    except ParameterError as exc:
        raise TemplateError(
            f"rendering with defaults: {exc.message}", line=_template_line(path)
        ) from None
    except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
        raise TemplateError(f"rendering with defaults: {exc}", line=_template_line(path)) from None


def _template_line(path: Path) -> int | None:
    """The template line of the exception being handled, from Jinja's rewritten traceback."""
    tb = sys.exc_info()[2]
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == str(path):
            line = frame.lineno
    return line


def _const(node: nodes.Node) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return [_const(i) for i in node.items]
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
        return -node.node.value
    return None


def _extract_params(ast: nodes.Template) -> tuple[ParamSpec, ...]:
    """Parameters from the syntax tree: typed calls on a free name give type and docs."""
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = sorted(
        {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"}
        - assigned
        - set(FUNCTIONS)
        - {"true", "false", "none", "True", "False", "None"}
    )
    specs: dict[str, ParamSpec] = {}
    for call in ast.find_all(nodes.Call):
        fn = call.node.name if isinstance(call.node, nodes.Name) else None
        if fn not in TYPE_FUNCTIONS and fn not in {"Array", "column", "columns", "symbol"}:
            continue
        if not call.args or not isinstance(call.args[0], nodes.Name):
            continue
        pname = call.args[0].name
        if pname not in free or pname in specs:
            continue
        kw = {k.key: _const(k.value) for k in call.kwargs}
        rest = [_const(a) for a in call.args[1:]]
        if fn == "Array":
            inner = rest[0] if rest else kw.get("_type", "String")
            type_name, default = f"Array({inner})", (rest[1] if len(rest) > 1 else None)
        elif fn in ("column", "columns", "symbol"):
            type_name, default = "String", (rest[0] if rest else None)
        else:
            type_name = {"Int": "Int32", "Integer": "Int32", "bool": "Boolean"}.get(fn, fn)
            default = rest[0] if rest else None
        default = kw.get("default", default)
        enum = kw.get("enum")
        specs[pname] = ParamSpec(
            name=pname,
            type=type_name,
            default=default,
            required=bool(kw.get("required")),
            description=str(kw.get("description") or ""),
            example=kw.get("example"),
            enum=tuple(enum) if isinstance(enum, list) else None,
            min=kw.get("min"),
            max=kw.get("max"),
        )
    for pname in free:
        if pname in RESERVED_PARAMS:
            raise TemplateError(f"'{pname}' is a reserved parameter name")
        specs.setdefault(pname, ParamSpec(name=pname))
    return tuple(sorted(specs.values(), key=lambda s: s.name))


def _check_raw_outputs(ast: nodes.Template, params: set[str]) -> None:
    for output in ast.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.Name) and node.name in params:
                raise TemplateError(
                    f"parameter '{node.name}' is printed raw; use a typed function, "
                    f"e.g. {{{{ String({node.name}) }}}}",
                    line=node.lineno,
                )


# --- SQL checks -----------------------------------------------------------------------


def _tail_select(root: exp.Expression) -> exp.Expression:
    while isinstance(root, exp.SetOperation):
        root = root.expression
    return root


def validate_select(
    sql: str, catalog: Catalog, bound: set[str], source: str | None = None
) -> set[str]:
    """Check a rendered endpoint; return the tables it reads.

    Raises:
        TemplateError: naming the problem (and the file line, for unknown tables).
    """
    try:
        root = parse_one(sql, "the endpoint")
    except QueryError as exc:
        raise TemplateError(exc.message) from None
    if root.args.get("settings") or _tail_select(root).args.get("settings"):
        raise TemplateError("put query SETTINGS in the header (`-- settings: k=v`), not the SQL")
    for setting in settings_nodes(root):
        key = setting.this.name if isinstance(setting, exp.EQ) else ""
        if key.lower() in PROTECTED_SETTINGS:
            raise TemplateError(f"setting {key} is set by Redpoll (use the header)")
    for ph in root.find_all(exp.Placeholder):
        if ph.name not in bound:
            raise TemplateError(
                f"placeholder {{{ph.name}:...}} is not produced by a typed function"
            )
    ctes = {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    tables: set[str] = set()
    for table in root.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            fn = table.this.name if isinstance(table.this, exp.Func) else str(table.this)
            if fn.lower() not in TABLE_FUNCTIONS:
                raise TemplateError(f"table function {fn}() is not allowed")
            continue
        if not table.db and table.name in ctes:
            continue
        if (table.db and table.db != catalog.database) or table.name not in catalog.tables:
            full = f"{table.db}.{table.name}" if table.db else table.name
            raise TemplateError(f"unknown table {full}", line=_find_line(source, table.name))
        tables.add(table.name)
    return tables


def _find_line(source: str | None, needle: str) -> int | None:
    if source is None:
        return None
    for i, line in enumerate(source.splitlines(), 1):
        if re.search(rf"\b{re.escape(needle)}\b", line) and not line.lstrip().startswith("--"):
            return i
    return None


# --- per request ----------------------------------------------------------------------


def render(endpoint: Endpoint, params: Mapping[str, Any]) -> Rendered:
    """Render `endpoint` for one request.

    Args:
        params: request values (str, or list of str for repeated keys); unknown names
            and reserved names are ignored.

    Raises:
        ParameterError: 400 naming the parameter. RedpollError: from `error()`.
        TemplateError: 500, a bug in the endpoint file.
    """
    names = [p.name for p in endpoint.params]
    state = RenderState(check=False, identifiers=endpoint.identifiers)
    try:
        sql = render_template(endpoint.template, to_args(params, names), state)
    except RedpollError:
        raise
    except UndefinedError as exc:
        raise ParameterError(f"{exc} (the endpoint needs it; check its parameters)") from None
    except (SecurityError, TypeError, ValueError) as exc:
        raise TemplateError(f"{endpoint.path}: {exc}", line=_template_line(endpoint.path)) from None
    sql = strip_comments(sql).strip().rstrip(";")
    # Bind only placeholders present in the SQL (a typed call used for control flow only
    # has none): with no placeholder at all, the driver would fall back to client-side
    # %-formatting of the SQL text.
    used = {k: v for k, v in state.parameters.items() if f"{{{k}:" in sql}
    return Rendered(sql=sql, parameters=used)


def strip_comments(sql: str) -> str:
    """Drop `--` comments outside quotes, keeping line breaks.

    ClickHouse's parser pays for every comment on every request: on chDB, the comments of
    `for_user.sql` cost ~0.7 ms of ~20 (docs/recommendations.md). They stay in the file,
    where the analyst reads them.
    """
    if "--" not in sql:
        return sql
    return _QUOTED_OR_COMMENT.sub(lambda m: "" if m.group(0).startswith("--") else m.group(0), sql)


def apply_q(sql: str, q: str, functions: FunctionSet) -> str:
    """Wrap the endpoint's SQL as table `_` of the caller's `q` (Tinybird's `q=`).

    What `q` may name is allow-listed on the parsed AST: tables only `_` (and its own
    CTEs and subquery aliases), columns qualified only by those names, and functions only
    from `functions` (pure computations: no table, dictionary, file, setting or server
    state can be reached, and no `IN`-family function, whose function form takes a table).

    Raises:
        QueryError: q is not one plain SELECT over `_`, or names something else.
    """
    if _SUBQUERY_TOKEN in q:
        raise QueryError("q: invalid query")
    try:
        root = parse_one(q, "q")
        _check_q(root, functions)
        generated = _replace_q_tables(root).sql(dialect="clickhouse")
    except RecursionError:
        raise QueryError("q: the query is nested too deeply") from None
    return generated.replace(_SUBQUERY_TOKEN, f"(\n{sql}\n)")


def _check_q(root: exp.Expression, functions: FunctionSet) -> None:
    check_statement(root, functions, prefix="q: ", in_hint="use a list or a subquery on _")
    names = {"_"} | {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    for source in root.find_all(exp.Table, exp.Subquery):
        if source.alias:
            names.add(source.alias)
    check_columns(root, names, prefix="q: ")


def _replace_q_tables(root: exp.Expression) -> exp.Expression:
    ctes = {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    found = False
    for table in list(root.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            raise QueryError("q: table functions are not allowed")
        if not table.db and table.name in ctes:
            continue
        if table.db or table.name != "_":
            raise QueryError(f"q: can only read from _ (the endpoint's result), not {table.name}")
        found = True
        alias = table.alias or "_"
        table.replace(
            exp.Table(
                this=exp.to_identifier(_SUBQUERY_TOKEN),
                alias=exp.TableAlias(this=exp.to_identifier(alias)),
            )
        )
    if not found:
        raise QueryError("q: must read FROM _")
    return root


def _setting_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def with_settings(sql: str, settings: Mapping[str, Any]) -> str:
    """Append a `SETTINGS` clause (cheaper than per-call settings on chDB: no SET round trips)."""
    if not settings:
        return sql
    for key in settings:
        if not re.match(r"^[a-z_][a-z0-9_]*$", key):
            raise TemplateError(f"invalid setting name {key!r}")
    clause = ", ".join(f"{k} = {_setting_literal(v)}" for k, v in settings.items())
    return f"{sql}\nSETTINGS {clause}"
