"""A project's schema files: `sql/*.sql` (data sources) and `materialized_views/*.sql`.

A view is one file, `materialized_views/<view>.sql`: its target tables (`CREATE TABLE`),
its materialized views (`CREATE MATERIALIZED VIEW ... TO`), and how to recompute those
tables from their source, in a marked comment block:

    -- recompute:
    --   INSERT INTO {{ database }}.my_table (a, b) SELECT a, count() FROM ... GROUP BY a;
    -- end recompute

Everything else is derived from the file (nothing is written twice): the tables the
view owns (the `CREATE TABLE`s of the file), the tables it reads (its views' SELECTs,
minus its own tables), the order in which views are rebuilt (a view reading another
view's table comes after it), the statements of `redpoll backfill` (TRUNCATE of the
owned tables, then the recompute block) and the DDL of generated migrations. The block
is an SQL comment, so the migration renderer skips it; it is rendered with `{{ database }}`
and the view's named constants (`WITH 50 AS max_basket_items` in a view's SELECT gives
`{{ max_basket_items }}`), so a constant is written once. A file without a block is
recomputed from its views' SELECTs (`INSERT INTO <target> (<columns>) <SELECT>`),
which is right when every view reads only its source table, not the history of its own
tables; a view that does must have the block.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import jinja2
import sqlglot
from sqlglot import TokenType, exp
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import ParseError, TokenError

from redpoll.clickhouse.views import view_target_and_reads
from redpoll.errors import ConfigError

__all__ = (
    "SchemaFile",
    "SchemaObject",
    "ViewFile",
    "ViewSet",
    "load_views",
    "schema_files",
    "table_columns",
)

VIEWS_DIR = "materialized_views"
SQL_DIR = "sql"
_START = re.compile(r"^\s*--\s*recompute:\s*$", re.IGNORECASE)
_END = re.compile(r"^\s*--\s*end recompute\s*$", re.IGNORECASE)
_JINJA = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
#: what a file is rendered with to be parsed (names only; the database is dropped)
_PARSE_VARIABLES = {"database": "db", "cluster": "", "on_cluster": ""}


@dataclasses.dataclass(frozen=True)
class SchemaObject:
    """One `CREATE` statement of a schema file."""

    kind: str  # "table", "materialized view" or "view"
    name: str
    to: str | None  # a materialized view's `TO` table
    reads: frozenset[str]  # tables its SELECT names (CTE names left out)
    constants: Mapping[str, str]  # `WITH <number> AS <name>` of its SELECT
    text: str  # the statement as written (a template: `{{ database }}` unrendered)
    line: int


@dataclasses.dataclass(frozen=True)
class SchemaFile:
    """A file of `sql/` or `materialized_views/` and the objects it creates."""

    path: Path
    objects: tuple[SchemaObject, ...]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects if o.kind == "table")


@dataclasses.dataclass(frozen=True)
class ViewFile(SchemaFile):
    """`materialized_views/<name>.sql`: the tables it owns and how to recompute them."""

    recompute: str | None  # the block's template text (comment markers removed)

    @property
    def sources(self) -> frozenset[str]:
        """Tables its views read that it does not own (e.g. `events`, `items`)."""
        own = set(self.tables)
        return frozenset(t for o in self.objects for t in o.reads if t not in own)

    @property
    def constants(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for o in self.objects:
            out.update(o.constants)
        return out

    def recompute_statements(self, database: str) -> list[str]:
        """The INSERT ... SELECTs that refill the owned tables from the sources."""
        if self.recompute is None:
            return self._derived_recompute(database)
        variables = {**self.constants, "database": database, "cluster": "", "on_cluster": ""}
        try:
            text = _JINJA.from_string(self.recompute).render(**variables)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self.path}: recompute block: {exc}") from exc
        return _split(text, self.path)

    def backfill_statements(self, database: str) -> list[str]:
        """TRUNCATE every owned table, then recompute them."""
        truncates = [f"TRUNCATE TABLE IF EXISTS {database}.{table}" for table in self.tables]
        return truncates + self.recompute_statements(database)

    def _derived_recompute(self, database: str) -> list[str]:
        """`INSERT INTO <to> (<columns>) <SELECT>` per view, for views that read only
        their sources (no own table: that is history, only valid for the new block)."""
        out = []
        for obj in self.objects:
            if obj.kind != "materialized view":
                continue
            own = set(self.tables) & obj.reads
            if obj.to is None or own:
                raise ConfigError(
                    f"{self.path}: {obj.name} reads {', '.join(sorted(own)) or 'an inner table'}"
                    ": add a `-- recompute:` ... `-- end recompute` block saying how to "
                    "rebuild this view's tables"
                )
            rendered = _JINJA.from_string(obj.text).render(
                database=database, cluster="", on_cluster=""
            )
            select = sqlglot.parse_one(rendered, dialect="clickhouse").expression
            columns = ", ".join(select.named_selects)
            out.append(
                f"INSERT INTO {database}.{obj.to} ({columns})\n"
                + select.sql(dialect="clickhouse", pretty=True)
            )
        return out


@dataclasses.dataclass(frozen=True)
class ViewSet:
    """The views of a project, in rebuild order (a view after the views it reads)."""

    views: tuple[ViewFile, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)

    def get(self, name: str) -> ViewFile:
        for view in self.views:
            if view.name == name:
                return view
        known = ", ".join(self.names) or "none"
        raise ConfigError(f"unknown view {name!r}; views in {VIEWS_DIR}/: {known}")

    def ordered(self, names: Iterable[str]) -> list[ViewFile]:
        """The named views in rebuild order (unknown names raise ConfigError)."""
        wanted = {self.get(name).name for name in names}
        return [v for v in self.views if v.name in wanted]

    def fed_by(self, tables: Iterable[str]) -> list[ViewFile]:
        """The views that read `tables`, directly or through other views, in order."""
        reached = set(tables)
        out = []
        for view in self.views:  # dependency order: one pass reaches every chain
            if view.sources & reached:
                out.append(view)
                reached |= set(view.tables)
        return out


def _statements(text: str, path: Path) -> list[tuple[int, str]]:
    """`(offset, statement)` of every statement of `text`, split on `;` tokens (never
    inside strings or comments), each from its first token: comments above it stay out."""
    try:
        tokens = ClickHouse().tokenize(text)
    except TokenError as exc:
        raise ConfigError(f"{path}: cannot split statements: {exc}") from exc
    cuts = [t.start for t in tokens if t.token_type == TokenType.SEMICOLON] + [len(text)]
    out, start = [], 0
    for cut in cuts:
        chunk = text[start:cut]
        code = ClickHouse().tokenize(chunk)
        if code:
            first = code[0].start
            out.append((start + first, chunk[first:].strip()))
        start = cut + 1
    return out


def _split(text: str, path: Path) -> list[str]:
    """Statements of `text` (see `_statements`)."""
    return [statement for _, statement in _statements(text, path)]


def _recompute_block(text: str, path: Path) -> tuple[str, str | None]:
    """The file without its recompute block, and the block (comment markers removed)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _START.match(line)]
    if not starts:
        return text, None
    if len(starts) > 1:
        raise ConfigError(f"{path}: more than one `-- recompute:` block")
    first = starts[0]
    ends = [i for i in range(first + 1, len(lines)) if _END.match(lines[i])]
    if not ends:
        raise ConfigError(f"{path}:{first + 1}: `-- recompute:` without `-- end recompute`")
    body = []
    for line in lines[first + 1 : ends[0]]:
        stripped = line.lstrip()
        if not stripped.startswith("--"):
            raise ConfigError(f"{path}: the recompute block must be SQL comment lines")
        body.append(stripped[2:])
    rest = "".join(lines[:first] + lines[ends[0] + 1 :])
    return rest, "".join(body)


