"""for_session, new_items, the new-item slots of also_bought, and two defects of the
recommendation endpoints: items missing from the catalog and answers "as of" `now`.

Everything goes through the real paths (migrations, `POST /v0/events`, the views,
`GET /v0/pipes/<name>.json`), on a small fixture worked out by hand. NOW is the latest
12:00 UTC at least two hours ago (recent: `trending` and `session_history` keep 90 days).

    catalog   m1 "Red mug", m2 "Blue mug", m3 "Green mug" (MUG; m3 never sold),
              l1 "Desk lamp", l2 "Floor lamp" (LAMP), c1 "Candle" (CANDLE),
              x1 "Old mug" (MUG, unavailable); `ghost` is only in the events
    orders    o1 u1 NOW-30h: m1 l1     o2 u2 NOW-20h: m1 l1 c1     o3 u3 NOW-5h: m1 m2
              o4 u4 NOW-2h: m1 x1      o5 u5 NOW-3h: m2 ghost
    session   s1 (anonymous): view c1 NOW-90m, view m2 NOW-20m, cart l1 NOW-10m;
              impressions of m1 at NOW-2h, NOW-90m, NOW-1h, no click
    after NOW s1 views l2 at NOW+5m; u9 buys l2 at NOW+10m and c1 at NOW+40m (no order)

basket_pairs: m1: l1 2, c1 1, m2 1, x1 1; l1: m1 2, c1 1; m2: m1 1, ghost 1;
orders per item: m1 4, l1 2, m2 2, c1 1, ghost 1, x1 1.
Title terms (words of 3+ letters and the category) over the 7 catalog items: MUG and
category:MUG in m1 m2 m3 x1 (idf ln(8/5)), LAMP and category:LAMP in l1 l2 (ln(8/3)).
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
M = 60_000
# the latest 12:00 UTC at least 2 hours ago: every event of the fixture but the
# `o1`/`o2` orders falls on NOW's UTC day, and all of them are in the past
_LATEST_MS = time.time() * 1000 - 2 * H
_NOON_MS = int(_LATEST_MS // (24 * H) * (24 * H)) + 12 * H
NOW_MS = _NOON_MS if _LATEST_MS >= _NOON_MS else _NOON_MS - 24 * H
NOW_DT = dt.datetime.fromtimestamp(NOW_MS / 1000, dt.UTC)


def at(offset_ms: int) -> str:
    """NOW + offset as the `now` parameter."""
    return (NOW_DT + dt.timedelta(milliseconds=offset_ms)).strftime("%Y-%m-%d %H:%M:%SZ")


NOW = at(0)
IDF2_MUG = math.log(8 / 5) ** 2
IDF2_LAMP = math.log(8 / 3) ** 2

CATALOG = [
    ("m1", "Red mug", "MUG", True),
    ("m2", "Blue mug", "MUG", True),
    ("m3", "Green mug", "MUG", True),
    ("l1", "Desk lamp", "LAMP", True),
    ("l2", "Floor lamp", "LAMP", True),
    ("c1", "Candle", "CANDLE", True),
    ("x1", "Old mug", "MUG", False),
]


def _buy(user: str, order: str, item: str, ago_ms: int) -> dict[str, Any]:
    return purchase(user, order, item, (NOW_MS - ago_ms) / 1000)


def _event(n: int, kind: str, item: str, offset_ms: int, **extra: str) -> dict[str, Any]:
    return {
        "event_id": f"s{n}",
        "ts": (NOW_MS + offset_ms) / 1000,
        "item_id": item,
        "event_type": kind,
        **extra,
    }


EVENTS = [
    _buy("u1", "o1", "m1", 30 * H),
    _buy("u1", "o1", "l1", 30 * H),
    _buy("u2", "o2", "m1", 20 * H),
    _buy("u2", "o2", "l1", 20 * H),
    _buy("u2", "o2", "c1", 20 * H),
    _buy("u3", "o3", "m1", 5 * H),
    _buy("u3", "o3", "m2", 5 * H),
    _buy("u4", "o4", "m1", 2 * H),
    _buy("u4", "o4", "x1", 2 * H),
    _buy("u5", "o5", "m2", 3 * H),
    _buy("u5", "o5", "ghost", 3 * H),
    _event(1, "view", "c1", -90 * M, session_id="s1"),
    _event(2, "view", "m2", -20 * M, session_id="s1"),
    _event(3, "cart", "l1", -10 * M, session_id="s1"),
    _event(4, "impression", "m1", -2 * H, session_id="s1"),
    _event(5, "impression", "m1", -90 * M, session_id="s1"),
    _event(6, "impression", "m1", -H, session_id="s1"),
    # after NOW
    _event(7, "view", "l2", 5 * M, session_id="s1"),
    _event(8, "purchase", "l2", 10 * M, user_id="u9"),
    _event(9, "purchase", "c1", 40 * M, user_id="u9"),
]


def ndjson(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def serve(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient[Any]]:
    copy_project(REPO_ROOT, project_dir, ("sql", "migrations", "endpoints"), exist_ok=True)
    store.migrations().up()
    with api_client(settings, store) as client:
        catalog = [
            {"item_id": i, "title": t, "category": c, "price": 1.0, "available": a}
            for i, t, c, a in CATALOG
        ]
        for name, rows in (("items", catalog), ("events", EVENTS)):
            r = client.post(f"/v0/events?name={name}&wait=true", content=ndjson(rows))
            assert r.status_code == 200 and r.json()["quarantined_rows"] == 0, r.text
        yield client


@pytest.fixture(scope="module")
def shop(
    redpoll_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient[Any]]:
    """One app on the fixture for the tests that only read."""
    project = tmp_path_factory.mktemp("session")
    with module_store(redpoll_clickhouse_url, project) as (settings, store):
        yield from serve(project, settings, store)


@pytest.fixture
def own_shop(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient[Any]]:
    """The same on a database of the test's own, for tests that write."""
    yield from serve(project_dir, settings, store)


