"""HTTP hardening (app/redpoll/api/security.py): security headers on every response, CORS
and token-free preflights, the 414 request-target cap, no query string in error bodies,
`max_rows_per_request` and Litestar's own OpenAPI for the admin token only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from litestar.connection import ASGIConnection
from litestar.testing import TestClient

from redpoll import __version__
from redpoll.api.errors import without_query
from redpoll.api.security import add_security_headers, is_preflight
from redpoll.app import create_app
from redpoll.clickhouse.client import Client, Target
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from redpoll.testing import copy_project
from tests.support.api import ADMIN_TOKEN, assert_error_envelope
from tests.support.paths import REPO_ROOT

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_URL_BYTES = 256
MAX_ROWS = 3
MAX_BODY_BYTES = 4096
EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cross-origin-resource-policy": "cross-origin",
}
PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture
def settings(project_dir: Path, ch_target: Target) -> Settings:
    """Small limits, so that each one is cheap to exceed (overrides tests/conftest.py)."""
    return load_settings(
        {
            "project_dir": str(project_dir),
            "admin_token": ADMIN_TOKEN,
            "max_url_bytes": MAX_URL_BYTES,
            "max_rows_per_request": MAX_ROWS,
            "max_body_bytes": MAX_BODY_BYTES,
        },
        environ={},
    )


@pytest.fixture
def anon(api: TestClient) -> TestClient:
    """`api` without a default token (tests/api/conftest.py may set one): each test sends
    `AUTH` where it wants a 200, as a browser's preflight sends none."""
    api.headers.pop("Authorization", None)
    return api


def client_with(settings: Settings, store: Store, **changes: Any) -> TestClient:
    return TestClient(app=create_app(dataclasses.replace(settings, **changes), store=store))


def assert_security_headers(response: Any) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers["cache-control"] == "no-store", response.status_code


# --- security headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("GET", "/v0/health", {}, None, 200),
        ("GET", "/no/such/route", {}, None, 404),
        ("DELETE", "/v0/health", {}, None, 405),
        ("GET", "/v0/health?q=" + "a" * MAX_URL_BYTES, {}, None, 414),
        ("GET", "/redpoll/v1/admin/migrations", {}, None, None),  # 401/403 without a token
        ("POST", "/redpoll/v1/admin/sql", AUTH, b'{"bogus": 1}', 400),
        ("POST", "/v0/events?name=events", AUTH, b"x" * (MAX_BODY_BYTES + 1), 413),
        ("OPTIONS", "/v0/events", PREFLIGHT, None, 204),
    ],
)
def test_every_response_carries_the_security_headers(
    anon: TestClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int | None,
) -> None:
    response = anon.request(method, path, headers=headers, content=body)
    if status is None:
        assert response.status_code in (401, 403), response.text
    else:
        assert response.status_code == status, response.text
    assert_security_headers(response)
    assert response.headers["x-request-id"]


def test_a_cache_control_set_by_the_handler_is_kept() -> None:
    """Endpoints with `cache_ttl` answer `Cache-Control: max-age=N` (api/pipes.py)."""
    message: Any = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"cache-control", b"max-age=60")],
    }
    asyncio.run(add_security_headers(message, {"type": "http"}))  # type: ignore[arg-type]
    cache = [value for name, value in message["headers"] if name == b"cache-control"]
    assert cache == [b"max-age=60"]
    assert (b"x-frame-options", b"DENY") in message["headers"]


# --- CORS ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v0/pipes/x.json", "/v0/events"])
def test_a_preflight_needs_no_token(anon: TestClient, path: str) -> None:
    response = anon.options(path, headers=PREFLIGHT)
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "DELETE", "OPTIONS"}
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "content-encoding", "x-request-id"} <= allowed
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers
    assert_security_headers(response)


def test_cross_origin_responses_expose_the_rate_limit_headers(anon: TestClient) -> None:
    for response in (
        anon.get("/v0/health", headers={"Origin": "https://app.example"}),
        anon.get("/redpoll/v1/admin/migrations", headers={"Origin": "https://app.example"}),
    ):
        assert response.headers["access-control-allow-origin"] == "*"
        exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
        assert exposed == {
            "X-Request-Id",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        }


