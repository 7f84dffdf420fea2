"""Convert decoded JSON values to what a ClickHouse column accepts, or say why not.

`converter_for(type_name, column, limits)` returns a function `value -> python value`
that raises `ValueError` with a message fit for a quarantine row. Types are parsed from
ClickHouse's own type names (as `system.columns` reports them), wrappers first:
`Nullable(X)`, `LowCardinality(X)`, then `Array(X)`, `Map(K, V)`, numbers, strings,
dates, UUID, Enum.

Choices (documented in docs/ingestion.md). Nothing is coerced silently: a value
is either what the column means or the row is quarantined with the reason.
- String columns accept JSON strings only: a number or boolean would be stored as a text
  the client never sent (`1.0` -> "1.0", ids that lose leading zeros), an object as JSON
  text. The exception is a String column named `properties` (free-form JSON text), which
  also accepts an object or array, stored as compact JSON.
- Strings are capped in UTF-8 bytes: `*_id` columns at `max_id_bytes`, other String
  columns at `max_field_bytes` (settings), FixedString(N) at N.
- Numbers accept numeric strings, because CSV (`redpoll load`) only has strings and JSON
  clients send 64-bit integers as strings; integers must be integral and in range, floats
  finite, decimals within their precision.
- DateTime/DateTime64 accept ISO 8601 / `YYYY-MM-DD hh:mm:ss[.fff]` strings (UTC unless an
  offset is given) and epoch numbers (seconds, or milliseconds when above 1e11), and only
  1970-01-01T00:00:00Z <= t < 2100-01-01 (a negative or absurd epoch is a client bug, not
  an event time). Date/Date32 are checked against their own ranges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import math
import re
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from redpoll.settings import setting_default, setting_value

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = (
    "EVENT_TIME_MAX",
    "EVENT_TIME_MIN",
    "Converter",
    "FastCheck",
    "Limits",
    "converter_for",
    "fast_check",
    "parse_timestamp",
    "split_type_args",
)

Converter = Callable[[Any], Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds (year 5138 in seconds)
_INT = re.compile(r"^(U?)Int(8|16|32|64|128|256)$")
_INTEGER_TEXT = re.compile(r"\s*[-+]?\d{1,100}\s*")
#: Accepted event times (DateTime, DateTime64): [EVENT_TIME_MIN, EVENT_TIME_MAX).
EVENT_TIME_MIN = _EPOCH
EVENT_TIME_MAX = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
_DATE_RANGE = (dt.date(1970, 1, 1), dt.date(2149, 6, 6))
_DATE32_RANGE = (dt.date(1900, 1, 1), dt.date(2299, 12, 31))
_FLOAT32_MAX = 3.4028234663852886e38
_DECIMAL_PRECISION = {"Decimal32": 9, "Decimal64": 18, "Decimal128": 38, "Decimal256": 76}
_json_encode = msgspec.json.Encoder().encode


@dataclasses.dataclass(frozen=True)
class FastCheck:
    """What a converter does to the common JSON kind of its column, so a whole column can
    be checked at once (`validate.py`'s fast path) with the converter's exact result:

    - `str`: a JSON string is kept as is if its UTF-8 size is at most `cap`;
    - `int`: a JSON integer is kept as is if `low <= value <= high`;
    - `float`: a JSON number becomes `float(value)` if finite and `abs(value) <= limit`.

    Any other value goes through the converter itself.
    """

    kind: str  # "str", "int" or "float"
    cap: int = 0
    low: int = 0
    high: int = 0
    limit: float = math.inf


_FAST: weakref.WeakKeyDictionary[Converter, FastCheck] = weakref.WeakKeyDictionary()


def fast_check(convert: Converter) -> FastCheck | None:
    """The column-at-once description of a converter built by `converter_for`, if any
    (top-level String, integer and float columns)."""
    return _FAST.get(convert)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Length caps of ingested String values; defaults are the settings' defaults."""

    max_id_bytes: int = setting_default("max_id_bytes")
    max_field_bytes: int = setting_default("max_field_bytes")

    @classmethod
    def from_settings(cls, settings: Settings | None) -> Limits:
        return cls(*(setting_value(settings, n) for n in ("max_id_bytes", "max_field_bytes")))

    def for_column(self, column: str) -> int:
        """`*_id` columns hold ids (short); every other String column a free field."""
        return self.max_id_bytes if column.endswith("_id") else self.max_field_bytes


def split_type_args(inner: str) -> list[str]:
    """Split `A, B(C, D), 'x,y'` at top-level commas."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(inner):
        if ch == "'" and (i == 0 or inner[i - 1] != "\\"):
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return [p for p in parts if p]


def _unwrap(type_name: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    if type_name.startswith(prefix) and type_name.endswith(")"):
        return type_name[len(prefix) : -1]
    return None


def converter_for(type_name: str, column: str = "", limits: Limits | None = None) -> Converter:
    """Build the converter for one ClickHouse type name of column `column` (its name
    decides the String length cap and whether `properties` may be an object).

    Raises:
        ValueError: the type is not supported for ingestion.
    """
    return _build(type_name.strip(), column, limits or Limits(), top=True)


def _build(type_name: str, column: str, limits: Limits, top: bool) -> Converter:
    if (inner := _unwrap(type_name, "LowCardinality")) is not None:
        return _build(inner, column, limits, top)
    if (inner := _unwrap(type_name, "Nullable")) is not None:
        base = _build(inner, column, limits, top)
        return lambda v: None if v is None else base(v)
    if (inner := _unwrap(type_name, "Array")) is not None:
        return _array(_build(inner, column, limits, top=False))
    if (inner := _unwrap(type_name, "Map")) is not None:
        key_type, value_type = split_type_args(inner)
        return _map(
            _build(key_type, column, limits, top=False),
            _build(value_type, column, limits, top=False),
        )
    if type_name == "String":
        return _string(limits.for_column(column), json_text=top and column == "properties")
    if (size := _unwrap(type_name, "FixedString")) is not None:
        return _string(int(size), json_text=False, fixed=True)
    if match := _INT.match(type_name):
        bits = int(match[2])
        low, high = (0, 2**bits - 1) if match[1] else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return _integer(type_name, low, high)
    if type_name in {"Float32", "Float64"}:
        return _float(_FLOAT32_MAX if type_name == "Float32" else math.inf)
    if type_name in {"Bool", "Boolean"}:
        return _bool
    if type_name.startswith("Decimal"):
        return _decimal(type_name)
    if type_name == "Date":
        return _date(*_DATE_RANGE, type_name)
    if type_name == "Date32":
        return _date(*_DATE32_RANGE, type_name)
    if type_name == "DateTime" or type_name.startswith(("DateTime(", "DateTime64")):
        return _datetime(type_name)
    if type_name == "UUID":
        return _uuid
    if (inner := _unwrap(type_name, "Enum8") or _unwrap(type_name, "Enum16")) is not None:
        names = {part.split("=")[0].strip().strip("'") for part in split_type_args(inner)}
        return _enum(names)
    raise ValueError(f"column type {type_name} is not supported for ingestion")


def _string(cap: int, json_text: bool, fixed: bool = False) -> Converter:
    expected = "a string, an object or an array" if json_text else "a string"

    def convert(value: Any) -> str:
        if isinstance(value, str):
            text = value
        elif json_text and isinstance(value, dict | list):
            text = _json_encode(value).decode()
        else:
            raise ValueError(f"expected {expected}, got {_kind(value)} {_show(value)}")
        # at most 4 UTF-8 bytes per character: short texts need no encoding to check
        if len(text) * 4 > cap and (size := len(text.encode())) > cap:
            what = f"FixedString({cap})" if fixed else f"the {cap}-byte limit"
            raise ValueError(f"{size} bytes is longer than {what}")
        return text

    _FAST[convert] = FastCheck("str", cap=cap)
    return convert


def _integer(type_name: str, low: int, high: int) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {type_name}, got a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            number = int(value)  # CSV gives only strings; JSON clients quote 64-bit ints
        else:
            raise ValueError(f"expected {type_name}, got {_show(value)}")
        if not low <= number <= high:
            raise ValueError(f"{_show(number)} is out of range for {type_name}")
        return number

    _FAST[convert] = FastCheck("int", low=low, high=high)
    return convert


def _float(limit: float) -> Converter:
    def convert(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        number: float | None = None
        if isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:
                raise ValueError(f"{_show(value)} is out of range for a float") from None
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ValueError(f"expected a number, got {_show(value)}")
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {_show(value)}")
        if abs(number) > limit:
            raise ValueError(f"{_show(value)} is out of range for Float32")
        return number

    _FAST[convert] = FastCheck("float", limit=limit)
    return convert


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    raise ValueError(f"expected a boolean, got {_show(value)}")


def _decimal(type_name: str) -> Converter:
    """Decimal(P, S) or DecimalNN(S): the integer part must fit in P - S digits."""
    args = split_type_args(type_name[type_name.index("(") + 1 : -1]) if "(" in type_name else []
    family = type_name.split("(")[0]
    if family in _DECIMAL_PRECISION:
        precision, scale = _DECIMAL_PRECISION[family], int(args[0]) if args else 0
    else:
        precision = int(args[0]) if args else 10
        scale = int(args[1]) if len(args) > 1 else 0
    bound = decimal.Decimal(10) ** (precision - scale)

    def convert(value: Any) -> decimal.Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a decimal number, got {_show(value)}")
        try:
            number = decimal.Decimal(str(value))
        except (decimal.InvalidOperation, ValueError):
            raise ValueError(f"expected a decimal number, got {_show(value)}") from None
        if not number.is_finite():
            raise ValueError(f"expected a finite decimal, got {_show(value)}")
        if abs(number) >= bound:
            raise ValueError(f"{_show(value)} is out of range for {type_name}")
        return number

    return convert


def parse_timestamp(value: Any) -> dt.datetime:
    """An aware UTC datetime from an ISO string or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a date/time, got a boolean")
    if isinstance(value, int | float):
        try:
            if not math.isfinite(value):
                raise ValueError(f"expected a date/time, got {value}")
            seconds = value / 1000 if abs(value) > _MS_THRESHOLD else value
            return _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{_show(value)} is out of range for a date/time") from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 date/time, got {_show(value)}") from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(f"{_show(value)} is out of range for a date/time") from None
    raise ValueError(f"expected a date/time, got {_show(value)}")


