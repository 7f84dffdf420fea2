"""Every supported column type: what it accepts and what it quarantines (and why)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from redpoll.ingest.convert import converter_for

UTC = dt.UTC

GOOD = [
    ("String", "héllo", "héllo"),
    ("String", 12345, "12345"),
    ("String", True, "true"),
    ("String", {"a": [1, 2]}, '{"a":[1,2]}'),
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
    ("Bool", "true", True),
    ("Bool", 0, False),
    ("Decimal(10, 2)", "12.34", decimal.Decimal("12.34")),
    ("Date", "2024-02-29", dt.date(2024, 2, 29)),
    ("Date32", 0, dt.date(1970, 1, 1)),
    ("DateTime", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("DateTime('UTC')", 1_700_000_000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    (
        "DateTime64(3, 'UTC')",
        "2024-01-02T03:04:05.678Z",
        dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    ),
    ("DateTime64(3)", 1_700_000_000_123, dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    ("DateTime64(3)", "2024-01-02T05:04:05+02:00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
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
