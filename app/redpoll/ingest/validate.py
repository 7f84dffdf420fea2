"""Turn a request body into validated columns plus quarantined rows.

Bodies are NDJSON (one JSON object per line), a single JSON object, or a JSON array of
objects. A line that is not a JSON object, or whose field does not fit its column, is
quarantined with its raw text, the column and the error; the other rows go on. Unknown
fields are ignored (as Tinybird does); a missing field gets the column's DEFAULT
expression (evaluated by ClickHouse per row), else the type's zero value; on the landing
path `event_id` and `ts` are left empty for the writer to generate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import msgspec

from redpoll.ingest.datasources import DataSource

__all__ = ("QuarantineRow", "ValidatedBatch", "parse_body", "validate_rows")

_decode = msgspec.json.Decoder().decode
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class QuarantineRow:
    line: int
    column: str
    error: str
    raw: str


@dataclasses.dataclass
class ValidatedBatch:
    """Rows that passed, column by column, and the rows that did not."""

    columns: dict[str, list[Any]]
    rows: int
    quarantined: list[QuarantineRow]
    #: column -> row indexes whose value must come from the column's DEFAULT expression
    needs_default: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    received_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))


def parse_body(body: bytes, first_line: int = 1) -> list[tuple[int, bytes, Any]]:
    """Split a body into `(line number, raw bytes, decoded value or _MISSING)`.

    A body whose first character is `[` is one JSON array; otherwise each non-empty line
    is one JSON document (which also covers a single object). `first_line` numbers the
    lines of a chunk as lines of the file it came from (`redpoll load`).
    """
    stripped = body.strip()
    if stripped.startswith(b"["):
        try:
            items = _decode(stripped)
        except msgspec.DecodeError:
            return [(first_line, stripped, _MISSING)]
        if isinstance(items, list):
            return [
                (first_line + i, msgspec.json.encode(item), item) for i, item in enumerate(items)
            ]
    out = []
    for number, line in enumerate(body.split(b"\n"), start=first_line):
        line = line.strip()
        if not line:
            continue
        try:
            out.append((number, line, _decode(line)))
        except msgspec.DecodeError:
            out.append((number, line, _MISSING))
    return out


def validate_rows(datasource: DataSource, parsed: list[tuple[int, bytes, Any]]) -> ValidatedBatch:
    """Convert every field to its column's type; quarantine what does not fit."""
    columns: dict[str, list[Any]] = {c.name: [] for c in datasource.columns}
    needs_default: dict[str, list[int]] = {}
    quarantined: list[QuarantineRow] = []
    writer_fills = {"event_id", "ts"} if datasource.uses_landing else set()
    rows = 0
    for number, raw, value in parsed:
        if not isinstance(value, dict):
            error = "not valid JSON" if value is _MISSING else "expected a JSON object"
            quarantined.append(QuarantineRow(number, "", error, _text(raw)))
            continue
        converted: list[Any] = []
        defaults: list[str] = []
        failed = None
        for column in datasource.columns:
            field = value.get(column.name, _MISSING)
            if field is _MISSING or (field is None and not column.type.startswith("Nullable")):
                if column.default_expression:
                    defaults.append(column.name)
                    converted.append(None)
                elif column.name in writer_fills:
                    converted.append(None)
                elif (zero := column.zero) is None and not column.type.startswith("Nullable"):
                    failed = QuarantineRow(
                        number, column.name, "missing required field", _text(raw)
                    )
                    break
                else:
                    converted.append(zero)
                continue
            try:
                converted.append(column.convert(field))
            except (ValueError, TypeError, OverflowError) as exc:
                failed = QuarantineRow(number, column.name, str(exc), _text(raw))
                break
        if failed:
            quarantined.append(failed)
            continue
        for column, item in zip(datasource.columns, converted, strict=True):
            columns[column.name].append(item)
        for name in defaults:
            needs_default.setdefault(name, []).append(rows)
        rows += 1
    return ValidatedBatch(columns, rows, quarantined, needs_default)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