def _datetime(type_name: str) -> Converter:
    def convert(value: Any) -> dt.datetime:
        parsed = parse_timestamp(value)
        if not EVENT_TIME_MIN <= parsed < EVENT_TIME_MAX:
            raise ValueError(
                f"{parsed.isoformat()} is out of range for {type_name}"
                " (accepted: 1970-01-01T00:00:00Z <= t < 2100-01-01T00:00:00Z)"
            )
        return parsed

    return convert


def _date(low: dt.date, high: dt.date, type_name: str) -> Converter:
    def convert(value: Any) -> dt.date:
        if isinstance(value, str) and len(value.strip()) == 10:
            try:
                day = dt.date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"expected a date YYYY-MM-DD, got {_show(value)}") from None
        else:
            day = parse_timestamp(value).date()
        if not low <= day <= high:
            raise ValueError(f"{day.isoformat()} is out of range for {type_name}")
        return day

    return convert


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValueError(f"expected a UUID, got {_show(value)}")


def _enum(names: set[str]) -> Converter:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value in names:
            return value
        raise ValueError(f"expected one of {sorted(names)}, got {_show(value)}")

    return convert


def _array(item: Converter) -> Converter:
    def convert(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"expected an array, got {_show(value)}")
        return [item(v) for v in value]

    return convert


def _map(key: Converter, val: Converter) -> Converter:
    def convert(value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {_show(value)}")
        return {key(k): val(v) for k, v in value.items()}

    return convert


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    """A short rendering of a value for an error message (never the whole value)."""
    if isinstance(value, str):
        text = repr(value[:61])
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        text = f"a {value.bit_length()}-bit integer"  # str() of a huge int is slow
    else:
        try:
            text = _json_encode(value).decode()
        except (RecursionError, TypeError, ValueError, OverflowError):
            text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
