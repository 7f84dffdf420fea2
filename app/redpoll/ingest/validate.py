"""Turn a request body into validated columns plus quarantined rows.

Bodies are NDJSON (one JSON object per line), a single JSON object, or a JSON array of
objects. A UTF-8 byte order mark at the start of the body or of a line is ignored. A line
that is not a JSON object, is nested too deeply to decode (msgspec's depth limit), or
whose field does not fit its column (`convert.py`) is quarantined with its raw text, the
column and the error; the other rows go on. A body that is one JSON array nested too
deeply is rejected as a whole (400): it has no lines to quarantine separately. Unknown
fields are ignored (as Tinybird does); a missing field gets the column's DEFAULT
expression (evaluated by ClickHouse per row), else the type's zero value.

On the landing path (`events`) a missing or empty `event_id` is generated here, once per
validated batch, and a missing `ts` is the batch's receive time: the rows then keep the
same ids through every retry of their INSERT (`service.py`), so a retry can only
deduplicate, never store a row twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from redpoll.errors import ConfigError
from redpoll.ingest.datasources import DataSource

__all__ = ("QuarantineRow", "ValidatedBatch", "parse_body", "validate_rows")

_decode = msgspec.json.Decoder().decode
_MISSING = object()  # the line is not valid JSON
_TOO_DEEP = object()  # the line is JSON nested deeper than the decoder accepts
_BOM = b"\xef\xbb\xbf"
#: Longest raw text kept in a quarantine row (the rest is cut, with a note).
MAX_RAW_BYTES = 64 * 1024


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
    #: set by the committer once `quarantined` is stored, so a retry does not store it twice
    quarantine_written: bool = False


def _strip(raw: bytes) -> bytes:
    raw = raw.strip()
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :].strip()
    return raw


def parse_body(body: bytes, first_line: int = 1) -> list[tuple[int, bytes, Any]]:
    """Split a body into `(line number, raw bytes, decoded value or a marker)`.

    A body whose first character is `[` is one JSON array; otherwise each non-empty line
    is one JSON document (which also covers a single object). `first_line` numbers the
    lines of a chunk as lines of the file it came from (`redpoll load`).

    Raises:
        ConfigError: the body is one JSON array nested too deeply to decode.
    """
    stripped = _strip(body)
    if stripped.startswith(b"["):
        try:
            items = _decode(stripped)
        except msgspec.DecodeError:
            return [(first_line, stripped, _MISSING)]
        except RecursionError:
            raise ConfigError("the body is JSON nested too deeply") from None
        if isinstance(items, list):
            out = []
            for i, item in enumerate(items):
                try:
                    raw = msgspec.json.encode(item)
                except RecursionError:  # pragma: no cover - decoded values encode back
                    out.append((first_line + i, b"", _TOO_DEEP))
                    continue
                out.append((first_line + i, raw, item))
            return out
    out = []
    for number, line in enumerate(body.split(b"\n"), start=first_line):
        line = _strip(line)
        if not line:
            continue
        try:
            out.append((number, line, _decode(line)))
        except msgspec.DecodeError:
            out.append((number, line, _MISSING))
        except RecursionError:
            out.append((number, line, _TOO_DEEP))
    return out


def validate_rows(datasource: DataSource, parsed: list[tuple[int, bytes, Any]]) -> ValidatedBatch:
    """Convert every field to its column's type; quarantine what does not fit."""
    received_at = dt.datetime.now(dt.UTC)
    columns: dict[str, list[Any]] = {c.name: [] for c in datasource.columns}
    needs_default: dict[str, list[int]] = {}
    quarantined: list[QuarantineRow] = []
    generated: dict[str, Callable[[], Any]] = (
        {"event_id": lambda: uuid.uuid4().hex, "ts": lambda: received_at}
        if datasource.uses_landing
        else {}
    )
    rows = 0
    for number, raw, value in parsed:
        if not isinstance(value, dict):
            if value is _MISSING:
                error = "not valid JSON"
            elif value is _TOO_DEEP:
                error = "JSON nested too deeply"
            else:
                error = "expected a JSON object"
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
                elif column.name in generated:
                    converted.append(generated[column.name]())
                elif (zero := column.zero) is None and not column.type.startswith("Nullable"):
                    failed = QuarantineRow(
                        number, column.name, "missing required field", _text(raw)
                    )
                    break
                else:
                    converted.append(zero)
                continue
            try:
                item = column.convert(field)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                failed = QuarantineRow(number, column.name, str(exc), _text(raw))
                break
            if item == "" and column.name == "event_id" and "event_id" in generated:
                item = generated["event_id"]()  # "" means "no id", as an absent field
            converted.append(item)
        if failed:
            quarantined.append(failed)
            continue
        for column, item in zip(datasource.columns, converted, strict=True):
            columns[column.name].append(item)
        for name in defaults:
            needs_default.setdefault(name, []).append(rows)
        rows += 1
    return ValidatedBatch(columns, rows, quarantined, needs_default, received_at)


def _text(raw: bytes) -> str:
    if len(raw) > MAX_RAW_BYTES:
        note = f"... ({len(raw)} bytes, cut)"
        return raw[:MAX_RAW_BYTES].decode("utf-8", errors="ignore") + note
    return raw.decode("utf-8", errors="replace")
