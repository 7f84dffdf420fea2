"""The fast ingest path (`validate_body`) gives the batch of the general path
(`parse_body` + `validate_rows`) whenever it answers, and steps aside (None) whenever
the general path would quarantine, number or refuse something (app/redpoll/ingest/validate.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redpoll.ingest.convert import Limits, converter_for
from redpoll.ingest.datasources import Column, DataSource
from redpoll.ingest.validate import ValidatedBatch, parse_body, validate_body, validate_rows
from redpoll.ingest.writer import epoch_ms
from tests.support.examples import examples

EVENT_COLUMNS = [
    ("event_id", "String"),
    ("ts", "DateTime64(3, 'UTC')"),
    ("user_id", "String"),
    ("session_id", "String"),
    ("item_id", "String"),
    ("event_type", "LowCardinality(String)"),
    ("order_id", "String"),
    ("quantity", "Int32"),
    ("price", "Float64"),
    ("rec_id", "String"),
    ("source", "String"),
    ("properties", "String"),
]
LIMITS = Limits(max_id_bytes=8, max_field_bytes=64)


def datasource(columns: list[tuple[str, str, str]], landing: bool) -> DataSource:
    return DataSource(
        "events" if landing else "plain",
        "events_landing" if landing else "plain",
        tuple(Column(n, t, d, converter_for(t, n, LIMITS)) for n, t, d in columns),
        uses_landing=landing,
    )


EVENTS = datasource([(n, t, "") for n, t in EVENT_COLUMNS], landing=True)
PLAIN = datasource(
    [
        ("item_id", "String", ""),
        ("n", "Nullable(Int64)", ""),
        ("f32", "Float32", ""),
        ("u8", "UInt8", ""),
        ("day", "Date", ""),
        ("tags", "Array(String)", ""),
        ("score", "Float64", "1.5"),
        ("at", "DateTime", ""),
    ],
    landing=False,
)


def normalized(ds: DataSource, batch: ValidatedBatch) -> dict[str, Any]:
    """What reaches the table: generated ids are random (only where they are), `ts` as
    the writer's milliseconds (writer.py `epoch_ms`)."""
    columns = dict(batch.columns)
    if ds.uses_landing:
        ids = columns["event_id"]
        columns["event_id"] = [v if len(v) != 32 else "<generated>" for v in ids]
        columns["ts"] = [epoch_ms(v) for v in columns["ts"]]
    return {
        "columns": columns,
        "rows": batch.rows,
        "quarantined": batch.quarantined,
        "needs_default": batch.needs_default,
    }


def check_same(ds: DataSource, body: bytes, max_rows: int = 0) -> bool:
    """True if the fast path answered (and then agreed with the general path)."""
    fast = validate_body(ds, body, max_rows)
    if fast is None:
        return False
    parsed = parse_body(body)
    assert not max_rows or len(parsed) <= max_rows
    slow = validate_rows(ds, parsed)
    assert not slow.quarantined, "the fast path accepted a body the general path quarantines"
    # a missing ts is each path's own receive time
    slow_n, fast_n = normalized(ds, slow), normalized(ds, fast)
    if ds.uses_landing:
        pairs = zip(slow_n["columns"]["ts"], fast_n["columns"]["ts"], strict=True)
        for i, (a, b) in enumerate(pairs):
            if a == epoch_ms(slow.received_at):
                assert b == epoch_ms(fast.received_at)
                fast_n["columns"]["ts"][i] = a
    assert fast_n == slow_n
    return True


def ndjson(rows: list[Any]) -> bytes:
    return b"\n".join(msgspec.json.encode(r) for r in rows)


GOOD_EVENT = {
    "event_id": "e1",
    "ts": 1_700_000_000_123,
    "user_id": "u1",
    "item_id": "i1",
    "event_type": "purchase",
    "quantity": 3,
    "price": 2.5,
}


def test_common_body_takes_the_fast_path() -> None:
    rows = [dict(GOOD_EVENT, event_id=f"e{i}") for i in range(100)]
    assert check_same(EVENTS, ndjson(rows))
    assert check_same(EVENTS, ndjson(rows) + b"\n\n  \n")  # trailing blank lines
    assert check_same(EVENTS, msgspec.json.encode(rows))  # a JSON array
    assert check_same(EVENTS, b'{"event_id": "x"}\r\n{"ts": "2026-01-01T00:00:00Z"}\r\n')


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"  " + ndjson([GOOD_EVENT]),  # leading whitespace: line numbers are the general path's
        ndjson([GOOD_EVENT]) + b"\n\n" + ndjson([GOOD_EVENT]),  # blank line inside
        b"\xef\xbb\xbf" + ndjson([GOOD_EVENT]),  # BOM
        ndjson([GOOD_EVENT, [1, 2]]),
        ndjson([GOOD_EVENT]) + b"\n" + b"{not json",
        ndjson([GOOD_EVENT]) + b" " + ndjson([GOOD_EVENT]),  # two objects on one line
        ndjson([dict(GOOD_EVENT, quantity=2**31)]),
        ndjson([dict(GOOD_EVENT, quantity=True)]),
        ndjson([dict(GOOD_EVENT, user_id=123)]),
        ndjson([dict(GOOD_EVENT, user_id="x" * 9)]),  # *_id cap 8 bytes
        ndjson([dict(GOOD_EVENT, item_id="éééé")]),  # 8 bytes: fine, but éééé + 1 is not
        ndjson([dict(GOOD_EVENT, ts=-1)]),
        ndjson([dict(GOOD_EVENT, ts=4_102_444_800)]),
        ndjson([dict(GOOD_EVENT, ts=1e300)]),
        ndjson([dict(GOOD_EVENT, properties=1)]),
        b'{"event_id": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
        b"[" + b"[" * 5000 + b"]" * 5000 + b"]",
        msgspec.json.encode([GOOD_EVENT, 1]),
        # fields the data source does not have are decoded too, never skipped unchecked
        b'{"event_id": "a", "extra": 1e999}',
        b'{"event_id": "a", "extra": "\xff"}',
        b'{"event_id": "a", "extra": "\xed\xa0\x80"}',
        b'{"event_id": "a", "extra": ' + b"1" * 400 + b"}",
        b'[{"event_id": "a", "extra": 1e999}]',
    ],
)
def test_bodies_the_general_path_decides(body: bytes) -> None:
    fast = validate_body(EVENTS, body)
    if fast is not None:  # only where it is the same batch (e.g. "éééé" is 8 bytes)
        assert check_same(EVENTS, body)


