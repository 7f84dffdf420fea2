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

Two paths, one result. `validate_body` is the fast path for the common case, a body
whose every line is a JSON object and every row valid: each line is decoded by msgspec
straight into a Struct of the data source's columns (no dict per row; a body with fields
the data source does not have is decoded to dicts, as the general path does), then each
column is checked at once (`set(map(type, ...))`, `min`/`max`, lengths)
with the bounds its converter uses (`convert.fast_check`); values of any other kind go
through the column's converter one by one. It returns None as soon as anything would be
quarantined, rejected or numbered (a blank line, a BOM, a line that is not one object, a
value its converter refuses, a missing required field, more rows than `max_rows`), and
the caller then runs the general path, `parse_body` + `validate_rows`, on the same body:
quarantine rows, line numbers and errors come from that path only, so both give the same
batch for every body.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import operator
import threading
import time
import uuid
from collections.abc import Callable
from itertools import repeat
from typing import Any

import msgspec

from redpoll.errors import ConfigError
from redpoll.ingest.convert import EVENT_TIME_MAX, Converter, FastCheck, fast_check
from redpoll.ingest.datasources import Column, DataSource

__all__ = ("QuarantineRow", "ValidatedBatch", "parse_body", "validate_body", "validate_rows")

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
    #: seconds spent per stage ("decode", "validate"), for the service's statistics
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------
# Fast path (see the module docstring): same batch as parse_body + validate_rows, or None.

_UNSET = msgspec.UNSET
_UnsetType = type(_UNSET)
_NoneType = type(None)
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, ValueError, TypeError, OverflowError)
_CONVERT_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)
#: epoch seconds / milliseconds accepted for `ts` (convert.py: [1970, 2100), ms above 1e11)
_MAX_S = int(EVENT_TIME_MAX.timestamp())
_MAX_MS = _MAX_S * 1000
_MS_ABOVE = 10**11


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A data source's row Struct and decoders, built once per `DataSource` object."""

    datasource: DataSource
    decode_line: Callable[[bytes], Any]
    decode_array: Callable[[bytes], Any]
    #: a column's values from the Structs (attributes) or from dicts (`.get`)
    getters: tuple[Callable[[Any], Any], ...]
    dict_getters: tuple[Callable[[Any], Any], ...]
    checks: tuple[FastCheck | None, ...]


_plans: dict[int, _Plan] = {}
_plans_lock = threading.Lock()


def _plan(datasource: DataSource) -> _Plan:
    found = _plans.get(id(datasource))
    if found is not None and found.datasource is datasource:
        return found
    fields = [f"f{i}" for i in range(len(datasource.columns))]
    # Unknown fields are refused, not skipped: msgspec skips a field without checking
    # its UTF-8 or the range of its numbers, so a skipped `1e999` would pass here and be
    # "not valid JSON" in the general path. A body with unknown fields is decoded to
    # dicts instead (the general path's own decoding).
    row = msgspec.defstruct(
        "Row",
        [(field, Any, _UNSET) for field in fields],
        rename={field: c.name for field, c in zip(fields, datasource.columns, strict=True)},
        forbid_unknown_fields=True,
        gc=False,
    )
    plan = _Plan(
        datasource,
        msgspec.json.Decoder(row).decode,
        msgspec.json.Decoder(list[row]).decode,  # type: ignore[valid-type]
        tuple(operator.attrgetter(field) for field in fields),
        tuple(operator.methodcaller("get", c.name, _UNSET) for c in datasource.columns),
        tuple(fast_check(c.convert) for c in datasource.columns),
    )
    with _plans_lock:
        if len(_plans) > 64:  # data sources are re-read after migrations: keep it bounded
            _plans.clear()
        _plans[id(datasource)] = plan
    return plan


def validate_body(datasource: DataSource, body: bytes, max_rows: int = 0) -> ValidatedBatch | None:
    """The batch `validate_rows(datasource, parse_body(body))` gives when it quarantines
    nothing, computed column by column; None when the body needs that general path
    (anything to quarantine or number, or more than `max_rows` rows, 0: no limit)."""
    started = time.perf_counter()
    received_at = dt.datetime.now(dt.UTC)
    plan = _plan(datasource)
    head = body[:1]
    if head == b"{":
        text = body.rstrip()
        if max_rows and text.count(b"\n") >= max_rows:
            return None  # maybe too many rows: the general path counts them exactly
        lines = text.split(b"\n")
    elif head != b"[":
        return None
    getters = plan.getters
    try:
        if head == b"{":
            decode = plan.decode_line
            items = [decode(line) for line in lines]
        else:
            items = plan.decode_array(body)
    except _DECODE_ERRORS:
        # an unknown field, or a line the general path quarantines: decode as it does
        getters = plan.dict_getters
        try:
            items = [_decode(line) for line in lines] if head == b"{" else _decode(body)
        except _DECODE_ERRORS:
            return None
        if not isinstance(items, list) or not all(type(item) is dict for item in items):
            return None
    if not items or (max_rows and len(items) > max_rows):
        return None
    decoded = time.perf_counter()
    generated: dict[str, Callable[[], Any]] = (
        {"event_id": lambda: uuid.uuid4().hex, "ts": lambda: received_at}
        if datasource.uses_landing
        else {}
    )
    columns: dict[str, list[Any]] = {}
    needs_default: dict[str, list[int]] = {}
    for column, getter, check in zip(datasource.columns, getters, plan.checks, strict=True):
        values = list(map(getter, items))
        landing = datasource.uses_landing
        converted = _column(column, check, values, generated, needs_default, landing)
        if converted is None:
            return None
        columns[column.name] = converted
    timings = {"decode": decoded - started, "validate": time.perf_counter() - decoded}
    return ValidatedBatch(columns, len(items), [], needs_default, received_at, timings=timings)


