"""Read `endpoints/*.sql`: the metadata header, then compile (see docs/endpoints.md).

The header is the leading block of `--` comment lines. Lines of the form `-- key: value`
with a known key set metadata; other comment lines form the description. The header is
blanked (not removed) before compiling, so template line numbers are file line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import DatabaseError
from redpoll.endpoints.analysis import FunctionClasses
from redpoll.endpoints.compiler import compile_endpoint
from redpoll.endpoints.model import Catalog, Endpoint, EndpointMeta, FunctionSet, LoadError
from redpoll.endpoints.template import TemplateError
from redpoll.errors import RedpollError

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = (
    "catalog_from_client",
    "function_classes_from_client",
    "iter_endpoint_files",
    "load_endpoint",
    "parse_header",
    "q_functions_from_client",
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_NAMES = frozenset({"openapi"})
_KEY_RE = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*)$")
_KEYS = {
    "description",
    "cache",
    "cache_ttl",
    "ttl",
    "tags",
    "max_execution_time",
    "max_result_rows",
    "settings",
    "columns",
}


def parse_header(source: str) -> tuple[EndpointMeta, str, int]:
    """Split off the metadata comment block.

    Returns:
        (meta, body with the header lines blanked, number of header lines).

    Raises:
        TemplateError: an invalid value, with its line.
    """
    lines = source.split("\n")
    values: dict[str, Any] = {}
    description: list[str] = []
    n = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("--"):
            if stripped == "" and n == i and not values and not description:
                n += 1
                continue
            break
        n = i + 1
        match = _KEY_RE.match(stripped)
        if match and match.group(1) in _KEYS:
            key, value = match.group(1), match.group(2).strip()
            try:
                values[key] = _header_value(key, value)
            except ValueError as exc:
                raise TemplateError(f"header {key}: {exc}", line=i + 1) from None
        else:
            description.append(stripped[2:].strip())
    if "description" in values:
        description.insert(0, values.pop("description"))
    meta = EndpointMeta(
        description=" ".join(d for d in description if d).strip(),
        cache_ttl=int(values.get("cache_ttl", values.get("ttl", 0))),
        cache=values.get("cache", True),
        tags=tuple(values.get("tags", ())),
        max_execution_time=values.get("max_execution_time"),
        max_result_rows=values.get("max_result_rows"),
        settings=values.get("settings", {}),
        columns=tuple(values.get("columns", ())),
    )
    body = "\n" * n + "\n".join(lines[n:])
    return meta, body, n


def _header_value(key: str, value: str) -> Any:
    if key == "cache":
        flag = value.lower()
        if flag not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError("use on or off")
        return flag in ("on", "true", "1")
    if key in ("cache_ttl", "ttl", "max_result_rows"):
        number = int(value)
        if number < 0:
            raise ValueError("must be >= 0")
        return number
    if key == "max_execution_time":
        seconds = float(value)
        if seconds <= 0:
            raise ValueError("must be > 0")
        return seconds
    if key in ("tags", "columns"):
        items = [t.strip() for t in value.split(",") if t.strip()]
        if key == "columns" and not all(NAME_RE.match(c) for c in items):
            raise ValueError("column names must be identifiers")
        return items
    if key == "settings":
        out: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            name, sep, raw = item.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or not re.match(r"^[a-z_][a-z0-9_]*$", name):
                raise ValueError(f"expected name=value, got {item!r}")
            out[name] = _number_or_text(raw)
        return out
    return value


def _number_or_text(raw: str) -> Any:
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw.strip("'\"")


def iter_endpoint_files(directory: Path) -> Iterator[Path]:
    """The endpoint files of a project, sorted; sub-directories (like tests/) are skipped."""
    if directory.is_dir():
        yield from sorted(p for p in directory.glob("*.sql") if p.is_file())


def load_endpoint(path: Path, catalog: Catalog) -> Endpoint | LoadError:
    """Load one file; never raises for a problem in the file itself."""
    name = path.stem
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        return LoadError(path, None, f"invalid endpoint name {name!r}")
    try:
        stat = path.stat()
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LoadError(path, None, f"cannot read: {exc}")
    try:
        meta, body, _ = parse_header(source)
        return compile_endpoint(
            name, body, path=path, meta=meta, catalog=catalog, mtime_ns=stat.st_mtime_ns
        )
    except TemplateError as exc:
        return LoadError(path, exc.line, exc.message)
    except RedpollError as exc:
        return LoadError(path, None, exc.message)


def catalog_from_client(client: Client, database: str | None = None) -> Catalog:
    """Tables and columns of the client's database, from `system.columns`/`system.tables`."""
    db = database or client.database or "default"
    tables: dict[str, set[str]] = {}
    result = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": db}
    )
    for (name,) in result.result_rows:
        tables.setdefault(name, set())
    result = client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}",
        parameters={"db": db},
    )
    for table, column in result.result_rows:
        tables.setdefault(table, set()).add(column)
    return Catalog(db, {k: frozenset(v) for k, v in tables.items()})