def rows(client: TestClient[Any], name: str, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("now", NOW)
    r = client.get(f"/v0/pipes/{name}.json", params=params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def ids(client: TestClient[Any], name: str, **params: Any) -> list[str]:
    return [row["item_id"] for row in rows(client, name, **params)]


def test_trending_is_exact_as_of_now(shop: TestClient[Any]) -> None:
    # no decay: weighted counts (purchase 5, cart 3, view 1, impression 0) of the events
    # at or before `now`. As of NOW+20m, l2 has its view (NOW+5m) and purchase (NOW+10m);
    # c1's purchase at NOW+40m is in the same hour bucket but after now, so c1 = 5 + 1
    # (after l2: the huge half-life still decays c1's older events a little). Reading
    # that bucket whole would give c1 11 and put it third.
    flat = {"half_life_hours": 1e9}
    got = rows(shop, "trending", now=at(20 * M), **flat)
    assert [(r["item_id"], r["score"]) for r in got] == [
        ("m1", 20),
        ("l1", 13),
        ("m2", 11),
        ("l2", 6),
        ("c1", 6),
        ("ghost", 5),
    ]
    # as of NOW nothing after it counts: no l2
    assert ids(shop, "trending", **flat) == ["m1", "l1", "m2", "c1", "ghost"]


def test_popular_is_exact_as_of_now(shop: TestClient[Any]) -> None:
    # purchases up to NOW+20m: m1 4, l1 2, m2 2, then 1 each (c1's second purchase at
    # NOW+40m is the same UTC day but after now)
    got = rows(shop, "popular", now=at(20 * M))
    assert [(r["item_id"], int(r["purchases"])) for r in got] == [
        ("m1", 4),
        ("l1", 2),
        ("m2", 2),
        ("c1", 1),
        ("ghost", 1),
        ("l2", 1),
    ]
    assert ids(shop, "popular", now=at(50 * M))[:2] == ["m1", "c1"]


def test_items_missing_from_the_catalog_are_recommended(shop: TestClient[Any]) -> None:
    # `ghost` is only in the events: it is recommended, with empty catalog columns; x1,
    # which the catalog marks unavailable, never is
    got = rows(shop, "also_bought", item_id="m2", fallback="false")
    assert [(r["item_id"], r["title"], r["reason"]) for r in got] == [
        ("m1", "Red mug", "co_purchase"),
        ("ghost", "", "co_purchase"),
    ]
    assert "ghost" in ids(shop, "popular")
    assert "ghost" in ids(shop, "trending")
    assert "x1" not in ids(shop, "also_bought", item_id="m1", limit=100)
    assert "x1" not in ids(shop, "trending", limit=100)
    # a category only matches catalog items
    assert ids(shop, "popular", category="MUG") == ["m1", "m2"]


def test_also_bought_gives_new_items_the_last_slots(shop: TestClient[Any]) -> None:
    # m2: co-purchased m1 and ghost (1 order each; m1 in more orders), the popular fill
    # l1 and c1, and the last slot: m3, never ordered, shares MUG and the category
    got = rows(shop, "also_bought", item_id="m2")
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("m1", "co_purchase"),
        ("ghost", "co_purchase"),
        ("l1", "popular"),
        ("c1", "popular"),
        ("m3", "new_similar"),
    ]
    assert got[-1]["score"] == pytest.approx(2 * IDF2_MUG, abs=1e-9)
    # the slot is one of the limit, never the first
    assert ids(shop, "also_bought", item_id="m2", limit=2) == ["m1", "m3"]
    assert ids(shop, "also_bought", item_id="m2", limit=1) == ["m1"]
    # off: new_slots=0, or fallback=false (co-purchases only)
    assert ids(shop, "also_bought", item_id="m2", new_slots=0) == ["m1", "ghost", "l1", "c1"]
    # l2 was never ordered: popular items, and l1 (2 orders, LAMP) in the last slot; with
    # new_max_orders=2, l1 is not new and takes its popular rank (ties: item_id)
    assert ids(shop, "also_bought", item_id="l2", limit=3) == ["m1", "m2", "l1"]
    assert ids(shop, "also_bought", item_id="l2", limit=3, new_max_orders=2) == [
        "m1",
        "l1",
        "m2",
    ]


def test_for_session_neighbours_of_recent_items(shop: TestClient[Any]) -> None:
    # s1's items in the last 30 minutes as of NOW: m2 (view, 20 min ago: 1 * 2^-2 = .25)
    # and l1 (cart, 10 min ago: 3 * 2^-1 = 1.5); c1's view is older, l2's is after now.
    # Neighbours: m1 .25 * 1 + 1.5 * 2 = 3.25, c1 1.5 * 1, ghost .25 * 1; m1 was shown
    # 3 times in 24 hours without a click: left out by default
    got = rows(shop, "for_session", session_id="s1")
    assert [(r["item_id"], r["score"], r["reason"]) for r in got] == [
        ("c1", 1.5, "co_purchase"),
        ("ghost", 0.25, "co_purchase"),
    ]
    assert {r["source"] for r in got} == {"for_session:a"}
    # repetition control: a higher threshold, a shorter window, or off
    expected = ["m1", "c1", "ghost"]
    assert ids(shop, "for_session", session_id="s1", max_shown=4) == expected
    assert ids(shop, "for_session", session_id="s1", max_shown=0) == expected
    assert ids(shop, "for_session", session_id="s1", shown_hours=1) == expected
    # a longer window brings c1's view in (c1 becomes the session's own item)
    assert ids(shop, "for_session", session_id="s1", minutes=120, max_shown=0) == ["m1", "ghost"]
    # business rules
    assert ids(shop, "for_session", session_id="s1", max_shown=0, exclude="c1") == ["m1", "ghost"]
    assert ids(shop, "for_session", session_id="s1", max_shown=0, category="MUG") == ["m1"]


def test_for_session_falls_back_to_the_trend(shop: TestClient[Any]) -> None:
    # l2 has no co-purchase: the trend of the last 24 hours as of NOW (purchase 5, cart 3,
    # view 1, halved every 24 hours by the age of the hour bucket)
    def d(hours: float) -> float:
        return float(2 ** (-hours / 24))

    trend = {
        "m1": 5 * (d(20) + d(5) + d(2)),
        "m2": 5 * (d(5) + d(3)) + d(1),
        "l1": 5 * d(20) + 3 * d(1),
        "ghost": 5 * d(3),
        "c1": 5 * d(20) + d(2),
    }
    got = rows(shop, "for_session", items="l2")
    assert [r["item_id"] for r in got] == ["m1", "m2", "l1", "ghost", "c1"]
    assert {r["reason"] for r in got} == {"trending"}
    for r in got:
        assert r["score"] == pytest.approx(trend[r["item_id"]], abs=1e-5)
    # explicit items and a session together: the neighbours of both, none of them shown
    got = rows(shop, "for_session", session_id="s1", items="c1", max_shown=0)
    assert [(r["item_id"], r["reason"]) for r in got][:2] == [
        ("m1", "co_purchase"),
        ("ghost", "co_purchase"),
    ]
    assert "c1" not in [r["item_id"] for r in got]


def test_for_session_is_real_time(own_shop: TestClient[Any]) -> None:
    # an unknown session gets the trend; one view later, m2's neighbours come first
    # (one order each with m2: ties by item_id)
    assert ids(own_shop, "for_session", session_id="s9") == ["m1", "m2", "l1", "ghost", "c1"]
    view = _event(20, "view", "m2", -M, session_id="s9")
    r = own_shop.post("/v0/events?name=events&wait=true", content=ndjson([view]))
    assert r.status_code == 200, r.text
    got = rows(own_shop, "for_session", session_id="s9")
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("ghost", "co_purchase"),
        ("m1", "co_purchase"),
        ("l1", "trending"),
        ("c1", "trending"),
    ]


