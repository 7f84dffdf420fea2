"""Template compiler: data-driven cases from tests/fixtures/templates, plus load-time checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from redpoll.endpoints.compiler import apply_q, compile_endpoint, render
from redpoll.endpoints.loader import load_endpoint, parse_header
from redpoll.endpoints.model import Catalog, EndpointMeta, FunctionSet, LoadError
from redpoll.endpoints.template import TemplateError
from redpoll.errors import QueryError, RedpollError

CASES = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "fixtures" / "templates" / "cases.yaml").read_text()
)
CATALOG = Catalog.from_tables({"t": {"a", "b", "ts"}, "u": {"x"}})


def compile_text(text: str, name: str = "e") -> Any:
    meta, body, _ = parse_header(text)
    return compile_endpoint(name, body, path=Path(f"/p/{name}.sql"), meta=meta, catalog=CATALOG)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_template_case(case: dict[str, Any]) -> None:
    endpoint = compile_text(case["template"])
    if "error" in case:
        status, needle = case["error"]
        with pytest.raises(RedpollError) as info:
            render(endpoint, case["params"])
        assert info.value.status == status and needle in info.value.message
        return
    rendered = render(endpoint, case["params"])
    assert rendered.sql == case["sql"]
    assert dict(rendered.parameters) == case["parameters"]


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("SELECT a FROM missing", "unknown table missing", 1),
        ("-- header\n\nSELECT a\nFROM nope", "unknown table nope", 4),
        ("SELECT a FROM t; SELECT 1", "exactly one statement", None),
        ("INSERT INTO t SELECT * FROM t", "SELECT", None),
        ("SELECT a FROM t FORMAT JSON", "not allowed", None),
        ("SELECT a FROM t SETTINGS max_threads=1", "header", None),
        ("SELECT a FROM (SELECT a FROM t SETTINGS readonly=0)", "set by Redpoll", None),
        ("SELECT a FROM t WHERE b = {{ b }}", "printed raw", 1),
        ("SELECT a FROM t WHERE b = {x:String}", "not produced by a typed function", None),
        ("SELECT a FROM url('http://x', CSV)", "table function", None),
        ("SELECT a FROM t\n{% if %}", "template syntax", 2),
        ("SELECT {{ column(c, 'secret') }} FROM t", "secret", None),
        ("SELECT a FROM t WHERE {{ b.__class__ }}", "", None),
        ("SELECT a FROM t LIMIT {{ Int32(q, 1) }}", "reserved", None),
    ],
)
def test_load_time_errors(text: str, needle: str, line: int | None) -> None:
    with pytest.raises(TemplateError) as info:
        compile_text(text)
    assert needle in info.value.message
    if line is not None:
        assert info.value.line == line


def test_sandbox_blocks_python_internals() -> None:
    for text in [
        "SELECT {{ ''.__class__.__mro__ }} FROM t",
        "SELECT {{ range(10) }} FROM t",
        "SELECT {{ lipsum() }} FROM t",
        "{% import 'os' as os %}SELECT 1 FROM t",
    ]:
        with pytest.raises(TemplateError):
            compile_text(text)


def test_header_metadata() -> None:
    meta, body, n = parse_header(
        "-- Top items for a user.\n-- More text.\n-- cache_ttl: 60\n-- tags: a, b\n"
        "-- max_execution_time: 1.5\n-- max_result_rows: 10\n-- settings: max_threads=2\n"
        "SELECT 1"
    )
    assert meta == EndpointMeta(
        description="Top items for a user. More text.",
        cache_ttl=60,
        tags=("a", "b"),
        max_execution_time=1.5,
        max_result_rows=10,
        settings={"max_threads": 2},
    )
    assert n == 7 and body.count("\n") == 7 and body.endswith("SELECT 1")


def test_load_endpoint_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.sql"
    path.write_text("-- max_result_rows: lots\nSELECT 1")
    err = load_endpoint(path, CATALOG)
    assert isinstance(err, LoadError) and str(err).startswith(f"{path}:1:")


def test_q_wraps_endpoint_sql() -> None:
    functions = FunctionSet(frozenset({"count"}), frozenset({"count"}), frozenset({"count"}))
    sql = apply_q("SELECT a FROM t", "SELECT count() FROM _ AS x WHERE a > 1", functions)
    assert "FROM (\nSELECT a FROM t\n) AS x WHERE a > 1" in sql
    with pytest.raises(QueryError):
        apply_q("SELECT a FROM t", "SELECT * FROM t", functions)
    with pytest.raises(QueryError):
        apply_q(
            "SELECT a FROM t", "SELECT * FROM _ UNION ALL SELECT * FROM system.users", functions
        )


def test_params_extracted_for_docs() -> None:
    ep = compile_text(
        "SELECT a FROM t WHERE a > {{ Int64(lo, 0, description='lower', min=0) }}"
        " AND b IN {{ Array(bs, 'String', default='x,y', enum=['x','y','z']) }}"
    )
    specs = {p.name: p for p in ep.params}
    assert specs["lo"].type == "Int64" and specs["lo"].min == 0 and specs["lo"].default == 0
    assert specs["bs"].type == "Array(String)" and specs["bs"].enum == ("x", "y", "z")


def test_rendered_sql_has_no_comments_but_keeps_quoted_dashes() -> None:
    ep = compile_text(
        "-- header\nSELECT a, '--kept' AS s, `b--c` AS q -- dropped\n"
        "FROM t -- also dropped\nWHERE b = 'it''s -- kept' -- {{ Int32(n, 1) }} dropped\n"
        "LIMIT {{ Int32(n, 1) }}"
    )
    sql = render(ep, {}).sql
    assert "dropped" not in sql and "header" not in sql
    assert "'--kept'" in sql and "`b--c`" in sql and "'it''s -- kept'" in sql
    assert sql.count("\n") == 3  # line breaks stay
