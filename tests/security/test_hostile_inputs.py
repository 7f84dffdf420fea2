"""Hostile inputs against a running `redpoll serve`, generated with hypothesis.

(a) Template parameters: each endpoint listed by GET /v0/pipes (read token) is called
with generated values for every declared parameter (quotes, backslashes, unicode, NUL,
huge numbers, repeated values, template and SQL fragments) and unknown parameters, by
GET and by POST with a JSON body. Every answer is a known status (never 5xx), errors are
JSON with "error", and no body carries a stack trace or SQL text.

(b) Event bodies: POST /v0/events?name=events with generated bodies (wrong types,
missing fields, huge strings, invalid UTF-8, nested arrays, NDJSON with broken lines,
gzip with a wrong header) on a second server with an append token and an empty store.
No 5xx, and the accounting is exact: the successful rows of all 200/202 answers are the
rows of `events` (event ids are unique, so the dedup of docs/ingestion.md drops none),
and the quarantined rows are the rows of `events_quarantine`
(app/redpoll/ingest/datasources.py).
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from redpoll.testing import AdminSQL, RunningServer, copy_project, run_cli, run_server
from tests.support.checksums import (
    fingerprint,
    leaks,
    sent_text,
    synthetic_events,
    synthetic_items,
    write_ndjson,
)
from tests.support.examples import examples
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow

ADMIN = f"admin-{uuid.uuid4().hex}"
READ = f"read-{uuid.uuid4().hex}"
#: endpoints over the call logs (pipe_stats, datasources_ops_log): their rows are earlier
#: requests' parameters, so they may echo whatever the fuzz sent before, not only now
LOG_READERS = frozenset(
    path.stem
    for path in (REPO_ROOT / "endpoints").glob("*.sql")
    if "pipe_stats" in (text := path.read_text()) or "datasources_ops_log" in text
)
APPEND = f"append-{uuid.uuid4().hex}"
PIPE_STATUSES = {200, 400, 403, 404, 408, 413, 414, 429}
EVENT_STATUSES = {200, 202, 400, 401, 403, 404, 413, 414, 429}
FUZZ = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

FRAGMENTS = [
    "'",
    '"',
    "\\",
    "\\'",
    "''",
    "\x00",
    "{{",
    "}}",
    "{{ 1 }}",
    "{% if 1 %}",
    "{% end %}",
    "%",
    "%s",
    "%00",
    "' OR 1=1 --",
    "'); DROP TABLE events; --",
    "1; SELECT * FROM system.users",
    "UNION ALL SELECT name FROM system.tables",
    "/*",
    "*/",
    "`",
    "$1",
    "?",
    "\u202e",
    "\U0001d518\u00f1\u4e2d",
    "\ufeff",
    "\r\n",
    "[]",
    "['a', 'b']",
    "(1, 2)",
    "9" * 400,
    "-9223372036854775809",
    "18446744073709551616",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-0",
    "0x10",
    "1_000",
    "true",
    "null",
    "2026-13-45 25:61:61",
    "0000-00-00",
    "2100-01-01T00:00:00Z",
    "1970-01-01",
]

#: Text with what SQL, templates and encoders mishandle (characters from every plane
#: but surrogates, which no encoder can send).
hostile_text = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map("".join),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
#: One query value: a text, or the same parameter repeated.
query_value = st.one_of(hostile_text, st.lists(hostile_text, min_size=2, max_size=3))
#: Unknown parameter names, and reserved ones (`q` also has a test of its own).
unknown_name = st.one_of(
    st.sampled_from(["format", "pipeline", "from", "settings", "database", "limit[]", "q"]),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12),
)
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)


def _start(root: Path, env: dict[str, str], load: bool) -> Iterator[RunningServer]:
    project = copy_project(REPO_ROOT, root / "project")
    steps: list[tuple[str, ...]] = [("migrate", "up")]
    if load:
        steps.append(("load", "items", str(write_ndjson(root / "items.ndjson", synthetic_items()))))
        steps.append(
            ("load", "events", str(write_ndjson(root / "ev.ndjson", synthetic_events(200))))
        )
    for args in steps:
        done = run_cli(project, *args, env=env)
        assert done.returncode == 0, done.stderr
    with run_server(project, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Data loaded; the read token for /v0/pipes; /v0/events closed (an append token
    that is never sent)."""
    env = {
        "REDPOLL_ADMIN_TOKEN": ADMIN,
        "REDPOLL_READ_TOKEN": READ,
        "REDPOLL_APPEND_TOKEN": f"unused-{uuid.uuid4().hex}",
        "REDPOLL_LOG_LEVEL": "warning",
    }
    yield from _start(tmp_path_factory.mktemp("hostile-read"), env, load=True)


