"""Health, readiness, the admin API and the error envelope, in-process over real chDB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar.testing import TestClient

from tests.support.api import ADMIN_TOKEN, assert_error_envelope

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_health_and_request_id(api: TestClient) -> None:
    r = api.get("/v0/health")
    assert r.json() == {"status": "ok"}
    assert len(r.headers["x-request-id"]) == 32
    assert api.get("/v0/health", headers={"x-request-id": "abc"}).headers["x-request-id"] == "abc"


def test_ready_reflects_pending_migrations(api: TestClient, project_dir: Path) -> None:
    assert api.get("/v0/ready").status_code == 200
    (project_dir / "migrations" / "0001_t.sql").write_text(
        "CREATE TABLE {{ database }}.t (x UInt8) ENGINE = Memory;"
    )
    r = api.get("/v0/ready")
    assert r.status_code == 503
    assert r.json()["migrations"]["problems"] == ["0001_t.sql is pending"]
    up = api.post("/redpoll/v1/admin/migrations/up", json={}, headers=AUTH)
    assert up.status_code == 200 and up.json()["applied"][0]["version"] == 1
    assert api.get("/v0/ready").status_code == 200


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "Bearer wrong"}])
def test_admin_requires_token(api: TestClient, headers: dict[str, str]) -> None:
    assert_error_envelope(api.get("/redpoll/v1/admin/migrations", headers=headers), 403)


def test_admin_token_in_query_string(api: TestClient) -> None:
    assert api.get(f"/redpoll/v1/admin/migrations?token={ADMIN_TOKEN}").status_code == 200


def test_admin_sql_formats_and_errors(api: TestClient) -> None:
    r = api.post(
        "/redpoll/v1/admin/sql", json={"query": "SELECT 1 AS one", "format": "csv"}, headers=AUTH
    )
    assert r.text == '"one"\n1\n'
    bad = api.post("/redpoll/v1/admin/sql", json={"query": "SELEC 1"}, headers=AUTH)
    body = assert_error_envelope(bad, 400)
    # the position is the engine's (chDB 26.9 reads `SELEC 1` as far as position 7)
    assert re.fullmatch(r"syntax error at position \d+", body["error"]), body
    assert bad.headers["x-db-exception-code"] in {"62", "47"}
    assert_error_envelope(api.post("/redpoll/v1/admin/sql", json={"query": " "}, headers=AUTH), 400)


def test_unknown_route_uses_the_envelope(api: TestClient) -> None:
    assert_error_envelope(api.get("/v0/nope"), 404)
    assert_error_envelope(api.delete("/v0/health"), 405)
