"""Who may call what (api/auth.py, docs/security.md): every route x scope.

For each route: no token -> 403, a token of another scope (or the right scope on another
resource) -> 403, the right scope -> success. Tokens are created through the Tokens API;
revoked and rotated-out tokens fail on the next request; JWTs are checked for signature,
algorithm, expiry and scope, and their `fixed_params` win over the caller's parameters.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN, api_client, assert_error_envelope
from tests.support.module_store import module_store
from tests.support.shop import create_token, prepare_shop

SIGNING_KEY = "k" * 48
ITEMS = [{"item_id": f"i{i}", "category": "c", "price": 1.0} for i in range(3)]
EVENT = json.dumps(
    {
        "event_id": "e-ac",
        "ts": "2026-11-01T10:00:00Z",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "purchase",
        "order_id": "o1",
    }
).encode()


@pytest.fixture
def shop(project_dir: Path, store: Store) -> Path:
    """The repository's project (its endpoints: popular, trending, ...), migrated."""
    return prepare_shop(project_dir, store)


@pytest.fixture
def admin(shop: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    signed = dataclasses.replace(settings, jwt_signing_key=SIGNING_KEY, rate_limit_ip_rps=0)
    with api_client(signed, store) as client:
        yield client


def call(api: TestClient, method: str, url: str, token: str | None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}" if token else ""}
    return api.request(method, url, headers=headers, **kwargs)


#: the console's navigation: any valid token
CONSOLE_SIGNED_IN = "ADMIN|PIPES:READ:*|DATASOURCES:READ:*|DATASOURCES:APPEND:*"

# Every route of the app, the scope it needs (None: public; `:*`: on any resource, the
# answer shows only granted ones; `A|B`: either) and a request that succeeds with that scope.
# test_every_route_is_classified keeps the table complete.
ROUTES: list[tuple[str, str, str, str | None, dict[str, Any]]] = [
    ("GET", "/v0/health", "/v0/health", None, {}),
    ("GET", "/v0/ready", "/v0/ready", None, {}),
    ("GET", "/v0/pipes", "/v0/pipes", "PIPES:READ:*", {}),
    ("GET", "/v0/pipes/openapi.json", "/v0/pipes/openapi.json", "PIPES:READ:*", {}),
    ("GET", "/v0/pipes/{pipe:str}", "/v0/pipes/popular.json", "PIPES:READ:popular", {}),
    (
        "POST",
        "/v0/pipes/{pipe:str}",
        "/v0/pipes/popular.json",
        "PIPES:READ:popular",
        {"json": {"days": 7}},
    ),
    (
        "POST",
        "/v0/events",
        "/v0/events?name=events",
        "DATASOURCES:APPEND:events",
        {"content": EVENT},
    ),
    ("GET", "/v0/metrics", "/v0/metrics", "ADMIN", {}),
    ("GET", "/v0/sql", "/v0/sql?q=SELECT count() FROM events", "DATASOURCES:READ:events", {}),
    (
        "POST",
        "/v0/sql",
        "/v0/sql",
        "DATASOURCES:READ:events",
        {"data": {"q": "SELECT count() FROM events"}},
    ),
    ("GET", "/v0/datasources", "/v0/datasources", "DATASOURCES:READ:*|DATASOURCES:APPEND:*", {}),
    (
        "GET",
        "/v0/datasources/{name:str}",
        "/v0/datasources/events",
        "DATASOURCES:READ:events|DATASOURCES:APPEND:events",
        {},
    ),
    (
        "POST",
        "/v0/datasources",
        "/v0/datasources?name=events&mode=append&format=ndjson",
        "DATASOURCES:APPEND:events",
        {"content": EVENT},
    ),
    ("POST", "/v0/datasources/{name:str}/truncate", "/v0/datasources/items/truncate", "ADMIN", {}),
    (
        "POST",
        "/v0/datasources/{name:str}/delete",
        "/v0/datasources/items/delete",
        "ADMIN",
        {"data": {"delete_condition": "item_id = 'none'"}},
    ),
    ("GET", "/v0/jobs", "/v0/jobs", "DATASOURCES:APPEND:*", {}),
    # {job}: a job on `items`, made by the test (api/jobs.py: seen by APPEND:items)
    ("GET", "/v0/jobs/{job_id:str}", "/v0/jobs/{job}", "DATASOURCES:APPEND:items", {}),
    ("POST", "/redpoll/v1/admin/erase", "/redpoll/v1/admin/erase?item_id=none", "ADMIN", {}),
    ("GET", "/redpoll/v1/admin/migrations", "/redpoll/v1/admin/migrations", "ADMIN", {}),
    (
        "POST",
        "/redpoll/v1/admin/migrations/up",
        "/redpoll/v1/admin/migrations/up",
        "ADMIN",
        {"json": {}},
    ),
    (
        "POST",
        "/redpoll/v1/admin/migrations/unlock",
        "/redpoll/v1/admin/migrations/unlock",
        "ADMIN",
        {},
    ),
    (
        "POST",
        "/redpoll/v1/admin/sql",
        "/redpoll/v1/admin/sql",
        "ADMIN",
        {"json": {"query": "SELECT 1"}},
    ),
    (
        "POST",
        "/redpoll/v1/admin/backfill",
        "/redpoll/v1/admin/backfill",
        "ADMIN",
        {"json": {"view": "trending"}},
    ),
    ("POST", "/redpoll/v1/admin/reload", "/redpoll/v1/admin/reload", "ADMIN", {}),
    ("GET", "/redpoll/v1/admin/ingest/status", "/redpoll/v1/admin/ingest/status", "ADMIN", {}),
    ("GET", "/v0/tokens", "/v0/tokens", "ADMIN", {}),
    ("POST", "/v0/tokens", "/v0/tokens?name=made&scope=PIPES:READ", "ADMIN", {}),
    ("GET", "/v0/tokens/{name:str}", "/v0/tokens/target", "ADMIN", {}),
    ("POST", "/v0/tokens/{name:str}/refresh", "/v0/tokens/target/refresh", "ADMIN", {}),
    ("DELETE", "/v0/tokens/{name:str}", "/v0/tokens/target", "ADMIN", {}),
    ("GET", "/schema/openapi.json", "/schema/openapi.json", "ADMIN", {}),
    ("GET", "/schema/openapi.yaml", "/schema/openapi.yaml", "ADMIN", {}),
    # the console (console/pages.py): page shells and static files carry no data; each
    # fragment is guarded like the API route it mirrors
    ("GET", "/ui", "/ui", None, {}),
    ("GET", "/ui/{slug:str}", "/ui/requests", None, {}),
    ("GET", "/ui/static/{file_path:path}", "/ui/static/htmx.min.js", None, {}),
    ("HEAD", "/ui/static/{file_path:path}", "/ui/static/console.css", None, {}),
    ("GET", "/ui/f/nav", "/ui/f/nav", CONSOLE_SIGNED_IN, {}),
    ("GET", "/ui/f/endpoints", "/ui/f/endpoints", "PIPES:READ:*", {}),
    ("GET", "/ui/f/data", "/ui/f/data", "DATASOURCES:READ:*|DATASOURCES:APPEND:*", {}),
    (
        "GET",
        "/ui/f/quarantine/{name:str}",
        "/ui/f/quarantine/events",
        "DATASOURCES:READ:events|DATASOURCES:APPEND:events",
        {},
    ),
    ("GET", "/ui/f/trending", "/ui/f/trending", "PIPES:READ:trending", {}),
    (
        "GET",
        "/ui/f/recommendations",
        "/ui/f/recommendations",
        "PIPES:READ:recommendation_stats",
        {},
    ),
    ("GET", "/ui/f/evaluation", "/ui/f/evaluation", "ADMIN", {}),
    ("GET", "/ui/f/evaluation/chart.png", "/ui/f/evaluation/chart.png", "ADMIN", {}),
    ("GET", "/ui/f/requests", "/ui/f/requests", "ADMIN", {}),
]
#: Litestar's OpenAPI router also mounts these; they answer only 403 or 404.
SCHEMA_EXTRAS = {("GET", "/schema"), ("GET", "/schema/{path:str}")}

#: a token of each kind; the wrong ones for a route are all those its scope does not cover
SCOPES = {
    "admin": "ADMIN",
    "pipes_all": "PIPES:READ",
    "pipes_popular": "PIPES:READ:popular",
    "pipes_trending": "PIPES:READ:trending",
    "append_all": "DATASOURCES:APPEND",
    "append_events": "DATASOURCES:APPEND:events",
    "append_items": "DATASOURCES:APPEND:items",
    "ds_read": "DATASOURCES:READ",
}


def covers(held: str, needed: str) -> bool:
    if "|" in needed:  # any of several scopes will do
        return any(covers(held, one) for one in needed.split("|"))
    if held == "ADMIN":
        return True
    held_type, _, held_res = held.rpartition(":") if held.count(":") == 2 else (held, "", "")
    need_type, _, need_res = needed.rpartition(":") if needed.count(":") == 2 else (needed, "", "")
    return held_type == need_type and (not held_res or need_res in ("*", held_res))


@pytest.fixture(scope="module")
def routes_admin(
    redpoll_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One migrated shop, app and token of each SCOPES kind for the route x scope table
    (speed only: migrating the project for each of its cases cost most of the module's
    time). The cases leave nothing another one reads: `target` and `made` are reset before
    each call, and the other writes (an event, a truncate of items) are idempotent."""
    project = tmp_path_factory.mktemp("routes")
    with module_store(redpoll_clickhouse_url, project) as (settings, store):
        prepare_shop(project, store)
        signed = dataclasses.replace(settings, jwt_signing_key=SIGNING_KEY, rate_limit_ip_rps=0)
        with api_client(signed, store) as client:
            tokens = {name: create_token(client, name, scope) for name, scope in SCOPES.items()}
            yield client, tokens


def test_every_route_is_classified(routes_admin: tuple[TestClient, dict[str, str]]) -> None:
    admin, _ = routes_admin
    served = {
        (method, route.path)
        for route in admin.app.routes
        for method in getattr(route, "methods", ())
        if method != "OPTIONS"
    }
    assert served - SCHEMA_EXTRAS == {(m, p) for m, p, *_ in ROUTES}


@pytest.mark.parametrize(
    ("method", "route", "url", "needed", "kwargs"), ROUTES, ids=lambda v: str(v)[:40]
)
def test_route_by_scope(
    routes_admin: tuple[TestClient, dict[str, str]],
    method: str,
    route: str,
    url: str,
    needed: str | None,
    kwargs: dict[str, Any],
) -> None:
    admin, tokens = routes_admin
    if "{job}" in url:
        url = url.replace("{job}", admin.post("/v0/datasources/items/truncate").json()["id"])
    for name, token in [("none", None), ("bogus", "rp_not-a-token"), *tokens.items()]:
        if route.startswith("/v0/tokens/"):  # a fresh target for each try
            admin.delete("/v0/tokens/target")
            create_token(admin, "target", "PIPES:READ")
        admin.delete("/v0/tokens/made")
        response = call(admin, method, url, token, **kwargs)
        allowed = needed is None or (
            token is not None and name in SCOPES and covers(SCOPES[name], needed)
        )
        if allowed:
            assert response.status_code < 300, (name, response.status_code, response.text)
        else:
            assert_error_envelope(response, 403)


def test_scoped_append_cannot_be_widened_by_repeating_name(admin: TestClient) -> None:
    token = create_token(admin, "events_only", "DATASOURCES:APPEND:events")
    for url in ("/v0/events?name=events&name=items", "/v0/events?name=items&name=events"):
        response = call(admin, "POST", url, token, content=EVENT)
        assert response.status_code in (400, 403), response.text
    counted = admin.post(
        "/redpoll/v1/admin/sql", json={"query": "SELECT count() FROM items", "format": "csv"}
    )
    assert counted.text.split() == ['"count()"', "0"]


def test_schema_pages_are_not_public(routes_admin: tuple[TestClient, dict[str, str]]) -> None:
    admin, _ = routes_admin  # read-only: the module's shared app (speed only)
    for path in (
        "/schema",
        "/schema/swagger",
        "/schema/redoc",
        "/schema/elements",
        "/schema/rapidoc",
    ):
        response = call(admin, "GET", path, None)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "cdn" not in response.text.lower()


def test_listing_and_openapi_show_only_granted_endpoints(admin: TestClient) -> None:
    token = create_token(admin, "popular_only", "PIPES:READ:popular")
    listed = call(admin, "GET", "/v0/pipes", token).json()
    assert [p["name"] for p in listed["pipes"]] == ["popular"]
    doc = call(admin, "GET", "/v0/pipes/openapi.json", token).json()
    assert list(doc["paths"]) == ["/v0/pipes/popular.json"]
    everything = call(admin, "GET", "/v0/pipes", ADMIN_TOKEN).json()
    assert len(everything["pipes"]) > 1


def test_token_values_are_stored_hashed_and_never_listed(admin: TestClient, store: Store) -> None:
    token = create_token(admin, "secret_holder", "PIPES:READ")
    listed = admin.get("/v0/tokens").text
    assert token not in listed and "secret_holder" in listed
    dump = store.admin.query(f"SELECT * FROM `{store.target.database}`._redpoll_tokens").result_rows
    assert token not in repr(dump)
    assert ADMIN_TOKEN not in listed


def test_revoked_and_rotated_tokens_fail_on_the_next_request(admin: TestClient) -> None:
    url = "/v0/pipes/popular.json"
    old = create_token(admin, "rotating", "PIPES:READ")
    assert call(admin, "GET", url, old).status_code == 200
    refreshed = admin.post("/v0/tokens/rotating/refresh").json()
    new = refreshed["token"]
    assert new != old and refreshed["scope"] == ["PIPES:READ"]
    assert_error_envelope(call(admin, "GET", url, old), 403)
    assert call(admin, "GET", url, new).status_code == 200
    assert admin.delete("/v0/tokens/rotating").status_code == 204
    assert_error_envelope(call(admin, "GET", url, new), 403)
    assert admin.get("/v0/tokens/rotating").status_code == 404


def test_tokens_api_refuses_bad_requests(admin: TestClient) -> None:
    assert_error_envelope(admin.post("/v0/tokens", params={"name": "x"}), 400)
    assert_error_envelope(admin.post("/v0/tokens", params={"scope": "ADMIN"}), 400)
    assert_error_envelope(
        admin.post("/v0/tokens", params={"name": "x", "scope": "PIPES:WRITE"}), 400
    )
    assert_error_envelope(admin.post("/v0/tokens", params={"name": "../x", "scope": "ADMIN"}), 400)
    create_token(admin, "dup", "ADMIN")
    assert_error_envelope(admin.post("/v0/tokens", params={"name": "dup", "scope": "ADMIN"}), 409)
    assert_error_envelope(admin.delete("/v0/tokens/settings:admin_token"), 400)
    assert_error_envelope(admin.post("/v0/tokens/nobody/refresh"), 404)


def test_tokens_from_another_process_are_seen_without_restart(
    admin: TestClient, settings: Settings, store: Store
) -> None:
    """A second app on the same database (another server) creates a token; this one
    accepts it on the next request (an unknown token re-reads the table)."""
    other = dataclasses.replace(settings, jwt_signing_key=SIGNING_KEY)
    with TestClient(app=create_app(other, store=store)) as second:
        second.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        token = create_token(second, "from_elsewhere", "PIPES:READ")
    time.sleep(1.1)
    assert call(admin, "GET", "/v0/pipes/popular.json", token).status_code == 200


# ------------------------------------------------------------------------- JWTs


def make_jwt(payload: dict[str, Any], key: str = SIGNING_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **payload}, key, algorithm=algorithm)


def pipe_scope(resource: str, **fixed: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "PIPES:READ", "resource": resource}
    if fixed:
        scope["fixed_params"] = fixed
    return scope


def test_jwt_reads_its_endpoint_only(admin: TestClient) -> None:
    token = make_jwt({"name": "tenant_a", "scopes": [pipe_scope("popular")]})
    assert call(admin, "GET", "/v0/pipes/popular.json", token).status_code == 200
    assert_error_envelope(call(admin, "GET", "/v0/pipes/trending.json", token), 403)
    assert_error_envelope(call(admin, "POST", "/v0/events?name=events", token, content=EVENT), 403)
    assert_error_envelope(call(admin, "GET", "/v0/tokens", token), 403)


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


@pytest.mark.parametrize(
    "token",
    [
        make_jwt({"name": "t", "scopes": [pipe_scope("popular")], "exp": int(time.time()) - 60}),
        make_jwt({"name": "t", "scopes": [pipe_scope("popular")]}, key="x" * 48),
        unsigned({"name": "t", "exp": int(time.time()) + 600, "scopes": [pipe_scope("popular")]}),
        make_jwt({"name": "t", "scopes": [{"type": "ADMIN", "resource": "x"}]}),
        make_jwt({"name": "t", "scopes": [pipe_scope("popular")], "limits": {"rps": "lots"}}),
        make_jwt({"name": "t", "scopes": []}),
        make_jwt({"scopes": [pipe_scope("popular")]}),
        jwt.encode(
            {"name": "t", "scopes": [pipe_scope("popular")]}, SIGNING_KEY, algorithm="HS256"
        ),
        make_jwt({"name": "t", "scopes": [pipe_scope("popular")]}, algorithm="HS512"),
    ],
    ids=[
        "expired",
        "bad-signature",
        "alg-none",
        "admin-scope",
        "bad-limits",
        "no-scopes",
        "no-name",
        "no-exp",
        "hs512",
    ],
)
def test_bad_jwts_are_403(routes_admin: tuple[TestClient, dict[str, str]], token: str) -> None:
    admin, _ = routes_admin  # read-only: the module's shared app (speed only)
    assert_error_envelope(call(admin, "GET", "/v0/pipes/popular.json", token), 403)


def test_jwt_refused_when_no_signing_key(shop: Path, settings: Settings, store: Store) -> None:
    with api_client(settings, store) as api:
        token = make_jwt({"name": "t", "scopes": [pipe_scope("popular")]})
        body = assert_error_envelope(call(api, "GET", "/v0/pipes/popular.json", token), 403)
        assert "jwt_signing_key" in body["error"]


def test_jwt_fixed_params_cannot_be_overridden(admin: TestClient) -> None:
    admin.post("/v0/events?name=items&wait=true", content="\n".join(json.dumps(i) for i in ITEMS))
    rows = "\n".join(
        json.dumps(
            {
                "event_id": f"fx{n}",
                "ts": "2026-11-01T10:00:00Z",
                "user_id": "u1",
                "item_id": f"i{n % 3}",
                "event_type": "purchase",
                "order_id": f"o{n}",
            }
        )
        for n in range(6)
    )
    assert admin.post("/v0/events?name=events&wait=true", content=rows).status_code == 200
    now = "2026-11-02 00:00:00"
    free = call(
        admin, "GET", "/v0/pipes/popular.json", ADMIN_TOKEN, params={"now": now, "limit": 3}
    )
    assert len(free.json()["data"]) == 3
    token = make_jwt({"name": "tenant", "scopes": [pipe_scope("popular", limit=1, now=now)]})
    for params in ({}, {"limit": 3}, {"limit": [3, 3]}):
        pinned = call(admin, "GET", "/v0/pipes/popular.json", token, params=params)
        assert pinned.status_code == 200, pinned.text
        assert len(pinned.json()["data"]) == 1
    posted = call(admin, "POST", "/v0/pipes/popular.json", token, json={"limit": 3})
    assert len(posted.json()["data"]) == 1


# ------------------------------------------------------------------- rate limits


def hammer(api: TestClient, token: str, n: int) -> list[Any]:
    return [call(api, "GET", "/v0/pipes", token) for _ in range(n)]


def assert_limited_then_recovers(api: TestClient, token: str, rps: int) -> None:
    # start at the beginning of a second so the whole burst falls in one window
    time.sleep(1 - (time.time() % 1) + 0.01)
    answers = hammer(api, token, rps + 2)
    statuses = [r.status_code for r in answers]
    assert statuses[:rps] == [200] * rps and 429 in statuses[rps:], statuses
    ok, refused = answers[0], next(r for r in answers if r.status_code == 429)
    assert ok.headers["X-RateLimit-Limit"] == str(rps)
    assert int(ok.headers["X-RateLimit-Remaining"]) == rps - 1
    body = assert_error_envelope(refused, 429)
    assert "rate limit" in body["error"]
    for header in (
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
    ):
        assert refused.headers[header].isdigit(), header
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    time.sleep(int(refused.headers["Retry-After"]) + 0.05)
    assert call(api, "GET", "/v0/pipes", token).status_code == 200


def test_rate_limit_per_static_token(shop: Path, settings: Settings, store: Store) -> None:
    limited = dataclasses.replace(settings, rate_limit_rps=5, rate_limit_ip_rps=0)
    with api_client(limited, store) as api:
        token = create_token(api, "slow", "PIPES:READ")
        assert_limited_then_recovers(api, token, 5)
        fast = create_token(api, "fast", "PIPES:READ", rps=50)  # its own limit wins
        assert all(r.status_code == 200 for r in hammer(api, fast, 12))


def test_rate_limit_per_jwt(shop: Path, settings: Settings, store: Store) -> None:
    limited = dataclasses.replace(
        settings, jwt_signing_key=SIGNING_KEY, rate_limit_rps=1000, rate_limit_ip_rps=0
    )
    with api_client(limited, store) as api:
        token = make_jwt(
            {"name": "tenant", "scopes": [pipe_scope("popular")], "limits": {"rps": 4}}
        )
        assert_limited_then_recovers(api, token, 4)


def test_rate_limit_per_client_address_counts_refused_tokens(
    shop: Path, settings: Settings, store: Store
) -> None:
    limited = dataclasses.replace(settings, rate_limit_ip_rps=6)
    with api_client(limited, store, per_address_limit=True) as api:
        time.sleep(1 - (time.time() % 1) + 0.01)
        statuses = [call(api, "GET", "/v0/pipes", "rp_guess").status_code for _ in range(8)]
        assert statuses[:6] == [403] * 6 and statuses[6:] == [429, 429], statuses


def test_q_time_budget_per_token(shop: Path, settings: Settings, store: Store) -> None:
    limited = dataclasses.replace(settings, q_seconds_per_minute=0.001)
    with api_client(limited, store) as api:
        token = create_token(api, "analyst", "PIPES:READ")
        url = "/v0/pipes/popular.json"
        first = call(api, "GET", url, token, params={"q": "SELECT count() FROM _"})
        assert first.status_code == 200, first.text
        spent = call(api, "GET", url, token, params={"q": "SELECT count() FROM _"})
        body = assert_error_envelope(spent, 429)
        assert "query budget" in body["error"] and spent.headers["Retry-After"].isdigit()
        assert call(api, "GET", url, token).status_code == 200  # plain calls are not charged


def test_q_rows_budget_per_token(shop: Path, settings: Settings, store: Store) -> None:
    """Rows read by `/v0/sql` are charged as ClickHouse reports them (JSON statistics)."""
    limited = dataclasses.replace(settings, q_rows_per_minute=5)
    with api_client(limited, store) as api:
        events = "\n".join(
            json.dumps({"user_id": f"u{i}", "item_id": f"i{i}", "event_type": "view"})
            for i in range(20)
        )
        stored = api.post("/v0/events", params={"name": "events", "wait": "true"}, content=events)
        assert stored.status_code == 200, stored.text
        token = create_token(api, "reader_of_events", "DATASOURCES:READ:events")
        q = {"q": "SELECT user_id FROM events FORMAT JSON"}
        first = call(api, "GET", "/v0/sql", token, params=q)
        assert first.status_code == 200, first.text
        assert first.json()["statistics"]["rows_read"] > 5
        spent = call(api, "GET", "/v0/sql", token, params=q)
        body = assert_error_envelope(spent, 429)
        assert "rows read" in body["error"] and spent.headers["Retry-After"].isdigit()
        other = create_token(api, "other_reader", "DATASOURCES:READ:events")
        assert call(api, "GET", "/v0/sql", other, params=q).status_code == 200  # per token
        piped = create_token(api, "q_reader", "PIPES:READ:trending")
        url, q = "/v0/pipes/trending.json", {"q": "SELECT * FROM _", "hours": "2160"}
        first = call(api, "GET", url, piped, params=q)
        assert first.status_code == 200 and first.json()["statistics"]["rows_read"] > 5
        assert_error_envelope(call(api, "GET", url, piped, params=q), 429)