def test_new_items(shop: TestClient[Any]) -> None:
    # as of NOW, fewer than 3 events (impressions do not count) or first seen today:
    # never seen l2 (its events are after NOW) and m3; first seen today m2 (3 events)
    # and ghost (1); c1 (2 events, first yesterday). m1 (4) and l1 (3) are not new; x1
    # is unavailable
    got = rows(shop, "new_items", max_events=3, days=1)
    assert [(r["item_id"], int(r["events"]), r["reason"]) for r in got] == [
        ("l2", 0, "new"),
        ("m3", 0, "new"),
        ("m2", 3, "new"),
        ("ghost", 1, "new"),
        ("c1", 2, "new"),
    ]
    assert got[0]["first_seen"] is None
    assert got[2]["first_seen"] == NOW_DT.strftime("%Y-%m-%d")
    # as of NOW+20m l2 has 2 events today; c1's purchase at NOW+40m does not count yet
    later = ids(shop, "new_items", max_events=3, days=1, now=at(20 * M))
    assert later == ["m3", "m2", "l2", "ghost", "c1"]
    assert "c1" not in ids(shop, "new_items", max_events=3, days=1, now=at(50 * M))
    # similar to a seed first: m3 and m2 share MUG and the category with m1
    got = rows(shop, "new_items", max_events=3, days=1, items="m1")
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("m3", "new_similar"),
        ("m2", "new_similar"),
        ("l2", "new"),
        ("ghost", "new"),
        ("c1", "new"),
    ]
    assert got[0]["score"] == pytest.approx(2 * IDF2_MUG, abs=1e-6)
    # seeds from a session (s1: m2 and l1 in the last 30 minutes), left out themselves
    got = rows(shop, "new_items", max_events=3, days=1, session_id="s1")
    assert [(r["item_id"], r["score"]) for r in got] == [
        ("l2", pytest.approx(2 * IDF2_LAMP, abs=1e-6)),
        ("m3", pytest.approx(2 * IDF2_MUG, abs=1e-6)),
        ("ghost", 0),
        ("c1", 0),
    ]
    assert ids(shop, "new_items", max_events=3, days=1, category="MUG") == ["m3", "m2"]


@pytest.mark.parametrize(
    ("name", "params", "word"),
    [
        ("for_session", {}, "session_id"),
        ("for_session", {"session_id": "s1", "minutes": 0}, "minutes"),
        ("for_session", {"session_id": "s1", "max_shown": -1}, "max_shown"),
        ("for_session", {"session_id": "s1", "variant": "c"}, "variant"),
        ("new_items", {"max_events": 0}, "max_events"),
        ("new_items", {"days": 0}, "days"),
        ("also_bought", {"item_id": "m1", "new_slots": 11}, "new_slots"),
    ],
)
def test_bad_parameters_are_400(
    shop: TestClient[Any], name: str, params: dict[str, Any], word: str
) -> None:
    r = shop.get(f"/v0/pipes/{name}.json", params=params)
    assert r.status_code == 400 and word in r.json()["error"], r.text
