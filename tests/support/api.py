"""Helpers of the HTTP API tests: the admin token, error-envelope checks and the small
products fixture project (tests/fixtures/project)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.clickhouse.client import Client
from redpoll.settings import Settings
from redpoll.store import Store

ADMIN_TOKEN = "test-admin-token"


@contextlib.contextmanager
def api_client(
    settings: Settings,
    store: Store,
    *,
    authenticated: bool = True,
    per_address_limit: bool = False,
) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """A test client of `create_app(settings, store=store)` that sends the settings' ADMIN
    token (ADMIN_TOKEN when they have none), or no token at all.

    Every request of a test client comes from one address, so the per-address rate limit
    would only measure how fast this machine answers: it is off unless a test asks."""
    if not per_address_limit:
        settings = dataclasses.replace(settings, rate_limit_ip_rps=0)
    if not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=ADMIN_TOKEN)
    with TestClient(app=create_app(settings, store=store)) as client:
        if authenticated:
            client.headers["Authorization"] = f"Bearer {settings.admin_token}"
        yield client


FIXTURE_ENDPOINTS = Path(__file__).resolve().parent.parent / "fixtures" / "project" / "endpoints"


PRODUCTS_DDL = (
    "CREATE TABLE products (id UInt64, name String, category String, price Float64, "
    "created DateTime) ENGINE = MergeTree ORDER BY id"
)


PRODUCTS_ROWS = (
    "INSERT INTO products VALUES (1,'alpha','a',10,'2020-01-01 00:00:00'),"
    "(2,'beta','b',20,'2021-01-01 00:00:00'),(3,'gamma','a',30,'2022-01-01 00:00:00')"
)


def make_products(client: Client) -> None:
    client.command(PRODUCTS_DDL)
    client.command(PRODUCTS_ROWS)


def copy_endpoints(project_dir: Path) -> None:
    dest = project_dir / "endpoints"
    shutil.copytree(FIXTURE_ENDPOINTS, dest, dirs_exist_ok=True)


def assert_error(response, status: int, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "documentation"}
    assert "Traceback" not in body["error"]
    assert response.headers["x-request-id"]
    for needle in needles:
        assert needle in body["error"]
    return body["error"]


def assert_error_envelope(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "documentation"}
    assert body["error"] and "Traceback" not in body["error"]
    assert response.headers["x-request-id"]
    return body
