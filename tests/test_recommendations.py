"""The recommendation endpoints (endpoints/*.sql) on a small hand-computed fixture.

Everything goes through the real paths: the repository's migrations, events posted to
`POST /v0/events` (EventWriter, materialized views), catalog rows posted to the `items`
data source, and `GET /v0/pipes/<name>.json`. Every request passes `now` so the expected
values do not depend on the wall clock.

The fixture (NOW = a whole hour, two hours ago, or 23:00 the day before when that would
be before 03:00 UTC; all events on whole hours except views):

    purchases  u1/o1 NOW-48h: a1, b1     u2/o2 NOW-26h: a1, b1, c1
               u3/o3 NOW-3h:  a1, a2, d1 u4/o4 NOW-1h:  b2
    views      u5: a3 at NOW-30m and NOW-10m, c1 at NOW-20m (hour bucket NOW-1h)
    catalog    a1 a2 a3 (MUG), b1 b2 (LAMP), c1 (CANDLE), z1 (OTHER, never sold),
               d1 (MUG) whose latest version is unavailable

basket_pairs (orders with both items; here also buyer_pairs, buyers who bought both in one
period, since every user has one order):
    a1: b1=2, a2=1, c1=1, d1=1      b1: a1=2, c1=1      a2: a1=1, d1=1 ...
    the virtual item '' (orders with the item): a1=3, b1=2, a2=b2=c1=d1=1
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from redpoll.settings import Settings
from redpoll.store import Store
from redpoll.testing import copy_project
from tests.support.api import api_client
from tests.support.events import purchase
from tests.support.module_store import module_store
from tests.support.paths import REPO_ROOT

H = 3_600_000
# A whole hour of the recent past: `trending` has a 90-day TTL relative to the wall
# clock (applied on insert too), so the fixture must be recent. At 03:00 UTC or later, so
# that NOW-3h and NOW-1h fall on NOW's UTC day (`popular` counts calendar days).
_RECENT_HOUR_MS = int(time.time() // 3600 * 3600 * 1000) - 2 * H
_HOUR_OF_DAY = _RECENT_HOUR_MS // H % 24
NOW_MS = _RECENT_HOUR_MS - (_HOUR_OF_DAY + 1) * H if _HOUR_OF_DAY < 3 else _RECENT_HOUR_MS
NOW_DT = dt.datetime.fromtimestamp(NOW_MS / 1000, dt.UTC)
NOW = NOW_DT.strftime("%Y-%m-%d %H:%M:%SZ")

ITEMS = [
    ("a1", "Mug red", "MUG", 3.0, True),
    ("a2", "Mug blue", "MUG", 3.0, True),
    ("a3", "Mug green", "MUG", 3.0, True),
    ("b1", "Lamp", "LAMP", 20.0, True),
    ("b2", "Lamp big", "LAMP", 30.0, True),
    ("c1", "Candle", "CANDLE", 5.0, True),
    ("z1", "Never sold", "OTHER", 1.0, True),
]


def _purchase(user: str, order: str, item: str, ago_ms: int) -> dict[str, Any]:
    return purchase(user, order, item, (NOW_MS - ago_ms) / 1000)


def _view(user: str, item: str, ago_ms: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"v{n}",
        "ts": (NOW_MS - ago_ms) / 1000,
        "user_id": user,
        "item_id": item,
        "event_type": "view",
    }


EVENTS = [
    _purchase("u1", "o1", "a1", 48 * H),
    _purchase("u1", "o1", "b1", 48 * H),
    _purchase("u2", "o2", "a1", 26 * H),
    _purchase("u2", "o2", "b1", 26 * H),
    _purchase("u2", "o2", "c1", 26 * H),
    _purchase("u3", "o3", "a1", 3 * H),
    _purchase("u3", "o3", "a2", 3 * H),
    _purchase("u3", "o3", "d1", 3 * H),
    _purchase("u4", "o4", "b2", 1 * H),
    _view("u5", "a3", H // 2, 1),
    _view("u5", "c1", H // 3, 2),
    _view("u5", "a3", H // 6, 3),
]


def ndjson(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def serve_fixture(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    """The app over `store`, migrated, with the fixture's items and events."""
    copy_project(REPO_ROOT, project_dir, ("sql", "migrations", "endpoints"), exist_ok=True)
    store.migrations().up()
    with api_client(settings, store) as client:
        load_fixture(client)
        yield client