def _parse_object(statement: str, line: int, path: Path) -> SchemaObject:
    rendered = _JINJA.from_string(statement).render(**_PARSE_VARIABLES)
    try:
        parsed = sqlglot.parse_one(rendered, dialect="clickhouse")
    except ParseError as exc:
        raise ConfigError(f"{path}:{line}: cannot parse: {exc}") from exc
    if not isinstance(parsed, exp.Create) or parsed.kind not in {"TABLE", "VIEW"}:
        raise ConfigError(
            f"{path}:{line}: only CREATE TABLE and CREATE [MATERIALIZED] VIEW statements "
            "belong in a schema file (put other changes in a migration)"
        )
    table = parsed.this.this if isinstance(parsed.this, exp.Schema) else parsed.this
    name = table.name
    if parsed.kind == "TABLE":
        return SchemaObject("table", name, None, frozenset(), {}, statement, line)
    properties = parsed.args.get("properties")
    props = properties.expressions if properties else []
    materialized = any(isinstance(p, exp.MaterializedProperty) for p in props)
    to, reads = view_target_and_reads(parsed)
    select = parsed.expression
    constants = {
        cte.alias_or_name: str(cte.this.this)
        for cte in select.find_all(exp.CTE)
        if isinstance(cte.this, exp.Literal) and not cte.this.is_string
    }
    kind = "materialized view" if materialized else "view"
    return SchemaObject(kind, name, to, reads, constants, statement, line)


