"""Convert decoded JSON values to what a ClickHouse column accepts, or say why not.

`converter_for(type_name)` returns a function `value -> python value` that raises
`ValueError` with a message fit for a quarantine row. Types are parsed from ClickHouse's
own type names (as `system.columns` reports them), wrappers first: `Nullable(X)`,
`LowCardinality(X)`, then `Array(X)`, `Map(K, V)`, numbers, strings, dates, UUID, Enum.

Choices (documented in docs/ingestion.md): String columns also accept numbers and
booleans (as their JSON text) and objects/arrays (as compact JSON), because ids and
free-form `properties` arrive that way; integers accept integral strings; dates accept
ISO 8601 / `YYYY-MM-DD hh:mm:ss[.fff]` strings (UTC unless an offset is given) and epoch
numbers (seconds, or milliseconds when above 1e11).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ("Converter", "converter_for", "split_type_args")

Converter = Callable[[Any], Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds (year 5138 in seconds)
_INT = re.compile(r"^(U?)Int(8|16|32|64|128|256)$")
_DATETIME_MAX = dt.datetime(2106, 2, 7, 6, 28, 15, tzinfo=dt.UTC)
_DATETIME64_MIN = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_DATETIME64_MAX = dt.datetime(2299, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
_json_encode = msgspec.json.Encoder().encode


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


def converter_for(type_name: str) -> Converter:
    """Build the converter for one ClickHouse type name.

    Raises:
        ValueError: the type is not supported for ingestion.
    """
    type_name = type_name.strip()
    if (inner := _unwrap(type_name, "LowCardinality")) is not None:
        return converter_for(inner)
    if (inner := _unwrap(type_name, "Nullable")) is not None:
        base = converter_for(inner)
        return lambda v: None if v is None else base(v)
    if (inner := _unwrap(type_name, "Array")) is not None:
        return _array(converter_for(inner))
    if (inner := _unwrap(type_name, "Map")) is not None:
        key_type, value_type = split_type_args(inner)
        return _map(converter_for(key_type), converter_for(value_type))
    if type_name == "String" or type_name.startswith("FixedString("):
        return _string
    if match := _INT.match(type_name):
        bits = int(match[2])
        low, high = (0, 2**bits - 1) if match[1] else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return _integer(type_name, low, high)
    if type_name in {"Float32", "Float64"}:
        return _float
    if type_name in {"Bool", "Boolean"}:
        return _bool
    if type_name.startswith("Decimal"):
        return _decimal
    if type_name in {"Date", "Date32"}:
        return _date
    if type_name == "DateTime" or type_name.startswith("DateTime("):
        return _datetime(_EPOCH, _DATETIME_MAX, type_name)
    if type_name.startswith("DateTime64"):
        return _datetime(_DATETIME64_MIN, _DATETIME64_MAX, type_name)
    if type_name == "UUID":
        return _uuid
    if (inner := _unwrap(type_name, "Enum8") or _unwrap(type_name, "Enum16")) is not None:
        names = {part.split("=")[0].strip().strip("'") for part in split_type_args(inner)}
        return _enum(names)
    raise ValueError(f"column type {type_name} is not supported for ingestion")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return _json_encode(value).decode()


def _integer(type_name: str, low: int, high: int) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {type_name}, got a boolean")
        if isinstance(value, int):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or _is_integer_text(value):
            number = int(value)
        else:
            raise ValueError(f"expected {type_name}, got {_show(value)}")
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range for {type_name}")
        return number

    return convert


def _is_integer_text(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value) is not None


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {_show(value)}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    raise ValueError(f"expected a boolean, got {_show(value)}")


def _decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a decimal number, got {_show(value)}")
    try:
        number = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise ValueError(f"expected a decimal number, got {_show(value)}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite decimal, got {_show(value)}")
    return number


def parse_timestamp(value: Any) -> dt.datetime:
    """An aware UTC datetime from an ISO string or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a date/time, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a date/time, got {value}")
        seconds = value / 1000 if abs(value) > _MS_THRESHOLD else value
        try:
            return _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{value} is out of range for a date/time") from None
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
        return parsed.astimezone(dt.UTC)
    raise ValueError(f"expected a date/time, got {_show(value)}")


def _datetime(low: dt.datetime, high: dt.datetime, type_name: str) -> Converter:
    def convert(value: Any) -> dt.datetime:
        parsed = parse_timestamp(value)
        if not low <= parsed <= high:
            raise ValueError(f"{parsed.isoformat()} is out of range for {type_name}")
        return parsed

    return convert


def _date(value: Any) -> dt.date:
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD, got {_show(value)}") from None
    return parse_timestamp(value).date()


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


def _show(value: Any) -> str:
    text = _json_encode(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
