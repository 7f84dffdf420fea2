"""The result cache's pure parts: keys, stored answers, SQL analysis and the view graph
(endpoints/cache.py, analysis.py, dependencies.py). The cache over HTTP and real chDB is
tested in tests/api/test_result_cache.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpoll.endpoints.analysis import (
    QUERY_ID_PARAM,
    FunctionClasses,
    analyze,
    substitute_query_id,
)
from redpoll.endpoints.cache import Answer, request_key, with_cache_status
from redpoll.endpoints.compiler import compile_endpoint
from redpoll.endpoints.dependencies import TableGraph
from redpoll.endpoints.loader import parse_header
from redpoll.endpoints.model import Catalog
from redpoll.endpoints.template import TemplateError
from tests.support.paths import REPO_ROOT

RID = "76723c74-5775-4ea8-827e-f683bb6c8b8a"
PRETTY = (
    '{\n\t"meta":\n\t[\n\t\t{\n\t\t\t"name": "rec_id",\n\t\t\t"type": "String"\n\t\t}\n\t],\n\n'
    f'\t"data":\n\t[\n\t\t{{\n\t\t\t"rec_id": "{RID}"\n\t\t}},\n\t\t{{\n\t\t\t"rec_id": "{RID}"'
    '\n\t\t}\n\t],\n\n\t"rows": 2,\n\n\t"statistics":\n\t{\n\t\t"elapsed": 0.000907885,\n'
    '\t\t"rows_read": 7,\n\t\t"bytes_read": 99\n\t}\n}\n'
).encode()


def test_an_answer_gets_each_responses_id_and_statistics() -> None:
    answer = Answer(PRETTY, "json", RID)
    miss = json.loads(answer.render(RID, "miss", None))
    assert miss["data"] == [{"rec_id": RID}] * 2
    assert miss["statistics"] == {
        "elapsed": 0.000907885,
        "rows_read": 7,
        "bytes_read": 99,
        "cache": "miss",
    }
    other = "00000000-0000-4000-8000-000000000000"
    hit = answer.render(other, "hit", 0.0001)
    assert RID.encode() not in hit
    body = json.loads(hit)
    assert body["data"] == [{"rec_id": other}] * 2 and body["rows"] == 2
    assert body["statistics"] == {
        "elapsed": 0.0001,
        "rows_read": 0,
        "bytes_read": 0,
        "cache": "hit",
    }
    # request_log.py and api/metrics.py read these with a regex on the tail
    assert b'"rows_read": 0' in hit


def test_compact_json_and_other_formats() -> None:
    compact = json.dumps(
        {
            "data": [{"x": 1}],
            "rows": 1,
            "statistics": {"elapsed": 0.5, "rows_read": 1, "bytes_read": 2},
        },
        separators=(",", ":"),
    ).encode()
    body = json.loads(with_cache_status(compact, "json", "off"))
    assert body["statistics"]["cache"] == "off" and body["data"] == [{"x": 1}]
    ndjson = f'{{"rec_id":"{RID}","x":1}}\n{{"rec_id":"{RID}","x":2}}\n'.encode()
    answer = Answer(ndjson, "ndjson", RID)
    assert answer.render("new", "hit", 0.1) == b'{"rec_id":"new","x":1}\n{"rec_id":"new","x":2}\n'
    assert with_cache_status(b"a,b\n1,2\n", "csv", "off") == b"a,b\n1,2\n"
    no_stats = b'{"data": [], "rows": 0}'
    assert with_cache_status(no_stats, "json", "hit") == no_stats


def _endpoint(source: str, tables: set[str] | None = None):  # type: ignore[no-untyped-def]
    meta, body, _ = parse_header(source)
    catalog = Catalog.from_tables(tables or {"events"})
    return compile_endpoint("e", body, path=Path("e.sql"), meta=meta, catalog=catalog)


def test_keys_use_the_values_the_template_receives() -> None:
    endpoint = _endpoint(
        "SELECT 1 FROM events WHERE a = {{ Int32(a, 1) }}"
        " AND b IN {{ Array(b, 'String', defined=False) }}"
    )
    key = request_key(endpoint, {"a": "5", "b": ["x", "y"], "utm": "ignored"}, "json", None, True)
    assert key == request_key(endpoint, {"b": ("x", "y"), "a": 5}, "json", None, True)
    assert key != request_key(endpoint, {"a": "5", "b": ["y", "x"]}, "json", None, True)
    assert request_key(endpoint, {"a": ["5"]}, "json", None, True) == request_key(
        endpoint, {"a": "5"}, "json", None, True
    )
    assert request_key(endpoint, {"a": True}, "csv", None, True)[2] == (("a", "true"),)
    for other in (
        request_key(endpoint, {"a": "5", "b": ["x", "y"]}, "csv", None, True),
        request_key(endpoint, {"a": "5", "b": ["x", "y"]}, "json", "SELECT 1 FROM _", True),
        request_key(endpoint, {"a": "5", "b": ["x", "y"]}, "json", None, False),
    ):
        assert other != key
    changed = _endpoint("SELECT 2 FROM events WHERE a = {{ Int32(a, 1) }}")
    assert request_key(changed, {"a": "5"}, "json", None, True) != request_key(
        endpoint, {"a": "5"}, "json", None, True
    )


CLASSES = FunctionClasses(frozenset({"rand", "now64", "dictget", "joinget"}))


def test_analysis_finds_tables_clock_ids_and_per_call_functions() -> None:
    sql = (
        "WITH recent AS (SELECT item_id FROM trending WHERE hour > now() - 1) "
        "SELECT queryID() AS rec_id, 'rand()' AS text, i.title FROM recent "
        "JOIN items_latest AS i USING item_id, numbers(2) -- now64() in a comment"
    )
    found = analyze(sql, CLASSES)
    assert found.tables == {"trending", "items_latest"}
    assert (found.clock, found.query_id, found.volatile, found.error) == (True, True, (), "")
    assert analyze("SELECT rand() + RAND(), toDate(NOW())", CLASSES, tables=False).volatile == (
        "RAND",
        "rand",
    )
    assert analyze("SELECT now64()", CLASSES, tables=False).volatile == ("now64",)
    assert analyze("SELECT CURRENT_TIMESTAMP", CLASSES, tables=False).clock
    assert analyze("SELECT currentDatabase(), arrayJoin([1])", CLASSES, tables=False).volatile == ()
    assert analyze("SELECT FROM WHERE (", CLASSES).error
    # an unknown server (no list): the built-in prefixes stand in
    assert analyze("SELECT generateUUIDv4()", FunctionClasses(), tables=False).volatile


def test_query_ids_become_a_parameter_outside_strings_and_comments() -> None:
    sql = "SELECT queryID() AS a, `queryID`( ), 'queryID()' AS s, query_id() -- queryID()\n"
    out = substitute_query_id(sql)
    placeholder = f"{{{QUERY_ID_PARAM}:String}}"
    assert out == (
        f"SELECT {placeholder} AS a, {placeholder}, 'queryID()' AS s, {placeholder} -- queryID()\n"
    )
    assert substitute_query_id("SELECT 1") == "SELECT 1"
    # a form it does not replace is a per-call value: not cached exactly
    assert analyze("SELECT queryID(1)", CLASSES, tables=False).volatile == ("queryID",)


def test_the_graph_reaches_every_table_upstream() -> None:
    graph = TableGraph({"events": {"events_landing", "event_ids"}, "event_ids": {"events"}})
    graph = graph.union(TableGraph({"trending": {"events"}, "items_latest": {"items"}}))
    assert graph.upstream(frozenset({"trending"})) == (
        "event_ids",
        "events",
        "events_landing",
        "trending",
    )
    assert graph.upstream(frozenset({"items_latest", "other"})) == (
        "items",
        "items_latest",
        "other",
    )


def test_the_projects_views_lead_back_to_its_data_sources() -> None:
    graph = TableGraph.from_project(REPO_ROOT)
    for table in ("trending", "basket_pairs", "buyer_pairs", "user_item_stats", "trending_daily"):
        assert "events_landing" in graph.upstream(frozenset({table})), table
    assert "items" in graph.upstream(frozenset({"items_latest"}))
    assert "events_landing" not in graph.upstream(frozenset({"items_latest"}))


def test_the_header_switch() -> None:
    assert parse_header("-- cache: off\nSELECT 1")[0].cache is False
    assert parse_header("-- cache: on\n-- cache_ttl: 30\nSELECT 1")[0].cache_ttl == 30
    assert parse_header("SELECT 1")[0].cache is True
    with pytest.raises(TemplateError, match="cache"):
        parse_header("-- cache: sometimes\nSELECT 1")