def _column(
    column: Column,
    check: FastCheck | None,
    values: list[Any],
    generated: dict[str, Callable[[], Any]],
    needs_default: dict[str, list[int]],
    landing: bool,
) -> list[Any] | None:
    """One column as `validate_rows` converts it, or None if a row would be quarantined."""
    nullable = column.type.startswith("Nullable")
    kinds = set(map(type, values))
    missing_kinds = {_UnsetType} if nullable else {_UnsetType, _NoneType}
    if not kinds & missing_kinds:
        out = _convert(column, check, values, kinds, landing)
        # "" means "no id", as an absent field
        if out and column.name == "event_id" and "event_id" in generated and "" in out:
            out = [v if v != "" else generated["event_id"]() for v in out]
        return out
    if kinds <= missing_kinds:  # no row has it (a column clients never send)
        if column.default_expression:
            needs_default[column.name] = list(range(len(values)))
            return [None] * len(values)
        if column.name == "event_id" and "event_id" in generated:
            return [generated["event_id"]() for _ in values]
        if column.name in generated:
            return [generated[column.name]()] * len(values)  # the receive time
        if (zero := column.zero) is None and not nullable:
            return None  # "missing required field"
        if isinstance(zero, list | dict):  # Array, Map: one object per row
            return [column.zero for _ in values]
        return [zero] * len(values)
    # some rows lack the field: split, convert the present values, merge back
    missing = [v is _UNSET or (v is None and not nullable) for v in values]
    present = [v for v, gone in zip(values, missing, strict=True) if not gone]
    out = _convert(column, check, present, set(map(type, present)), landing) if present else []
    if out is None:
        return None
    fill: Callable[[], Any] | None = None
    if column.default_expression:
        needs_default[column.name] = [i for i, gone in enumerate(missing) if gone]
        fill = _none
    elif column.name in generated:
        fill = generated[column.name]
    elif (zero := column.zero) is None and not nullable:
        return None  # "missing required field"
    else:
        fill = _const(zero)
    taken = iter(out)
    merged = [fill() if gone else next(taken) for gone in missing]
    if column.name == "event_id" and "event_id" in generated and "" in merged:
        merged = [v if v != "" else generated["event_id"]() for v in merged]
    return merged


def _none() -> None:
    return None


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _convert(
    column: Column, check: FastCheck | None, values: list[Any], kinds: set[type], landing: bool
) -> list[Any] | None:
    """Present values converted as `column.convert` would, or None if one is refused."""
    if not values:
        return values
    if check is not None:
        if check.kind == "str" and kinds == {str}:
            # at most 4 UTF-8 bytes per character: short texts need no encoding to check
            if max(map(len, values)) * 4 > check.cap and any(
                len(v.encode()) > check.cap for v in values if len(v) * 4 > check.cap
            ):
                return None
            return values
        if check.kind == "int" and kinds == {int}:
            return values if check.low <= min(values) and max(values) <= check.high else None
        if check.kind == "float" and kinds <= {int, float}:
            try:
                numbers = values if kinds == {float} else list(map(float, values))
            except OverflowError:
                return None
            if not all(map(math.isfinite, numbers)):
                return None
            if check.limit != math.inf and max(map(abs, numbers)) > check.limit:
                return None
            return numbers
    if landing and column.name == "ts" and kinds == {int}:
        return _epoch_ts(values, column.convert)
    return _each(column.convert, values)


def _epoch_ts(values: list[int], convert: Converter) -> list[Any] | None:
    """Integer epochs of the landing `ts`, as numbers the writer turns into the same
    milliseconds as the datetimes `convert` returns (writer.py `epoch_ms`: a number is
    seconds): seconds stay as they are, milliseconds become `ms / 1000` (exact once the
    writer rounds `* 1000`: below 2**42 ms the error is far under 0.5 ms)."""
    low, high = min(values), max(values)
    if low >= 0 and high < _MAX_S:
        return list(values)
    if low > _MS_ABOVE and high < _MAX_MS:
        return list(map(operator.truediv, values, repeat(1000)))
    return _each(convert, values)  # mixed units or out of range: one by one


def _each(convert: Converter, values: list[Any]) -> list[Any] | None:
    try:
        return [convert(v) for v in values]
    except _CONVERT_ERRORS:
        return None