@pytest.fixture(scope="module")
def appender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """An empty store of its own and an append token."""
    env = {
        "REDPOLL_ADMIN_TOKEN": ADMIN,
        "REDPOLL_READ_TOKEN": READ,
        "REDPOLL_APPEND_TOKEN": APPEND,
        "REDPOLL_LOG_LEVEL": "warning",
    }
    yield from _start(tmp_path_factory.mktemp("hostile-append"), env, load=False)


def _problems(response: httpx.Response, allowed: set[int], sent: str) -> list[str]:
    problems = []
    if response.status_code not in allowed:
        problems.append(f"status {response.status_code}")
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            assert isinstance(error, str) and error
        except (ValueError, KeyError, TypeError, AssertionError):
            problems.append("error body is not JSON with an `error`")
    found = leaks(response.content, sent)
    if found:
        problems.append(f"leaks {found}")
    return problems


def _report(response: httpx.Response, problems: list[str]) -> str:
    request = response.request
    body = (request.content or b"")[:400]
    answer = response.content[:600].decode("utf-8", errors="replace")
    return (
        f"{problems}: {request.method} {request.url} body={body!r}\n"
        f"  -> {response.status_code} {answer}"
    )


def _assert_healthy(server: RunningServer) -> None:
    assert httpx.get(server.url + "/v0/health", timeout=10).status_code == 200
    ready = httpx.get(server.url + "/v0/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert server.process.poll() is None, server.log()[-3000:]


def _fuzz_pipe(
    http: httpx.Client, pipe: str, names: list[str], failures: list[str], history: list[str]
) -> None:
    """Up to 25 calls of `pipe` (60 under `--hypothesis-profile=thorough`) with generated
    declared and unknown parameters. `history` collects what every call sent (a log
    reader may echo it)."""
    declared = st.fixed_dictionaries({}, optional={n: query_value for n in names})
    unknown = st.dictionaries(unknown_name, query_value, max_size=2)

    @settings(FUZZ, max_examples=examples(25, 60))
    @given(params=declared, extra=unknown, by_post=st.booleans(), body=json_value)
    def call(params: dict[str, Any], extra: dict[str, Any], by_post: bool, body: Any) -> None:
        query = {**extra, **params}
        if by_post:  # JSON body: any JSON value for a declared parameter
            payload = {**query, **({names[0]: body} if names else {})}
            r = http.post(f"/v0/pipes/{pipe}.json", json=payload)
            sent = sent_text(str(r.request.url), json.dumps(payload, ensure_ascii=False))
        else:
            r = http.get(f"/v0/pipes/{pipe}.json", params=query)
            sent = sent_text(str(r.request.url), "") + json.dumps(query, ensure_ascii=False)
        history.append(sent)
        if pipe in LOG_READERS:
            sent = "\n".join(history)
        problems = _problems(r, PIPE_STATUSES, sent)
        if problems:
            failures.append(_report(r, problems))

    call()


def test_template_parameters(reader: RunningServer) -> None:
    sql = AdminSQL(reader.url, ADMIN)
    before = fingerprint(sql)
    headers = {"Authorization": f"Bearer {READ}"}
    failures: list[str] = []
    history: list[str] = []
    with httpx.Client(base_url=reader.url, headers=headers, timeout=30) as http:
        listing = http.get("/v0/pipes")
        assert listing.status_code == 200, listing.text
        pipes = {p["name"]: [q["name"] for q in p["params"]] for p in listing.json()["pipes"]}
        assert pipes, listing.text

        for pipe, names in sorted(pipes.items()):
            _fuzz_pipe(http, pipe, names, failures, history)

    _assert_healthy(reader)
    assert fingerprint(sql) == before
    assert not failures, "\n".join(failures[:20])


def test_q_values(reader: RunningServer) -> None:
    """`q=` (SQL over the endpoint's result) with hostile text: 200 or a 4xx, never 5xx."""
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {READ}"}
    with httpx.Client(base_url=reader.url, headers=headers, timeout=30) as http:

        @settings(FUZZ, max_examples=examples(20, 40))
        @given(
            q=st.one_of(
                hostile_text, hostile_text.map("SELECT * FROM _ WHERE item_id = {}".format)
            ),
            by_post=st.booleans(),
        )
        @example(q="'", by_post=False)
        @example(q="SELECT * FROM _ WHERE item_id = '", by_post=True)
        def call(q: str, by_post: bool) -> None:
            params = {"q": q}
            if by_post:
                r = http.post("/v0/pipes/popular.json", json=params)
            else:
                r = http.get("/v0/pipes/popular.json", params=params)
            problems = _problems(r, PIPE_STATUSES, sent_text(str(r.request.url), q) + q)
            if problems:
                failures.append(_report(r, problems))

        call()
    _assert_healthy(reader)
    assert not failures, "\n".join(failures[:20])


_ids = itertools.count()


def _event_id() -> str:
    return f"fz-{uuid.uuid4().hex[:8]}-{next(_ids)}"


#: A value for a field: its own type or a wrong one.
field_value = st.one_of(
    hostile_text,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just("x" * 70_000),  # above max_field_bytes (docs/ingestion.md)
)
FIELDS = [
    "ts",
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "order_id",
    "quantity",
    "price",
    "rec_id",
    "source",
    "properties",
    "unknown_field",
]


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking event: some fields of the right type, some of a wrong one, some
    missing. The id is unique, absent or empty (generated), or of a wrong type."""
    good = synthetic_events(1, seed=draw(st.integers(0, 10**6)))[0]
    row: dict[str, Any] = {}
    for name in FIELDS:
        choice = draw(st.sampled_from(["good", "good", "bad", "missing"]))
        if choice == "good" and name in good:
            row[name] = good[name]
        elif choice == "bad":
            row[name] = draw(field_value)
    id_kind = draw(st.sampled_from(["unique", "unique", "missing", "empty", "wrong", "long"]))
    if id_kind == "unique":
        row["event_id"] = _event_id() + draw(st.sampled_from(["", "'", "\\", "\x00", "\u00e9"]))
    elif id_kind == "empty":
        row["event_id"] = ""
    elif id_kind == "wrong":
        row["event_id"] = draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2)))
    elif id_kind == "long":
        row["event_id"] = _event_id() + "x" * 300  # above max_id_bytes
    return row


BROKEN_LINES = [
    b"not json",
    b"{",
    b'{"event_id": "broken"',
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"\xff\xfe\xfd",
    b'{"item_id": "\xc3\x28"}',
    b"[" * 3000 + b"]" * 3000,
    b"\x00\x00",
    b"\xef\xbb\xbf",
    b"   ",
]


@st.composite
def event_body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A body and its headers."""
    rows = draw(st.lists(event(), min_size=1, max_size=6))
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())).encode() for r in rows]
    shape = draw(
        st.sampled_from(
            [
                "ndjson",
                "broken",
                "array",
                "object",
                "nested",
                "gzip",
                "bad-gzip",
                "deflate",
                "empty",
                "bom",
            ]
        )
    )
    headers = {
        "Content-Type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/x-ndjson",
                    "text/plain",
                    "application/octet-stream",
                ]
            )
        )
    }
    if shape == "ndjson":
        body = b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    elif shape == "broken":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(lines)))
            lines.insert(at, draw(st.sampled_from(BROKEN_LINES)))
        body = b"\n".join(lines)
    elif shape == "array":
        body = b"[" + b",".join(lines) + b"]"
    elif shape == "object":
        body = lines[0]
    elif shape == "nested":
        depth = draw(st.integers(2, 5000))
        body = b"[" * depth + lines[0] + b"]" * depth
    elif shape == "gzip":
        body = gzip.compress(b"\n".join(lines))
        headers["Content-Encoding"] = "gzip"
    elif shape == "bad-gzip":
        real = gzip.compress(b"\n".join(lines))
        body = draw(
            st.sampled_from(
                [b"\x1f\x8b\x09" + real[3:], b"PK\x03\x04" + real, real[:12], b"\n".join(lines)]
            )
        )
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "GZIP"]))
    elif shape == "deflate":
        body = zlib.compress(b"\n".join(lines))
        headers["Content-Encoding"] = "deflate"
    elif shape == "empty":
        body = b""
    else:
        body = b"\xef\xbb\xbf" + b"\n\xef\xbb\xbf".join(lines)
    return body, headers