@pytest.mark.parametrize(
    "extra",
    [b"1e999", b"-1.8e308", b"1e308", b'"\xc3\xa9"', b'"\xc0\x80"', b'"\\ud800"', b"[1, {}]"],
)
def test_unknown_fields_are_decoded_as_the_general_path_does(extra: bytes) -> None:
    body = b'{"event_id": "a", "extra": ' + extra + b', "item_id": "i"}\n{"event_id": "b"}'
    quarantined = validate_rows(EVENTS, parse_body(body)).quarantined
    assert (validate_body(EVENTS, body) is None) == bool(quarantined)
    check_same(EVENTS, body)


def test_max_rows_leaves_the_count_to_the_general_path() -> None:
    body = ndjson([GOOD_EVENT] * 3)
    assert validate_body(EVENTS, body, max_rows=2) is None
    assert check_same(EVENTS, body, max_rows=3)
    assert validate_body(EVENTS, msgspec.json.encode([GOOD_EVENT] * 3), max_rows=2) is None


def test_missing_fields_generated_ids_and_defaults() -> None:
    body = ndjson([{"item_id": "a"}, {"event_id": "", "item_id": "b"}, GOOD_EVENT])
    batch = validate_body(EVENTS, body)
    assert batch is not None and batch.rows == 3
    ids = batch.columns["event_id"]
    assert len(ids[0]) == len(ids[1]) == 32 and ids[2] == "e1" and ids[0] != ids[1]
    assert batch.columns["ts"][0] == batch.received_at
    assert check_same(EVENTS, body)
    plain = ndjson([{"item_id": "a", "day": "2024-01-02", "at": 0}, {"day": "2024-01-03", "at": 1}])
    assert check_same(PLAIN, plain)
    batch = validate_body(PLAIN, plain)
    assert batch is not None and batch.needs_default == {"score": [0, 1]}
    assert validate_body(PLAIN, ndjson([{"item_id": "a"}])) is None  # Date is required


def test_epoch_units_match_the_converter() -> None:
    for ts in ([0, 1, 4_102_444_799], [10**11 + 1, 4_102_444_799_999], [1, 10**12]):
        rows = [dict(GOOD_EVENT, event_id=f"e{i}", ts=t) for i, t in enumerate(ts)]
        assert check_same(EVENTS, ndjson(rows))


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 255, 256, 2**31 - 1, 2**31, 10**11, 10**11 + 1, 4_102_444_800_000]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([3.4e38, 3.5e38, 1.0, -0.0, 1.5]),
    st.text(max_size=12),
    st.sampled_from(["", "12", "2024-01-02", "2026-01-01T00:00:00+02:00", "1.5", "éé"]),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def rows_for(ds: DataSource) -> st.SearchStrategy[list[dict[str, Any]]]:
    names = [c.name for c in ds.columns] + ["unknown"]
    return st.lists(
        st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names)),
        min_size=1,
        max_size=6,
    )


@settings(max_examples=examples(100, 400), deadline=None)
@given(rows=rows_for(EVENTS), as_array=st.booleans())
def test_fast_path_equals_general_path_events(rows: list[dict[str, Any]], as_array: bool) -> None:
    body = msgspec.json.encode(rows) if as_array else ndjson(rows)
    check_same(EVENTS, body)


@settings(max_examples=examples(100, 400), deadline=None)
@given(rows=rows_for(PLAIN))
def test_fast_path_equals_general_path_plain(rows: list[dict[str, Any]]) -> None:
    check_same(PLAIN, ndjson(rows))


@settings(max_examples=examples(50, 200), deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "event_id": st.text(min_size=1, max_size=8),
                "ts": st.integers(min_value=0, max_value=4_102_444_799_999),
                "quantity": st.integers(min_value=-(2**31), max_value=2**31 - 1),
                "price": st.floats(allow_nan=False, allow_infinity=False),
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_valid_rows_take_the_fast_path(rows: list[dict[str, Any]]) -> None:
    """Rows the general path accepts whole are answered by the fast path too."""
    body = ndjson(rows)
    if validate_rows(EVENTS, parse_body(body)).quarantined:
        return  # an event_id over its cap, a ts in (2100 in seconds, 1e11]
    assert check_same(EVENTS, body)


def test_received_at_is_utc() -> None:
    batch = validate_body(EVENTS, ndjson([GOOD_EVENT]))
    assert batch is not None and batch.received_at.tzinfo is dt.UTC
