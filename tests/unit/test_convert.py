"""Every supported column type: what it accepts and what it quarantines (and why).

The rules are the ones docs/ingestion.md documents: no silent coercion to String,
length caps on String values, event times within [1970, 2100).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from redpoll.ingest import convert
from redpoll.ingest.convert import converter_for

UTC = dt.UTC

GOOD = [
    ("String", "héllo", "héllo"),
    ("LowCardinality(String)", "view", "view"),
    ("FixedString(3)", "abc", "abc"),
    ("Int8", -128, -128),
    ("UInt8", "255", 255),
    ("Int32", 7.0, 7),
    ("UInt64", 2**64 - 1, 2**64 - 1),
    ("Int128", -(2**127), -(2**127)),
    ("UInt256", 2**256 - 1, 2**256 - 1),
    ("Float32", 1, 1.0),
    ("Float64", "2.5", 2.5),
    ("Float32", -3.4e38, -3.4e38),
    ("Bool", "true", True),
    ("Bool", 0, False),
    ("Decimal(10, 2)", "12.34", decimal.Decimal("12.34")),
    ("Decimal(10, 2)", "-99999999.99", decimal.Decimal("-99999999.99")),
    ("Decimal64(4)", 12, decimal.Decimal(12)),
    ("Date", "2024-02-29", dt.date(2024, 2, 29)),
    ("Date32", 0, dt.date(1970, 1, 1)),
    ("Date32", "1900-01-01", dt.date(1900, 1, 1)),
    ("DateTime", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("DateTime('UTC')", 1_700_000_000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    (
        "DateTime64(3, 'UTC')",
        "2024-01-02T03:04:05.678Z",
        dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    ),
    ("DateTime64(3)", 1_700_000_000_123, dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    ("DateTime64(3)", "2024-01-02T05:04:05+02:00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("DateTime64(3)", 0, dt.datetime(1970, 1, 1, tzinfo=UTC)),
    (
        "DateTime64(3, 'UTC')",
        "2099-12-31T23:59:59.999Z",
        dt.datetime(2099, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ),
    (
        "UUID",
        "9f1c2b4e-8a3d-4c5e-9f10-1a2b3c4d5e6f",
        uuid.UUID("9f1c2b4e-8a3d-4c5e-9f10-1a2b3c4d5e6f"),
    ),
    ("Enum8('view' = 1, 'buy' = 2)", "buy", "buy"),
    ("Nullable(Int32)", None, None),
    ("Nullable(Int32)", 5, 5),
    ("Array(UInt16)", [1, "2"], [1, 2]),
    ("Array(Nullable(String))", ["a", None], ["a", None]),
    ("Map(String, Float64)", {"a": 1}, {"a": 1.0}),
]

BAD = [
    ("Int8", 128, "out of range for Int8"),
    ("UInt8", -1, "out of range for UInt8"),
    ("UInt32", "12a", "expected UInt32"),
    ("Int32", 1.5, "expected Int32"),
    ("Int32", True, "got a boolean"),
    ("UInt64", 2**64, "out of range for UInt64"),
    ("Float64", "abc", "expected a number"),
    ("Float64", [1], "expected a number"),
    ("Bool", "maybe", "expected a boolean"),
    ("Decimal(10, 2)", "x1", "expected a decimal"),
    ("Date", "2024-02-30", "expected a date"),
    ("DateTime", "yesterday", "expected an ISO 8601 date/time"),
    ("DateTime", "1969-12-31 23:59:59", "out of range for DateTime"),
    ("DateTime64(3)", {"t": 1}, "expected a date/time"),
    ("UUID", "not-a-uuid", "expected a UUID"),
    ("Enum8('view' = 1, 'buy' = 2)", "sell", "expected one of ['buy', 'view']"),
    ("Array(UInt8)", "1,2", "expected an array"),
    ("Array(UInt8)", [1, 300], "out of range for UInt8"),
    ("Map(String, Int32)", [1], "expected an object"),
    # no silent coercion to String
    ("String", 12345, "expected a string, got a number"),
    ("String", 1.5, "expected a string, got a number"),
    ("String", True, "expected a string, got a boolean"),
    ("String", {"a": 1}, "expected a string, got an object"),
    ("String", [1, 2], "expected a string, got an array"),
    ("LowCardinality(String)", 7, "expected a string"),
    ("Nullable(String)", {"a": 1}, "expected a string"),
    ("Array(String)", ["a", 1], "expected a string"),
    ("FixedString(3)", "abcd", "longer than FixedString(3)"),
    ("FixedString(3)", 123, "expected a string"),
    # event times from 1970-01-01 to before 2100-01-01; no 1938 from -1e12
    ("DateTime64(3, 'UTC')", -1e12, "out of range for DateTime64(3, 'UTC')"),
    ("DateTime64(3, 'UTC')", -1, "out of range"),
    ("DateTime64(3, 'UTC')", "1969-12-31T23:59:59.999Z", "out of range"),
    ("DateTime64(3, 'UTC')", "1938-04-24T22:13:20Z", "out of range"),
    ("DateTime64(3, 'UTC')", "2100-01-01T00:00:00Z", "out of range"),
    ("DateTime64(3)", 1e300, "out of range"),
    pytest.param("DateTime64(3)", 10**400, "out of range", id="DateTime64-400-digit-int"),
    ("DateTime('UTC')", "2105-01-01 00:00:00", "out of range"),
    ("Date", "1900-01-01", "out of range for Date"),
    ("Float64", "nan", "expected a finite number"),
    ("Float64", "-inf", "expected a finite number"),
    ("Float32", 1e39, "out of range for Float32"),
    ("Decimal(10, 2)", "100000000", "out of range for Decimal(10, 2)"),
    ("Decimal32(2)", 1e8, "out of range for Decimal32(2)"),
    pytest.param("Int64", "1" * 200, "expected Int64", id="Int64-200-digit-text"),
]


@pytest.mark.parametrize(("type_name", "value", "expected"), GOOD)
def test_accepts(type_name: str, value: object, expected: object) -> None:
    assert converter_for(type_name)(value) == expected


@pytest.mark.parametrize(("type_name", "value", "message"), BAD)
def test_rejects_with_reason(type_name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        converter_for(type_name)(value)
    assert message in str(info.value)


def test_unsupported_type_is_reported() -> None:
    with pytest.raises(ValueError, match="not supported"):
        converter_for("AggregateFunction(sum, UInt64)")


def test_properties_keeps_free_form_json_as_compact_text() -> None:
    """`properties` (a String column) is free-form JSON: objects and arrays are stored as
    compact JSON text; a number is not JSON text the client meant, so it is refused."""
    convert = converter_for("String", "properties")
    assert convert({"a": [1, 2], "b": {"c": None}}) == '{"a":[1,2],"b":{"c":null}}'
    assert convert([1, "x"]) == '[1,"x"]'
    assert convert('{"already": "text"}') == '{"already": "text"}'
    for value, kind in ((3, "a number"), (False, "a boolean")):
        with pytest.raises(
            ValueError, match=f"expected a string, an object or an array, got {kind}"
        ):
            convert(value)
    with pytest.raises(ValueError, match="expected a string, got an object"):
        converter_for("Array(String)", "properties")([{"a": 1}])  # only the column itself


@pytest.mark.parametrize(
    ("column", "cap"), [("user_id", 256), ("event_id", 256), ("title", 64 * 1024)]
)
def test_string_caps_count_utf8_bytes(column: str, cap: int) -> None:
    """`*_id` columns are capped at `max_id_bytes`, others at `max_field_bytes` (the
    settings' defaults here), counted in UTF-8 bytes: 'é' is 2 bytes."""
    convert = converter_for("String", column)
    assert convert("é" * (cap // 2)) == "é" * (cap // 2)
    assert convert("x" * cap) == "x" * cap
    with pytest.raises(ValueError, match=f"{cap + 1} bytes is longer than the {cap}-byte limit"):
        convert("x" * (cap + 1))
    with pytest.raises(ValueError, match=f"{cap + 2} bytes is longer"):
        convert("é" * (cap // 2 + 1))
    with pytest.raises(ValueError, match="longer than"):
        convert("x" * 1_000_000)  # the 1 MB event_id of the hostile-input probe


def test_caps_come_from_limits() -> None:
    limits = convert.Limits(max_id_bytes=4, max_field_bytes=8)
    assert converter_for("LowCardinality(String)", "item_id", limits)("abcd") == "abcd"
    with pytest.raises(ValueError, match="5 bytes is longer than the 4-byte limit"):
        converter_for("LowCardinality(String)", "item_id", limits)("abcde")
    with pytest.raises(ValueError, match="longer than the 8-byte limit"):
        converter_for("String", "properties", limits)({"key": "value"})
    with pytest.raises(ValueError, match="longer than the 8-byte limit"):
        converter_for("Map(String, String)", "attrs", limits)({"k": "123456789"})