@dataclasses.dataclass
class Tally:
    successful: int = 0
    quarantined: int = 0
    calls: int = 0


def test_event_bodies_are_never_5xx_and_counted_exactly(appender: RunningServer) -> None:
    tally = Tally()
    failures: list[str] = []
    with httpx.Client(base_url=appender.url, timeout=60) as http:

        @settings(FUZZ, max_examples=examples(25, 60))
        @given(
            body=event_body(),
            token=st.sampled_from([APPEND, APPEND, APPEND, None, READ]),
            wait=st.booleans(),
        )
        def post(body: tuple[bytes, dict[str, str]], token: str | None, wait: bool) -> None:
            content, headers = body
            if token:
                headers = {**headers, "Authorization": f"Bearer {token}"}
            params = {"name": "events", **({"wait": "true"} if wait else {})}
            r = http.post("/v0/events", params=params, content=content, headers=headers)
            tally.calls += 1
            problems = _problems(r, EVENT_STATUSES, sent_text(str(r.request.url), content))
            if token != APPEND and r.status_code not in (401, 403):
                problems.append("appended without the append token")
            if r.status_code in (200, 202):
                answer = r.json()
                if set(answer) != {"successful_rows", "quarantined_rows"}:
                    problems.append("answer is not {successful_rows, quarantined_rows}")
                else:
                    tally.successful += answer["successful_rows"]
                    tally.quarantined += answer["quarantined_rows"]
            if problems:
                failures.append(_report(r, problems))

        post()
        # a 202 (default `ack = durable`) is visible within the committer's next INSERTs;
        # batches are inserted in arrival order, so once a `wait=true` request is answered
        # 200, every batch acknowledged before it is visible
        last = http.post(
            "/v0/events",
            params={"name": "events", "wait": "true"},
            content=b'{"event_id": "hostile-inputs-last", "item_id": "i", "event_type": "view"}',
            headers={"Authorization": f"Bearer {APPEND}"},
        )
        assert last.status_code == 200, last.text
        tally.successful += 1

    _assert_healthy(appender)
    assert not failures, "\n".join(failures[:20])
    sql = AdminSQL(appender.url, ADMIN)
    (stored,) = sql.rows("SELECT count() AS n, uniqExact(event_id) AS ids FROM events")
    assert int(stored["n"]) == int(stored["ids"]) == tally.successful, (stored, tally)
    exists = sql.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'events_quarantine'"
    )
    quarantined = (
        int(sql.rows("SELECT count() AS n FROM events_quarantine")[0]["n"]) if exists else 0
    )
    assert quarantined == tally.quarantined, (quarantined, tally)
    assert tally.successful > 0 and tally.quarantined > 0, tally  # both paths were exercised
