"""Schemathesis fuzzing of both OpenAPI documents of a running `redpoll serve`.

(a) the app's own document (GET /schema/openapi.json, fetched with the admin token) and
(b) the endpoints' document (GET /v0/pipes/openapi.json, fetched with the read token,
one operation per endpoint of endpoints/*.sql with typed parameters). Every operation is
called with schema-conforming and schema-violating cases, with the read token and with
no token (never the admin token: it may drop tables through the admin SQL route).

Each answer: status < 500, no stack trace and no SQL text in its body. After each run:
the data loaded before the server started is unchanged (count and checksum of `events`,
`items` and every view's target table, tests/support/checksums.py) and /v0/health and
/v0/ready answer 200. Failures are collected (no shrinking) and reported together as
curl commands.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from redpoll.testing import AdminSQL, RunningServer, copy_project, run_cli, run_server
from tests.support.checksums import (
    fingerprint,
    leaks,
    sent_text,
    synthetic_events,
    synthetic_items,
    write_ndjson,
)
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow

ADMIN = f"admin-{uuid.uuid4().hex}"
READ = f"read-{uuid.uuid4().hex}"
#: Set so that /v0/events is closed to the read token and to anonymous callers (with no
#: append token configured that surface is open: app/redpoll/api/auth.py); never sent.
APPEND = f"append-{uuid.uuid4().hex}"
EVENTS = 300


@dataclasses.dataclass
class Fuzzed:
    server: RunningServer
    sql: AdminSQL
    baseline: dict[str, tuple[int, str]]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    project = copy_project(REPO_ROOT, root / "project")
    env = {
        "REDPOLL_ADMIN_TOKEN": ADMIN,
        "REDPOLL_READ_TOKEN": READ,
        "REDPOLL_APPEND_TOKEN": APPEND,
        "REDPOLL_LOG_LEVEL": "warning",
    }
    for args in (
        ("migrate", "up"),
        ("load", "items", str(write_ndjson(root / "items.ndjson", synthetic_items()))),
        ("load", "events", str(write_ndjson(root / "ev.ndjson", synthetic_events(EVENTS)))),
    ):
        done = run_cli(project, *args, env=env)
        assert done.returncode == 0, done.stderr
    with run_server(project, env=env) as server:
        sql = AdminSQL(server.url, ADMIN)
        baseline = fingerprint(sql)
        assert baseline["events"][0] == EVENTS, baseline
        assert all(n > 0 for n, _ in baseline.values()), baseline
        yield Fuzzed(server, sql, baseline)


def _load(url: str, token: str) -> Any:
    return schemathesis.openapi.from_url(url, headers={"Authorization": f"Bearer {token}"})


def _fuzz(schema: Any, base_url: str, token: str | None, max_examples: int) -> list[str]:
    """Call every operation of `schema` with up to `max_examples` positive and negative
    cases; the failures, each with a curl command that reproduces it."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        calls = _fuzz_operation(operation, base_url, token, max_examples, failures)
        assert calls, f"no case generated for {operation.label}"
    return failures


def _fuzz_operation(
    operation: Any, base_url: str, token: str | None, max_examples: int, failures: list[str]
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    calls = 0

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        calls += 1
        curl = case.as_curl_command(headers=headers, base_url=base_url)
        problems = []
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except AssertionError:
            problems.append("server error")
        if response.status_code >= 500:
            problems.append(f"status {response.status_code}")
        request = response.request
        found = leaks(response.content, sent_text(request.url or "", request.body))
        if found:
            problems.append(f"leaks {found}")
        if problems:
            body = response.content[:600].decode("utf-8", errors="replace")
            failures.append(f"{problems}: {curl}\n  -> {response.status_code} {body}")

    run()
    return calls


def _assert_intact(fuzzed: Fuzzed) -> None:
    url = fuzzed.server.url
    assert httpx.get(url + "/v0/health", timeout=10).status_code == 200
    ready = httpx.get(url + "/v0/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert fingerprint(fuzzed.sql) == fuzzed.baseline
    assert fuzzed.server.process.poll() is None, fuzzed.server.log()[-3000:]


def test_fuzz_endpoints_document_with_the_read_token(fuzzed: Fuzzed) -> None:
    url = fuzzed.server.url
    schema = _load(url + "/v0/pipes/openapi.json", READ)
    failures = _fuzz(schema, url, READ, max_examples=25)
    _assert_intact(fuzzed)
    assert not failures, "\n".join(failures)


def test_fuzz_app_document_with_the_read_token(fuzzed: Fuzzed) -> None:
    url = fuzzed.server.url
    schema = _load(url + "/schema/openapi.json", ADMIN)
    failures = _fuzz(schema, url, READ, max_examples=10)
    _assert_intact(fuzzed)
    assert not failures, "\n".join(failures)


def test_fuzz_both_documents_without_a_token(fuzzed: Fuzzed) -> None:
    url = fuzzed.server.url
    failures = _fuzz(_load(url + "/v0/pipes/openapi.json", READ), url, None, max_examples=5)
    failures += _fuzz(_load(url + "/schema/openapi.json", ADMIN), url, None, max_examples=5)
    _assert_intact(fuzzed)
    assert not failures, "\n".join(failures)


def test_the_read_token_and_no_token_cannot_reach_admin_routes(fuzzed: Fuzzed) -> None:
    """The premise of fuzzing the admin routes: a guarded 4xx, nothing run."""
    for headers in ({"Authorization": f"Bearer {READ}"}, {}):
        r = httpx.post(
            fuzzed.server.url + "/redpoll/v1/admin/sql",
            json={"query": "TRUNCATE TABLE events", "format": "json"},
            headers=headers,
            timeout=10,
        )
        assert r.status_code in (401, 403), r.text
    _assert_intact(fuzzed)