def load_fixture(client: TestClient) -> None:
    catalog = [
        {
            "item_id": i,
            "title": t,
            "category": c,
            "price": p,
            "available": a,
            "updated_at": "2024-01-01 00:00:00",
        }
        for i, t, c, p, a in ITEMS
    ]
    # d1: available at first, its latest version is not
    catalog.append(
        {
            "item_id": "d1",
            "title": "Mug old",
            "category": "MUG",
            "price": 1.0,
            "available": True,
            "updated_at": "2024-01-01 00:00:00",
        }
    )
    catalog.append(
        {
            "item_id": "d1",
            "title": "Mug old",
            "category": "MUG",
            "price": 1.0,
            "available": False,
            "updated_at": "2024-02-01 00:00:00",
        }
    )
    r = client.post("/v0/events?name=items&wait=true", content=ndjson(catalog))
    assert r.status_code == 200 and r.json()["quarantined_rows"] == 0, r.text
    r = client.post("/v0/events?name=events&wait=true", content=ndjson(EVENTS))
    assert r.status_code == 200 and r.json()["quarantined_rows"] == 0, r.text


@pytest.fixture(scope="module")
def recs(
    redpoll_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app on the fixture for the tests that only read (speed only: the fixture and
    its migrations are built once per module, not per test)."""
    project = tmp_path_factory.mktemp("recs")
    with module_store(redpoll_clickhouse_url, project) as (settings, store):
        yield from serve_fixture(project, settings, store)


@pytest.fixture
def own_recs(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    """The same on a database of the test's own, for tests that write."""
    yield from serve_fixture(project_dir, settings, store)


def call(client: TestClient, name: str, **params: Any) -> dict[str, Any]:
    params.setdefault("now", NOW)
    r = client.get(f"/v0/pipes/{name}.json", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def ids(client: TestClient, name: str, **params: Any) -> list[str]:
    return [row["item_id"] for row in call(client, name, **params)["data"]]


def test_endpoints_load_without_errors(recs: TestClient) -> None:
    listing = recs.get("/v0/pipes").json()
    assert listing["errors"] == []
    names = {p["name"] for p in listing["pipes"]}
    assert {
        "also_bought",
        "trending",
        "for_user",
        "recently_viewed",
        "popular",
        "recommendation_stats",
    } <= names


def test_also_bought(recs: TestClient) -> None:
    # orders with a1: b1 in 2, a2 and c1 in 1 (tie: item_id), d1 unavailable; then the
    # popular fill (b2); the last slot: a new item (never ordered) sharing MUG, a3
    assert ids(recs, "also_bought", item_id="a1") == ["b1", "a2", "c1", "b2", "a3"]
    assert ids(recs, "also_bought", item_id="a1", variant="b") == ["b1", "a2", "c1", "b2", "a3"]
    assert ids(recs, "also_bought", item_id="a1", fallback="false") == ["b1", "a2", "c1"]
    assert ids(recs, "also_bought", item_id="a1", exclude="b1,c1") == ["a2", "b2", "a3"]
    assert ids(recs, "also_bought", item_id="a1", category="LAMP") == ["b1", "b2"]
    assert ids(recs, "also_bought", item_id="a1", max_per_category=1) == ["b1", "a2", "c1"]
    assert ids(recs, "also_bought", item_id="a1", limit=2) == ["b1", "a3"]
    assert ids(recs, "also_bought", item_id="a1", limit=2, new_slots=0) == ["b1", "a2"]
    # a: orders with both items (b1: o1, o2); b: the buyer_pairs view, same counts here
    top = call(recs, "also_bought", item_id="a1")["data"][0]
    assert (top["score"], top["source"]) == (2, "also_bought:a")
    # popularity_damping: pairs / (purchases in 30 days + 10)^d; b1 was bought twice
    top = call(recs, "also_bought", item_id="a1", variant="b", popularity_damping=0.3)
    assert top["data"][0]["score"] == pytest.approx(2 / 12**0.3, rel=1e-6)
    # an unknown item: popular items only
    assert ids(recs, "also_bought", item_id="nope") == ["a1", "b1", "a2", "b2", "c1"]
    r = recs.get("/v0/pipes/also_bought.json")
    assert r.status_code == 400 and "item_id" in r.json()["error"]


def test_also_bought_ties_and_popularity_weight(own_recs: TestClient) -> None:
    # a new order o6 = {c1, a3}: c1 is now in one order with each of a1, b1 and a3;
    # equal counts go to the item in more orders (a1 3, b1 2, a3 1), not by item id
    r = own_recs.post(
        "/v0/events?name=events&wait=true",
        content=ndjson([_purchase("u6", "o6", "c1", H), _purchase("u6", "o6", "a3", H)]),
    )
    assert r.status_code == 200 and r.json()["successful_rows"] == 2, r.text
    assert ids(own_recs, "also_bought", item_id="c1", fallback="false") == ["a1", "b1", "a3"]
    # popularity_weight w adds w * orders / most orders (a1 3; b1, c1 now 2) to every
    # row: a2's one co-order with a1 scores 1 + w, the popular fill w * 2/3 (ties: id)
    rows = call(own_recs, "also_bought", item_id="a2", popularity_weight=1.5)["data"]
    assert [r["item_id"] for r in rows][:3] == ["a1", "b1", "c1"]
    assert [r["score"] for r in rows][:3] == pytest.approx([1 + 1.5, 1.5 * 2 / 3, 1.5 * 2 / 3])


def test_popular(recs: TestClient) -> None:
    # purchases in 30 days: a1=3, b1=2, a2=b2=c1=1 (d1 unavailable)
    data = call(recs, "popular")["data"]
    assert [(r["item_id"], int(r["purchases"])) for r in data] == [
        ("a1", 3),
        ("b1", 2),
        ("a2", 1),
        ("b2", 1),
        ("c1", 1),
    ]
    assert ids(recs, "popular", days=1) == ["a1", "a2", "b2"]
    assert ids(recs, "popular", max_per_category=1) == ["a1", "b1", "c1"]
    assert ids(recs, "popular", category="LAMP") == ["b1", "b2"]
    assert ids(recs, "popular", exclude="a1") == ["b1", "a2", "b2", "c1"]
    assert recs.get("/v0/pipes/popular.json", params={"days": 91}).status_code == 400


def test_trending(recs: TestClient) -> None:
    # score = sum(events * weight * 2^(-age_h / 24)); purchase 5, view 1; age of the bucket
    def decay(hours: float) -> float:
        return 2 ** (-hours / 24)

    expected = {
        "a1": 5 * (decay(48) + decay(26) + decay(3)),
        "b2": 5 * decay(1),
        "a2": 5 * decay(3),
        "b1": 5 * (decay(48) + decay(26)),
        "c1": 5 * decay(26) + decay(1),
        "a3": 2 * decay(1),
    }
    data = call(recs, "trending")["data"]
    assert [r["item_id"] for r in data] == ["a1", "b2", "a2", "b1", "c1", "a3"]
    for row in data:
        assert row["score"] == pytest.approx(expected[row["item_id"]], abs=1e-5)
    assert ids(recs, "trending", hours=2) == ["b2", "a3", "c1"]
    assert ids(recs, "trending", category="MUG") == ["a1", "a2", "a3"]
    assert ids(recs, "trending", max_per_category=1) == ["a1", "b2", "c1"]
    assert ids(recs, "trending", exclude="a1,b2", limit=2) == ["a2", "b1"]
    # weights are parameters: views only
    assert ids(recs, "trending", purchase_weight=0) == ["a3", "c1"]


def test_recently_viewed(recs: TestClient) -> None:
    assert ids(recs, "recently_viewed", user_id="u5") == ["a3", "c1"]
    assert ids(recs, "recently_viewed", user_id="u5", exclude="a3") == ["c1"]
    assert ids(recs, "recently_viewed", user_id="u5", category="CANDLE") == ["c1"]
    assert ids(recs, "recently_viewed", user_id="u1") == []
    assert ids(recs, "recently_viewed", user_id="u1", event_types="purchase") == ["a1", "b1"]
    # as of 25 minutes ago only the first view of a3 had happened
    earlier = (NOW_DT - dt.timedelta(minutes=25)).strftime("%Y-%m-%d %H:%M:%SZ")
    assert ids(recs, "recently_viewed", user_id="u5", now=earlier) == ["a3"]


def test_for_user_personalized_and_exclusion(recs: TestClient) -> None:
    # mode=explore: v1's ranking (the default mode, mixed, also ranks the user's
    # purchases: tests/test_for_user_v2.py).
    # Variant a: score = trend * (0.1 + similarity), both scaled to [0, 1] over the
    # available items. Trend (purchase 1, view 0.3, half-life 72 h, by hour bucket):
    # a1 2.380, b1 1.409, c1 1.076, b2 0.990, a2 0.972, a3 0.594 -> scaled a1 1, b1 .592,
    # c1 .452, b2 .416, a2 .408, a3 .250.
    # Title words (3+ letters) over the 8 catalog items (d1 "Mug old" included):
    # MUG in a1 a2 a3 d1 (idf ln(9/5)), LAMP in b1 b2 (ln(9/3)), RED/BLUE/... once (ln(9/2)).
    # u1 bought a1 "Mug red" and b1 "Lamp" (equal weights w): similarity = sum over the
    # item's words of idf^2 * w: a1 (MUG+RED) 2.608w, b1 = b2 (LAMP) 1.207w,
    # a2 = a3 (MUG) 0.346w, c1 = z1 = 0 -> scaled a1 1, b1 = b2 .463, a2 = a3 .132.
    # Scores: b2 .416*.563 = .234, a2 .408*.232 = .095, a3 .250*.232 = .058,
    # c1 .452*.1 = .045, z1 0 (a1 1.1 and b1 .333 are left out: bought; d1 unavailable).
    def decay(hours: float) -> float:
        return 2 ** (-hours / 72)

    trend = {
        "a1": decay(48) + decay(26) + decay(3),
        "b2": decay(1),
        "c1": decay(26) + 0.3 * decay(1),
        "a2": decay(3),
    }
    idf2_mug, idf2_lamp, idf2_once = (
        math.log(9 / 5) ** 2,
        math.log(9 / 3) ** 2,
        math.log(9 / 2) ** 2,
    )
    max_sim = idf2_mug + idf2_once  # a1
    rows = call(recs, "for_user", user_id="u1", mode="explore")["data"]
    assert [r["item_id"] for r in rows] == ["b2", "a2", "a3", "c1", "z1"]
    expected_b2 = trend["b2"] / trend["a1"] * (0.1 + idf2_lamp / max_sim)
    assert rows[0]["score"] == pytest.approx(expected_b2, abs=1e-5)
    assert rows[3]["score"] == pytest.approx(trend["c1"] / trend["a1"] * 0.1, abs=1e-5)
    assert ids(recs, "for_user", user_id="u1", mode="explore", exclude_purchased="false")[:4] == [
        "a1",
        "b1",
        "b2",
        "a2",
    ]
    # without the floor, only items sharing a title word with u1's items score
    assert ids(recs, "for_user", user_id="u1", mode="explore", profile_floor=0, limit=3) == [
        "b2",
        "a2",
        "a3",
    ]
    assert ids(recs, "for_user", user_id="u1", mode="explore", exclude="b2", limit=2) == [
        "a2",
        "a3",
    ]
    assert ids(recs, "for_user", user_id="u1", mode="explore", category="MUG") == ["a2", "a3"]
    # variant b: basket neighbours of a1, b1 (c1 in 2 orders, a2 in 1), divided by
    # sqrt(purchases + 10) and scaled (c1 1, a2 .5), plus 5 * trend: c1 3.26, a2 2.54,
    # b2 2.08, a3 1.25
    assert ids(recs, "for_user", user_id="u1", mode="explore", variant="b", limit=4) == [
        "c1",
        "a2",
        "b2",
        "a3",
    ]
    # as of before u1's purchase, u1 is unknown and nothing had happened (no trend, no
    # purchase to rank by): the catalog's items, reason cold_start, by item id
    before = (NOW_DT - dt.timedelta(hours=49)).strftime("%Y-%m-%d %H:%M:%SZ")
    assert ids(recs, "for_user", user_id="u1", mode="explore", now=before, limit=3) == [
        "a1",
        "a2",
        "a3",
    ]


def test_for_user_cold_start_fills_from_catalog(recs: TestClient) -> None:
    # unknown user: trending (purchase 1, view 0.3, half-life 72 h): a1 > b1 > c1 > b2 >
    # a2 > a3, then the catalog (z1, never sold); d1 is never shown (unavailable)
    assert ids(recs, "for_user", user_id="nobody", limit=3) == ["a1", "b1", "c1"]
    everything = ids(recs, "for_user", user_id="nobody", limit=100)
    assert everything == ["a1", "b1", "c1", "b2", "a2", "a3", "z1"]
    assert ids(recs, "for_user", user_id="nobody", max_per_category=1) == ["a1", "b1", "c1", "z1"]
    # u4 bought b2 (no co-purchases): still a full list
    assert len(ids(recs, "for_user", user_id="u4", limit=6)) == 6


def test_for_user_does_not_depend_on_merges(own_recs: TestClient, store: Store) -> None:
    # u6 buys a1 60 days ago and again 1 hour ago, in two INSERTs: two rows of
    # user_item_stats until a merge collapses them. The user's weight of a1 is
    # events * decay(last event) = 2 * decay(1 h) either way (summing decays per row
    # would give decay(60 d) + decay(1 h) before the merge and 2 * decay(1 h) after).
    day = 24 * H
    db = store.target.database
    store.admin.command(f"SYSTEM STOP MERGES {db}.user_item_stats")  # no merge before ours
    for n, (item, ago) in enumerate((("a1", 60 * day), ("a1", H), ("b1", 10 * day))):
        event = _purchase("u6", f"o6{n}", item, ago)
        r = own_recs.post("/v0/events?name=events&wait=true", content=ndjson([event]))
        assert r.status_code == 200, r.text
    parts = store.admin.command(
        f"SELECT count() FROM system.parts WHERE database = '{db}' "
        "AND table = 'user_item_stats' AND active"
    )
    assert int(parts) >= 3  # the fixture's INSERT and u6's two a1 rows are separate parts
    before = call(own_recs, "for_user", user_id="u6", exclude_purchased="false", limit=7)["data"]
    store.admin.command(f"SYSTEM START MERGES {db}.user_item_stats")
    store.admin.command(f"OPTIMIZE TABLE {db}.user_item_stats FINAL")
    after = call(own_recs, "for_user", user_id="u6", exclude_purchased="false", limit=7)["data"]
    assert [(r["item_id"], r["score"]) for r in before] == [
        (r["item_id"], r["score"]) for r in after
    ]


def test_rec_id_and_variant(recs: TestClient) -> None:
    first = call(recs, "for_user", user_id="u1")["data"]
    assert len({r["rec_id"] for r in first}) == 1 and first[0]["rec_id"]
    second = call(recs, "for_user", user_id="u1")["data"]
    assert second[0]["rec_id"] != first[0]["rec_id"]
    passed = call(recs, "trending", rec_id="r-123")["data"]
    assert {r["rec_id"] for r in passed} == {"r-123"}
    for name, extra in [
        ("also_bought", {"item_id": "a1"}),
        ("for_user", {"user_id": "u1"}),
        ("trending", {}),
        ("popular", {}),
        ("recently_viewed", {"user_id": "u5"}),
    ]:
        rows = call(recs, name, variant="b", **extra)["data"]
        assert rows and {r["source"] for r in rows} == {f"{name}:b"}, name
    r = recs.get("/v0/pipes/for_user.json", params={"user_id": "u1", "variant": "c"})
    assert r.status_code == 400 and "variant" in r.json()["error"]


def test_attribution_recommendation_stats(own_recs: TestClient) -> None:
    shown_a = call(own_recs, "for_user", user_id="u1", limit=3)["data"]
    shown_b = call(own_recs, "for_user", user_id="u2", limit=2, variant="b")["data"]
    ts = (NOW_DT - dt.timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    feedback = []
    for row in shown_a + shown_b:
        feedback.append(
            {
                "event_type": "impression",
                "item_id": row["item_id"],
                "ts": ts,
                "user_id": "u1",
                "rec_id": row["rec_id"],
                "source": row["source"],
            }
        )
    click_a, click_b = shown_a[0], shown_b[1]
    for row in (click_a, click_b):
        feedback.append(
            {
                "event_type": "click",
                "item_id": row["item_id"],
                "ts": ts,
                "user_id": "u1",
                "rec_id": row["rec_id"],
                "source": row["source"],
            }
        )
    # a click without rec_id is not attributed
    feedback.append({"event_type": "click", "item_id": "a1", "ts": ts, "user_id": "u9"})
    r = own_recs.post("/v0/events?name=events&wait=true", content=ndjson(feedback))
    assert r.json() == {"successful_rows": 8, "quarantined_rows": 0}
    stats = call(own_recs, "recommendation_stats")["data"]
    got = {(s["endpoint"], s["variant"]): s for s in stats}
    assert set(got) == {("for_user", "a"), ("for_user", "b")}
    a, b = got["for_user", "a"], got["for_user", "b"]
    assert (int(a["impressions"]), int(a["clicks"]), a["ctr"]) == (3, 1, pytest.approx(0.3333))
    assert (int(b["impressions"]), int(b["clicks"]), b["ctr"]) == (2, 1, 0.5)
    assert int(a["recommendations"]) == 1
    assert a["day"] == (NOW_DT - dt.timedelta(minutes=30)).strftime("%Y-%m-%d")
    only_b = call(own_recs, "recommendation_stats", endpoint="for_user")["data"]
    assert len(only_b) == 2
    assert call(own_recs, "recommendation_stats", endpoint="trending")["data"] == []