def test_cors_origins_lists_the_allowed_origins(settings: Settings, store: Store) -> None:
    origins = "https://app.example, https://other.example"
    with client_with(settings, store, cors_origins=origins) as client:
        allowed = client.options("/v0/events", headers=PREFLIGHT)
        assert allowed.status_code == 204, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.options(
            "/v0/events", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert refused.status_code >= 400
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/v0/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


def test_empty_cors_origins_is_no_cors(settings: Settings, store: Store) -> None:
    with client_with(settings, store, cors_origins="") as client:
        response = client.get("/v0/health", headers={"Origin": "https://app.example"})
        assert response.status_code == 200
        assert not [name for name in response.headers if name.startswith("access-control-")]
        assert_security_headers(response)


def test_is_preflight() -> None:
    def connection(method: str, headers: dict[str, str]) -> ASGIConnection[Any, Any, Any, Any]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope: Any = {"type": "http", "method": method, "headers": raw, "path": "/"}
        return ASGIConnection(scope)

    assert is_preflight(connection("OPTIONS", PREFLIGHT))
    assert not is_preflight(connection("OPTIONS", {"Origin": "https://app.example"}))
    assert not is_preflight(connection("GET", PREFLIGHT))
    assert not is_preflight(connection("OPTIONS", {}))


# --- request target --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v0/health", "/no/such/route", "/v0/pipes/x.json"])
def test_a_request_target_over_max_url_bytes_is_414(anon: TestClient, path: str) -> None:
    query = "?q="
    at_limit = path + query + "a" * (MAX_URL_BYTES - len(path) - len(query))
    assert len(at_limit) == MAX_URL_BYTES
    assert anon.get(at_limit).status_code != 414
    body = assert_error_envelope(anon.get(at_limit + "a"), 414)
    assert str(MAX_URL_BYTES) in body["error"]
    long_path = "/" + "p" * MAX_URL_BYTES
    assert_error_envelope(anon.get(long_path), 414)


# --- no query string in error bodies ---------------------------------------------------


def test_validation_errors_do_not_echo_the_query_string(anon: TestClient) -> None:
    secret = "decoy-secret-in-the-query"
    response = anon.post(
        f"/redpoll/v1/admin/backfill?token={secret}&x=1", json={"bogus": 1}, headers=AUTH
    )
    body = assert_error_envelope(response, 400)
    assert secret not in response.text
    assert "token=" not in response.text
    assert "/redpoll/v1/admin/backfill" in body["error"]


def test_without_query() -> None:
    message = "Validation failed for POST /v0/events?name=events&token=abc"
    assert without_query(message) == "Validation failed for POST /v0/events"
    assert without_query("GET /a?b=1 and /c?token=x") == "GET /a and /c"
    assert without_query("no path here?") == "no path here?"


# --- max_rows_per_request --------------------------------------------------------------


@pytest.fixture
def migrated(project_dir: Path, store: Store) -> None:
    """The repository's data sources (events), migrated before the app reads its catalog."""
    copy_project(REPO_ROOT, project_dir, ("sql", "materialized_views", "migrations"), exist_ok=True)
    store.migrations().up()


@pytest.fixture
def events_api(migrated: None, anon: TestClient) -> TestClient:
    return anon


def _rows(count: int) -> list[dict[str, str]]:
    return [
        {"event_id": f"e{i}", "ts": "2024-01-01T00:00:00Z", "user_id": "u", "item_id": "i"}
        for i in range(count)
    ]


@pytest.mark.parametrize("shape", ["ndjson", "array"])
def test_more_rows_than_max_rows_per_request_is_413(
    events_api: TestClient, admin_client: Client, shape: str
) -> None:
    def body(count: int) -> bytes:
        rows = _rows(count)
        if shape == "array":
            return json.dumps(rows).encode()
        return "\n".join(json.dumps(r) for r in rows).encode() + b"\n\n"

    url = "/v0/events?name=events&wait=true"
    too_many = events_api.post(url, content=body(MAX_ROWS + 1), headers=AUTH)
    assert "max_rows_per_request" in assert_error_envelope(too_many, 413)["error"]
    assert_security_headers(too_many)
    assert admin_client.command("SELECT count() FROM events") == 0

    at_limit = events_api.post(url, content=body(MAX_ROWS), headers=AUTH)
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["successful_rows"] == MAX_ROWS
    assert admin_client.command("SELECT count() FROM events") == MAX_ROWS


# --- Litestar's OpenAPI ----------------------------------------------------------------


def test_the_openapi_schema_is_json_and_yaml_for_the_admin_token(anon: TestClient) -> None:
    document = anon.get("/schema/openapi.json", headers=AUTH)
    assert document.status_code == 200, document.text
    assert document.json()["info"] == {"title": "Redpoll", "version": __version__}
    yaml = anon.get("/schema/openapi.yaml", headers=AUTH)
    assert yaml.status_code == 200, yaml.text
    assert "title: Redpoll" in yaml.text
    for path in ("/schema/openapi.json", "/schema/openapi.yaml"):
        anonymous = anon.get(path)
        assert anonymous.status_code in (401, 403), anonymous.text
        assert "paths" not in anonymous.text
        assert_security_headers(anonymous)


@pytest.mark.parametrize(
    "path",
    [
        "/schema",
        "/schema/",
        "/schema/swagger",
        "/schema/redoc",
        "/schema/elements",
        "/schema/rapidoc",
        "/schema/openapi.yml",
    ],
)
def test_no_openapi_ui(anon: TestClient, path: str) -> None:
    response = anon.get(path, headers=AUTH)
    assert_error_envelope(response, 404)
    assert "<script" not in response.text
    assert_security_headers(response)