def _objects(text: str, path: Path) -> tuple[SchemaObject, ...]:
    return tuple(
        _parse_object(statement, text.count("\n", 0, offset) + 1, path)
        for offset, statement in _statements(text, path)
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def read_view(path: Path) -> ViewFile:
    """Parse one view file."""
    ddl, block = _recompute_block(_read(path), path)
    return ViewFile(path, _objects(ddl, path), block)


def read_schema_file(path: Path) -> SchemaFile:
    """Parse one file of `sql/`."""
    ddl, _ = _recompute_block(_read(path), path)
    return SchemaFile(path, _objects(ddl, path))


def _order(views: list[ViewFile]) -> tuple[ViewFile, ...]:
    """Dependency order (a view after every view whose tables it reads), then by name."""
    owner = {table: v.name for v in views for table in v.tables}
    after = {v.name: {owner[t] for t in v.sources if t in owner} - {v.name} for v in views}
    by_name = {v.name: v for v in views}
    done: list[str] = []
    while len(done) < len(views):
        ready = sorted(n for n, deps in after.items() if n not in done and deps <= set(done))
        if not ready:
            stuck = sorted(set(by_name) - set(done))
            raise ConfigError(f"views read each other's tables in a cycle: {', '.join(stuck)}")
        done.append(ready[0])
    return tuple(by_name[n] for n in done)


def load_views(project_dir: Path) -> ViewSet:
    """Every `materialized_views/*.sql` of a project, in rebuild order."""
    return _load_views(project_dir.resolve(), _stamp(project_dir / VIEWS_DIR))


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes: a changed file invalidates the cached parse."""
    if not directory.is_dir():
        return ()
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.sql"))
    )


@functools.lru_cache(maxsize=16)
def _load_views(project_dir: Path, _stamp: tuple[tuple[str, int, int], ...]) -> ViewSet:
    paths = sorted((project_dir / VIEWS_DIR).glob("*.sql"))
    views = [read_view(p) for p in paths]
    owners: dict[str, str] = {}
    for view in views:
        for table in view.tables:
            if table in owners:
                raise ConfigError(
                    f"{view.path}: table {table} is also created by {owners[table]}.sql"
                )
            owners[table] = view.name
    return ViewSet(_order(views))


def schema_files(project_dir: Path) -> list[SchemaFile]:
    """`sql/*.sql` then the views, in the order their objects must be created."""
    sql = [read_schema_file(p) for p in sorted((project_dir / SQL_DIR).glob("*.sql"))]
    return [*sql, *load_views(project_dir).views]


def table_columns(path: Path, table: str) -> list[tuple[str, str]]:
    """(name, type) of the columns of `CREATE TABLE <table>` in a schema file, in order
    (how `sql/events.sql` is the one place the landing schema is written)."""
    for obj in read_schema_file(path).objects:
        if obj.kind == "table" and obj.name == table:
            rendered = _JINJA.from_string(obj.text).render(**_PARSE_VARIABLES)
            schema = sqlglot.parse_one(rendered, dialect="clickhouse").this
            return [
                (col.name, col.args["kind"].sql(dialect="clickhouse"))
                for col in schema.expressions
                if isinstance(col, exp.ColumnDef)
            ]
    raise ConfigError(f"{path}: no CREATE TABLE {table}")
