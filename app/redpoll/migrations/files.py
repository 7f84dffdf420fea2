"""Migration files: discovery, checksums, rendering and statement splitting.

A migration is `migrations/NNNN_name.sql`: one or more ClickHouse statements separated
by `;`. Before running, the text is rendered with Jinja2 variables (`{{ database }}`,
`{{ cluster }}`, `{{ on_cluster }}`) so one file serves a single node and a cluster. The
checksum is taken over the file as written, so it does not depend on those variables.
Statements are split with sqlglot's ClickHouse tokenizer, so `;` inside strings and
comments is not a separator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import jinja2
from sqlglot import TokenType
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import TokenError

from redpoll.errors import MigrationError

__all__ = (
    "MigrationFile",
    "Statement",
    "discover",
    "render_statements",
    "sha256",
    "template_variables",
)

FILE_NAME = re.compile(r"^(?P<version>\d{4,})_(?P<name>[a-z0-9_]+)\.sql$")
_JINJA = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a migration, with the line it starts on in the file."""

    index: int
    line: int
    sql: str

    @property
    def checksum(self) -> str:
        return sha256(self.sql)

    def headline(self) -> str:
        first = " ".join(self.sql.split())
        return first if len(first) <= 100 else first[:97] + "..."


@dataclasses.dataclass(frozen=True)
class MigrationFile:
    version: int
    name: str
    path: Path
    text: str

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def checksum(self) -> str:
        return sha256(self.text)


def discover(directory: Path) -> list[MigrationFile]:
    """All migration files in `directory`, ordered by version.

    Raises:
        MigrationError: a `.sql` file with a name that is not `NNNN_name.sql`, or two
            files with the same version.
    """
    if not directory.is_dir():
        return []
    found: dict[int, MigrationFile] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path}: migration file names must look like 0001_name.sql "
                "(digits, underscore, lower-case name)"
            )
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"{path}: version {version} is also used by {found[version].path.name}"
            )
        found[version] = MigrationFile(
            version, match["name"], path, path.read_text(encoding="utf-8")
        )
    return [found[v] for v in sorted(found)]


def template_variables(database: str, cluster: str) -> dict[str, str]:
    """The variables a migration may use."""
    return {
        "database": database,
        "cluster": cluster,
        "on_cluster": f"ON CLUSTER `{cluster}`" if cluster else "",
    }


def render_statements(migration: MigrationFile, variables: Mapping[str, str]) -> list[Statement]:
    """Render the file's template and split it into statements.

    Raises:
        MigrationError: naming the file (and line) on a template or tokenizer error.
    """
    try:
        rendered = _JINJA.from_string(migration.text).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise MigrationError(
            f"{migration.path}:{exc.lineno}: template error: {exc.message}"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise MigrationError(f"{migration.path}: template error: {exc.message}") from exc
    try:
        tokens = ClickHouse().tokenize(rendered)
    except TokenError as exc:
        raise MigrationError(f"{migration.path}: cannot split statements: {exc}") from exc

    statements: list[Statement] = []
    start = 0
    cuts = [t.start for t in tokens if t.token_type == TokenType.SEMICOLON] + [len(rendered)]
    for cut in cuts:
        chunk = rendered[start:cut]
        first_line = _first_code_line(chunk)
        if first_line is not None:
            line = rendered.count("\n", 0, start) + first_line
            statements.append(Statement(len(statements) + 1, line, chunk.strip()))
        start = cut + 1
    return statements


def _first_code_line(chunk: str) -> int | None:
    """Line (1-based, within the chunk) of the first token; None for comments only."""
    tokens = ClickHouse().tokenize(chunk)
    return tokens[0].line if tokens else None
