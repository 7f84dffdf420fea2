"""Property tests: hostile input through every parameter type and identifier helper is
either refused with a 400 naming the parameter, or treated as a plain value: the endpoint
returns what a direct, parameterized ClickHouse query returns for the same value.

Runs against real chDB (the session data path, a fresh database).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redpoll.clickhouse.client import Client, Target, connect
from redpoll.endpoints.compiler import compile_endpoint
from redpoll.endpoints.executor import execute, prepare
from redpoll.endpoints.loader import catalog_from_client, parse_header
from redpoll.endpoints.model import Endpoint
from redpoll.errors import ParameterError
from tests.support.examples import examples

PAYLOADS = [
    "' OR 1=1 --",
    "\\' OR 1=1 --",
    "x'; DROP TABLE items; --",
    "1 UNION ALL SELECT name FROM system.tables",
    "1; SELECT 1",
    "/* comment */ 1",
    "name",
    "`name`",
    "name` FROM items; --",
    '"; SELECT 1; "',
    "\\",
    "\\\\'",
    "\x00",
    "\n-- \n",
    "é🐦ø",
    "{p_s:String}",
    "{{ 7 * 7 }}",
    "%(s)s",
    "$heredoc$",
    "1e309",
    "0x10",
    " 42 ",
    "-0",
    "2020-01-01 00:00:00' OR '1",
]
VALUES = st.one_of(
    st.sampled_from(PAYLOADS),
    st.text(max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(PAYLOADS), st.text(max_size=10)),
    st.integers(min_value=-(2**130), max_value=2**130).map(str),
)
HYPO = settings(
    max_examples=examples(25, 60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
INT_TYPES = [f"{p}Int{b}" for p in ("", "U") for b in (8, 16, 32, 64, 128, 256)]


@pytest.fixture
def env(ch_target: Target, admin_client: Client) -> Iterator[tuple[Client, Any]]:
    admin_client.command(
        "CREATE TABLE items (id UInt64, name String, qty Int32) ENGINE = MergeTree ORDER BY id"
    )
    admin_client.command("INSERT INTO items VALUES (1, 'a', 3), (2, 'b''c', 5), (3, 'name', 7)")
    catalog = catalog_from_client(admin_client)
    reader = connect(ch_target, readonly=True)

    def make(text: str) -> Endpoint:
        meta, body, _ = parse_header(text)
        return compile_endpoint("e", body, path=Path("/p/e.sql"), meta=meta, catalog=catalog)

    yield reader, make
    reader.close()


def run(reader: Client, endpoint: Endpoint, params: dict[str, Any]) -> list[dict[str, Any]]:
    query = prepare(endpoint, params)
    return json.loads(execute(reader, query))["data"]


def direct(reader: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    body = reader.raw_query(
        sql + " SETTINGS output_format_json_quote_64bit_integers = 1",
        parameters=params,
        fmt="JSON",
    )
    return json.loads(body)["data"]


@HYPO
@given(value=VALUES)
def test_string_is_always_plain_data(env: tuple[Client, Any], value: str) -> None:
    reader, make = env
    ep = make(
        "SELECT {{ String(s) }} AS echo, "
        "(SELECT count() FROM items WHERE name = {{ String(s) }}) AS n"
    )
    got = run(reader, ep, {"s": value})
    assert got[0]["echo"] == value
    expected = direct(
        reader, "SELECT (SELECT count() FROM items WHERE name = {s:String}) AS n", {"s": value}
    )
    assert got[0]["n"] == expected[0]["n"]


@HYPO
@given(value=VALUES, type_name=st.sampled_from([*INT_TYPES, "Float32", "Float64", "Boolean"]))
def test_numbers_are_validated_or_plain(
    env: tuple[Client, Any], value: str, type_name: str
) -> None:
    reader, make = env
    ep = make(f"SELECT toString({{{{ {type_name}(v) }}}}) AS echo")
    try:
        got = run(reader, ep, {"v": value})
    except ParameterError as exc:
        assert "'v'" in exc.message and exc.status == 400
        return
    ch_type = "Bool" if type_name == "Boolean" else type_name
    bound: Any = value.strip()
    if type_name.startswith(("Int", "UInt")):
        bound = int(bound)
    elif type_name == "Boolean":
        bound = bound.lower() in ("1", "true")
    else:
        bound = float(bound)
    assert got == direct(reader, f"SELECT toString({{v:{ch_type}}}) AS echo", {"v": bound})


@HYPO
@given(
    value=st.one_of(VALUES, st.dates().map(str), st.datetimes().map(str)),
    type_name=st.sampled_from(["Date", "DateTime", "DateTime64"]),
)
def test_dates_are_validated_or_plain(env: tuple[Client, Any], value: str, type_name: str) -> None:
    reader, make = env
    ep = make(f"SELECT toString({{{{ {type_name}(v) }}}}) AS echo")
    try:
        got = run(reader, ep, {"v": value})
    except ParameterError as exc:
        assert "'v'" in exc.message and exc.status == 400
        return
    assert got[0]["echo"][:10] == value.strip()[:10]


@HYPO
@given(items=st.lists(VALUES, max_size=5))
def test_arrays_are_plain_data(env: tuple[Client, Any], items: list[str]) -> None:
    reader, make = env
    ep = make(
        "SELECT {{ Array(v, 'String') }} AS echo, "
        "(SELECT count() FROM items WHERE name IN {{ Array(v, 'String') }}) AS n"
    )
    got = run(reader, ep, {"v": items})
    if len(items) == 1:  # one value is a comma-separated list (Tinybird); repeated keys are not
        items = [] if not items[0].strip() else [s.strip() for s in items[0].split(",")]
    assert got[0]["echo"] == items
    expected = direct(
        reader,
        "SELECT (SELECT count() FROM items WHERE has({v:Array(String)}, name)) AS n",
        {"v": items},
    )
    assert got[0]["n"] == expected[0]["n"]


@HYPO
@given(value=VALUES, helper=st.sampled_from(["column", "symbol", "columns"]))
def test_identifier_helpers_accept_only_known_columns(
    env: tuple[Client, Any], value: str, helper: str
) -> None:
    reader, make = env
    call = f"{helper}(c, 'id')" if helper != "symbol" else "symbol(c)"
    ep = make(f"SELECT {{{{ {call} }}}} FROM items ORDER BY id")
    try:
        got = run(reader, ep, {"c": value})
    except ParameterError as exc:
        assert "'c'" in exc.message and exc.status == 400
        return
    names = [c.strip() for c in value.split(",")]
    assert set(names) <= {"id", "name", "qty"}
    assert list(got[0]) == names[:1] if helper != "columns" else list(got[0]) == names
