"""Plain data for endpoints: what a loaded `endpoints/<name>.sql` file is.

Nothing here does I/O. `loader.py` builds these objects, `compiler.py` renders them,
`registry.py` keeps an immutable snapshot of them and `api/pipes.py` serves them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template

__all__ = (
    "Catalog",
    "Endpoint",
    "EndpointMeta",
    "FunctionSet",
    "LoadError",
    "ParamSpec",
    "Rendered",
)

#: Suffixes ClickHouse lets any aggregate function take (`sumIf`, `uniqExactState`, ...).
AGGREGATE_COMBINATORS = (
    "MergeState",
    "SimpleState",
    "OrDefault",
    "Distinct",
    "Resample",
    "ForEach",
    "OrNull",
    "ArgMin",
    "ArgMax",
    "State",
    "Merge",
    "Array",
    "Map",
    "If",
)


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The tables an endpoint may read and their columns (for `column()` allow-lists).

    Build it with `Catalog.from_tables({"events", ...})` when only names are known, or
    from `system.columns` with `loader.catalog_from_client`.
    """

    database: str = "default"
    tables: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_tables(
        cls, tables: Mapping[str, Any] | set[str] | frozenset[str], database: str = "default"
    ) -> Catalog:
        if isinstance(tables, Mapping):
            return cls(database, {k: frozenset(v) for k, v in tables.items()})
        return cls(database, {name: frozenset() for name in tables})

    def columns_of(self, tables: set[str] | frozenset[str]) -> frozenset[str]:
        out: set[str] = set()
        for table in tables:
            out |= self.tables.get(table, frozenset())
        return frozenset(out)


@dataclasses.dataclass(frozen=True)
class FunctionSet:
    """The ClickHouse functions a caller's `q=` may call (an allow-list).

    Built from `system.functions` by `loader.q_functions_from_client`; names are
    case-sensitive unless ClickHouse says the function is case-insensitive.
    """

    names: frozenset[str] = frozenset()
    case_insensitive: frozenset[str] = frozenset()  # lower-cased
    aggregates: frozenset[str] = frozenset()

    def allows(self, name: str) -> bool:
        if name in self.names or name.lower() in self.case_insensitive:
            return True
        base = name
        stripped = True
        while stripped:  # sumIf, uniqExactIfState, groupArrayOrNull...
            stripped = False
            for suffix in AGGREGATE_COMBINATORS:
                if base.endswith(suffix) and len(base) > len(suffix):
                    base = base[: -len(suffix)]
                    if base in self.aggregates:
                        return True
                    stripped = True
                    break
        return False


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One request parameter as the template declares it (for docs, OpenAPI, errors)."""

    name: str
    type: str = "String"  # Redpoll/Tinybird type name, e.g. "Int32" or "Array(String)"
    default: Any = None
    required: bool = False
    description: str = ""
    example: Any = None
    enum: tuple[Any, ...] | None = None
    min: Any = None
    max: Any = None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["enum"] = list(self.enum) if self.enum is not None else None
        return {k: v for k, v in data.items() if v not in (None, "")}


@dataclasses.dataclass(frozen=True)
class EndpointMeta:
    """The leading `-- key: value` comment block of an endpoint file (see docs/endpoints.md)."""

    description: str = ""
    #: > 0: the result cache serves an answer for at most this many seconds (TTL mode,
    #: endpoints/cache.py), also sent as `Cache-Control: max-age`
    cache_ttl: int = 0
    #: False (`-- cache: off`): never answered from the result cache
    cache: bool = True
    tags: tuple[str, ...] = ()
    max_execution_time: float | None = None
    max_result_rows: int | None = None
    settings: Mapping[str, str | int | float] = dataclasses.field(default_factory=dict)
    columns: tuple[str, ...] = ()  # extra allow-listed identifiers for column()/symbol()


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A compiled endpoint: the Jinja template plus everything learned when it loaded."""

    name: str
    path: Path
    source: str
    meta: EndpointMeta
    template: Template
    params: tuple[ParamSpec, ...]
    tables: frozenset[str]
    identifiers: frozenset[str]  # names column()/columns()/symbol() accept
    mtime_ns: int = 0

    def param(self, name: str) -> ParamSpec | None:
        for spec in self.params:
            if spec.name == name:
                return spec
        return None

    def describe(self) -> dict[str, Any]:
        """The public description used by `GET /v0/pipes` and `redpoll endpoints list`."""
        return {
            "name": self.name,
            "description": self.meta.description,
            "tags": list(self.meta.tags),
            "cache_ttl": self.meta.cache_ttl,
            "cache": self.meta.cache,
            "params": [p.as_dict() for p in self.params],
            "tables": sorted(self.tables),
        }


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One request's SQL (values appear only as `{p_name:Type}`) and its bound values."""

    sql: str
    parameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class LoadError:
    """Why a file could not be (re)loaded: `path:line: message`."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"