#: Categories of `system.functions` whose functions compute on the values they are given
#: and read nothing else (no table, dictionary, setting, file or server state).
_Q_CATEGORIES = (
    "Aggregate Functions",
    "Arithmetic",
    "Arrays",
    "Bit",
    "Bitmap",
    "Comparison",
    "Conditional",
    "Dates and Times",
    "Distance",
    "Encoding",
    "Financial",
    "Geo",
    "Hash",
    "IP Address",
    "JSON",
    "Logical",
    "Map",
    "Mathematical",
    "Null",
    "Random Number",
    "Rounding",
    "String",
    "String Replacement",
    "String Search",
    "String Splitting",
    "Time Window",
    "Tuple",
    "Type Conversion",
    "URL",
    "UUID",
)
#: Pure helpers ClickHouse files under "Other".
_Q_EXTRA = (
    "bar",
    "countDigits",
    "formatReadableDecimalSize",
    "formatReadableQuantity",
    "formatReadableSize",
    "formatReadableTimeDelta",
    "isDecimalOverflow",
    "materialize",
    "parseReadableSize",
    "parseReadableSizeOrNull",
    "parseReadableSizeOrZero",
    "parseTimeDelta",
    "runningDifference",
    "runningDifferenceStartingWithFirstValue",
    "toColumnTypeName",
    "toTypeName",
    "transform",
    "visibleWidth",
)


def q_functions_from_client(client: Client) -> FunctionSet:
    """The functions `q=` may call: pure categories, minus every `IN`-family function
    (their function form takes a table name: `globalIn(x, events)`)."""
    rows = client.query(
        "SELECT f.name, f.case_insensitive, f.is_aggregate,"
        " if(f.alias_to = '', f.categories, t.categories) AS category"
        " FROM system.functions AS f LEFT JOIN system.functions AS t ON f.alias_to = t.name"
    ).result_rows
    allowed = set(_Q_CATEGORIES)
    names: set[str] = set()
    insensitive: set[str] = set()
    aggregates: set[str] = set()
    for name, case_insensitive, is_aggregate, category in rows:
        if not (category in allowed or name in _Q_EXTRA) or _IN_FAMILY.match(name):
            continue
        names.add(name)
        if case_insensitive:
            insensitive.add(name.lower())
        if is_aggregate:
            aggregates.add(name)
    return FunctionSet(frozenset(names), frozenset(insensitive), frozenset(aggregates))


_IN_FAMILY = re.compile(r"^(global)?(not)?(null)?in(ignoreset)?$", re.IGNORECASE)


def function_classes_from_client(client: Client) -> FunctionClasses:
    """The functions whose value differs per call, as the server lists them
    (`system.functions.deterministic = 0`, lower case); an older server without the
    column gets the built-in list (`analysis.FunctionClasses`)."""
    try:
        rows = client.query("SELECT name FROM system.functions WHERE deterministic = 0").result_rows
    except DatabaseError:  # no such column: an older server
        return FunctionClasses()
    return FunctionClasses(frozenset(str(name).lower() for (name,) in rows))
