"""`for_user` v2 (endpoints/for_user.sql) on a small hand-computed fixture: works from
events alone, `now` is exact (trend included), repeat-aware modes with `reason`, a purchase
changes the next answer, repetition control.

Everything goes through the real paths: the repository's migrations, events posted to
`POST /v0/events`, catalog rows to the `items` data source, `GET /v0/pipes/for_user.json`.

The fixture (H = yesterday 12:00 UTC, NOW = H + 30 min; d = days):

    catalog    t1 "Green tea", t2 "Black tea" (TEA), c1 "Coffee beans", h1 "Garden hose",
               l1 "Old lamp" (available: false); x9 and v7 are only in events
    r buys     t1 at NOW-30d, -20d, -10d; c1 at NOW-29d, -27d, -25d; h1 at NOW-2d and
               (after NOW) at H+50min
    a          buys t2 at H-1h, x9 at H-3h, l1 at H-2h; views v7 at NOW-40d
    b          buys x9 at H+10min (now's hour, before NOW)
    c          buys c1 three times at H+45min (after NOW)

As of NOW the trend (purchase 1, 168 h, halved every 72 h, age = NOW - start of the
event's hour) is x9 2^(-3.5/72) + 2^(-0.5/72) (the H bucket is read from events_by_time up
to NOW), t2 2^(-1.5/72), h1 2^(-48.5/72); l1 is unavailable; c's purchases and r's second
h1 are after NOW. Purchases in the 30 whole days before NOW's day: t1 3, c1 3, h1 1.
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

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
H_MS = (int(time.time() * 1000) // DAY - 1) * DAY + 12 * HOUR  # yesterday 12:00 UTC
NOW_MS = H_MS + 30 * MIN


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


NOW = iso(NOW_MS)

CATALOG = [
    ("t1", "Green tea", "TEA", True),
    ("t2", "Black tea", "TEA", True),
    ("c1", "Coffee beans", "COFFEE", True),
    ("h1", "Garden hose", "GARDEN", True),
    ("l1", "Old lamp", "LAMP", False),
]


def buy(user: str, order: str, item: str, at_ms: int) -> dict[str, Any]:
    return purchase(user, order, item, at_ms / 1000)


def event(kind: str, user: str, item: str, at_ms: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{kind}{user}{item}{n}",
        "ts": at_ms / 1000,
        "user_id": user,
        "item_id": item,
        "event_type": kind,
    }


EVENTS = [
    *(buy("r", f"o{n}", "t1", NOW_MS - d * DAY) for n, d in enumerate((30, 20, 10), start=1)),
    *(buy("r", f"o{n}", "c1", NOW_MS - d * DAY) for n, d in enumerate((29, 27, 25), start=4)),
    buy("r", "o7", "h1", NOW_MS - 2 * DAY),
    buy("r", "o8", "h1", H_MS + 50 * MIN),
    buy("a", "oa1", "t2", H_MS - HOUR),
    buy("a", "oa2", "x9", H_MS - 3 * HOUR),
    buy("a", "oa3", "l1", H_MS - 2 * HOUR),
    event("view", "a", "v7", NOW_MS - 40 * DAY, 1),
    buy("b", "ob1", "x9", H_MS + 10 * MIN),
    *(buy("c", f"oc{n}", "c1", H_MS + 45 * MIN) for n in range(3)),
]


def ndjson(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def post(client: TestClient, name: str, rows: list[dict[str, Any]]) -> None:
    r = client.post(f"/v0/events?name={name}&wait=true", content=ndjson(rows))
    assert r.status_code == 200 and r.json()["quarantined_rows"] == 0, r.text


def catalog_rows(items: list[tuple[str, str, str, bool]]) -> list[dict[str, Any]]:
    return [
        {
            "item_id": i,
            "title": t,
            "category": c,
            "price": 1.0,
            "available": a,
            "updated_at": "2024-01-01 00:00:00",
        }
        for i, t, c, a in items
    ]


def serve(
    project_dir: Path, settings: Settings, store: Store, catalog: bool
) -> Iterator[TestClient]:
    copy_project(REPO_ROOT, project_dir, ("sql", "migrations", "endpoints"), exist_ok=True)
    store.migrations().up()
    with api_client(settings, store) as client:
        if catalog:
            post(client, "items", catalog_rows(CATALOG))
        post(client, "events", EVENTS)
        yield client


@pytest.fixture(scope="module")
def shop(
    redpoll_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The fixture with its catalog, for the tests that only read."""
    project = tmp_path_factory.mktemp("for_user_v2")
    with module_store(redpoll_clickhouse_url, project) as (settings, store):
        yield from serve(project, settings, store, catalog=True)


@pytest.fixture
def own_shop(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    """The same on a database of the test's own, for tests that write."""
    yield from serve(project_dir, settings, store, catalog=True)


@pytest.fixture
def events_only(project_dir: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    """The fixture's events and no catalog at all."""
    yield from serve(project_dir, settings, store, catalog=False)


def rows(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("now", NOW)
    r = client.get("/v0/pipes/for_user.json", params=params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def ids(client: TestClient, **params: Any) -> list[str]:
    return [row["item_id"] for row in rows(client, **params)]


def decay(hours: float, half_life_hours: float = 72) -> float:
    return float(2 ** (-hours / half_life_hours))


# the trend as of NOW, and its maximum (x9)
TREND = {"x9": decay(3.5) + decay(0.5), "t2": decay(1.5), "h1": decay(48.5)}
MAX_TREND = TREND["x9"]


def test_now_is_exact_the_future_would_change_the_answer(shop: TestClient) -> None:
    # an unknown user, v1's ranking: 0.1 * trend / max trend, then the popular fallback
    # (t1 and c1: 3 purchases each in the window, then by item id)
    got = rows(shop, user_id="nobody", mode="explore")
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("x9", "trending"),
        ("t2", "trending"),
        ("h1", "trending"),
        ("c1", "popular"),
        ("t1", "popular"),
    ]
    expected = [0.1, 0.1 * TREND["t2"] / MAX_TREND, 0.1 * TREND["h1"] / MAX_TREND, 0, 0]
    assert [r["score"] for r in got] == pytest.approx(expected, abs=1e-6)
    # x9 is known from events only: recommended, with an empty title
    assert (got[0]["title"], got[0]["category"]) == ("", "")
    # 20 minutes later c's three purchases of c1 (H+45min) have happened: c1 leads. Read
    # as whole hourly buckets up to NOW (v1), they would have led at NOW already.
    later = rows(shop, user_id="nobody", mode="explore", now=iso(H_MS + 50 * MIN))
    assert later[0]["item_id"] == "c1" and later[0]["reason"] == "trending"
    c1 = 3 * decay(50 / 60)
    x9 = decay(3 + 50 / 60) + decay(50 / 60)
    assert later[1]["item_id"] == "x9"
    assert later[1]["score"] == pytest.approx(0.1 * x9 / c1, abs=1e-6)
    # the user's own events too: r's second h1 (H+50min) is not in the answer at NOW
    h1_now = rows(shop, user_id="r", mode="repeat")[2]
    h1_later = rows(shop, user_id="r", mode="repeat", now=iso(H_MS + 55 * MIN))[2]
    assert h1_now["item_id"] == h1_later["item_id"] == "h1"
    assert h1_now["score"] != h1_later["score"]


def repeat_scores(half_life_days: float = 365) -> dict[str, float]:
    """r's repeat score (no cycle boost): sum over purchases of 2^(-age / half-life)."""

    def f(*ages_days: float) -> float:
        return sum(2 ** (-a / half_life_days) for a in ages_days)

    return {"t1": f(30, 20, 10), "c1": f(29, 27, 25), "h1": f(2)}


def test_repeat_mode_ranks_own_purchases_by_decayed_frequency(shop: TestClient) -> None:
    rep = repeat_scores()
    got = rows(shop, user_id="r", mode="repeat")
    # then the rest by popularity: t2, a catalog item with no purchase in the window
    # (repeat mode reads no trend)
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("t1", "repeat"),
        ("c1", "repeat"),
        ("h1", "repeat"),
        ("t2", "cold_start"),
    ]
    assert [r["score"] for r in got] == pytest.approx(
        [1, rep["c1"] / rep["t1"], rep["h1"] / rep["t1"], 0], abs=1e-6
    )
    # a shorter half-life: the recent h1 counts more, but 3 purchases still lead
    rep30 = repeat_scores(30)
    got = rows(shop, user_id="r", mode="repeat", repeat_half_life_days=30, limit=3)
    assert [r["score"] for r in got] == pytest.approx(
        [1, rep30["c1"] / rep30["t1"], rep30["h1"] / rep30["t1"]], abs=1e-6
    )


def test_repurchase_cycle_boost(shop: TestClient) -> None:
    # t1 every 10 days, last 10 days ago: its cycle is due (elapsed / cycle = 1), boost
    # 1 + b; c1 every 2 days, last 25 days ago: 1 + b * exp(-ln(12.5)^2 / (2 * 0.5^2));
    # h1 was bought in one hour only: no cycle
    b, width = 2.0, 0.5
    rep = repeat_scores()
    boosted = {
        "t1": rep["t1"] * (1 + b),
        "c1": rep["c1"] * (1 + b * math.exp(-(math.log(12.5) ** 2) / (2 * width**2))),
        "h1": rep["h1"],
    }
    got = rows(shop, user_id="r", mode="repeat", cycle_boost=b, limit=3)
    top = boosted["t1"]
    assert [(r["item_id"], r["score"]) for r in got] == [
        ("t1", 1),
        ("c1", pytest.approx(boosted["c1"] / top, abs=1e-6)),
        ("h1", pytest.approx(boosted["h1"] / top, abs=1e-6)),
    ]
    # with 4 distinct purchases required, 3 make no cycle: no boost
    got = rows(shop, user_id="r", mode="repeat", cycle_boost=b, cycle_min_purchases=4, limit=3)
    assert [r["score"] for r in got] == pytest.approx(
        [1, rep["c1"] / rep["t1"], rep["h1"] / rep["t1"]], abs=1e-6
    )


def mixed_expected() -> dict[str, tuple[float, str]]:
    """r's mixed scores and reasons: 0.5 * repeat / max repeat + explore / 1.1, explore =
    trend / max trend * (0.1 + similarity / max similarity)."""
    rep = repeat_scores()
    # r's item weights: purchases * 2^(-age of the last one / 30 days)
    w = {"t1": 3 * 2 ** (-10 / 30), "c1": 3 * 2 ** (-25 / 30), "h1": 2 ** (-2 / 30)}
    # 5 catalog items: TEA in 2 (idf ln(6/3)), every other word in 1 (ln(6/2))
    tea, once = math.log(2) ** 2, math.log(3) ** 2
    sim = {
        "t1": (once + tea) * w["t1"],  # GREEN, TEA
        "t2": tea * w["t1"],  # BLACK (no item of r), TEA
        "c1": 2 * once * w["c1"],  # COFFEE, BEANS
        "h1": 2 * once * w["h1"],  # GARDEN, HOSE
        "x9": 0.0,
    }
    top_sim = max(sim.values())
    out = {}
    for item, s in sim.items():
        repeat_part = 0.5 * rep.get(item, 0) / rep["t1"]
        personal = s / top_sim
        explore = TREND.get(item, 0) / MAX_TREND * (0.1 + personal)
        if repeat_part > 0 and repeat_part >= explore / 1.1:
            reason = "repeat"
        elif explore > 0:
            reason = "similar_title" if personal > 0.1 else "trending"
        else:
            reason = "popular"
        out[item] = (repeat_part + explore / 1.1, reason)
    return out


def test_mixed_blends_repeat_and_exploration(shop: TestClient) -> None:
    expected = mixed_expected()
    order = sorted(expected, key=lambda i: -expected[i][0])
    got = rows(shop, user_id="r")  # mode=mixed, exclude_purchased=false by default
    assert [r["item_id"] for r in got] == order
    assert [(r["score"], r["reason"]) for r in got] == [
        (pytest.approx(expected[i][0], abs=1e-6), expected[i][1]) for i in order
    ]
    assert {r["reason"] for r in got} == {"repeat", "similar_title", "trending"}
    # exclude_purchased=true leaves the exploration part (as explore does) ...
    assert ids(shop, user_id="r", exclude_purchased="true") == ["t2", "x9"]
    # ... which is explore's default: v1's ranking without the purchases
    assert ids(shop, user_id="r", mode="explore") == ["t2", "x9"]
    assert ids(shop, user_id="r", mode="explore", exclude_purchased="false")[:3] == [
        "h1",
        "t2",
        "x9",
    ]
    # repeat_weight=0: the exploration part alone (t1, c1: no trend, popular)
    zero = rows(shop, user_id="r", repeat_weight=0)
    assert [(r["item_id"], r["reason"]) for r in zero][-2:] == [
        ("c1", "popular"),
        ("t1", "popular"),
    ]


def test_catalog_refines_unavailable_never_shown(shop: TestClient) -> None:
    # a bought l1, which the catalog marks unavailable: never in any answer
    for mode in ("mixed", "repeat", "explore"):
        for who in ("a", "r", "nobody"):
            assert "l1" not in ids(shop, user_id=who, mode=mode, limit=100), (mode, who)
    # a's view of v7 (40 days ago, no catalog row): no trend, no purchase in the window.
    # t1 and c1 (3 purchases each) by title similarity: t1 shares TEA with a's t2
    got = rows(shop, user_id="a", mode="explore")
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("h1", "trending"),
        ("t1", "popular"),
        ("c1", "popular"),
        ("v7", "cold_start"),
    ]
    # category filters use the catalog's: unknown items have none
    assert ids(shop, user_id="nobody", mode="explore", category="TEA") == ["t2", "t1"]


def test_works_from_events_alone(events_only: TestClient) -> None:
    # no catalog: l1 is an item like any other (bought at H-2h), titles are empty
    got = rows(events_only, user_id="nobody", mode="explore")
    assert [r["item_id"] for r in got] == ["x9", "t2", "l1", "h1", "c1", "t1"]
    assert {(r["title"], r["category"]) for r in got} == {("", "")}
    assert got[2]["score"] == pytest.approx(0.1 * decay(2.5) / MAX_TREND, abs=1e-6)
    mixed = rows(events_only, user_id="r")
    assert [r["item_id"] for r in mixed][:3] == ["t1", "c1", "h1"]  # no title similarity
    assert {r["reason"] for r in mixed[:3]} == {"repeat"}
    # the catalog arrives: it adds titles and removes what it marks unavailable
    post(events_only, "items", catalog_rows(CATALOG))
    got = rows(events_only, user_id="nobody", mode="explore")
    assert [r["item_id"] for r in got] == ["x9", "t2", "h1", "c1", "t1"]
    assert got[1]["title"] == "Black tea"


def test_no_signal_at_all_falls_back_to_popularity(shop: TestClient) -> None:
    # 8 days after NOW nothing is in the 168-hour trend: purchases in the 30 whole days
    # before that day (from NOW-22d): c1 3 (c's), h1 2, t1 2 (-20d, -10d), x9 2, t2 1;
    # equal counts by item id
    got = rows(shop, user_id="nobody", now=iso(NOW_MS + 8 * DAY))
    assert [(r["item_id"], r["reason"], r["score"]) for r in got] == [
        ("c1", "popular", 0),
        ("h1", "popular", 0),
        ("t1", "popular", 0),
        ("x9", "popular", 0),
        ("t2", "popular", 0),
    ]


def test_a_purchase_changes_the_next_answer(own_shop: TestClient) -> None:
    before = rows(own_shop, user_id="r", mode="repeat")
    assert [(r["item_id"], r["reason"]) for r in before][2:] == [
        ("h1", "repeat"),
        ("t2", "cold_start"),
    ]
    assert "t2" in ids(own_shop, user_id="r", mode="explore")
    post(own_shop, "events", [buy("r", "o9", "t2", NOW_MS - MIN)])
    after = rows(own_shop, user_id="r", mode="repeat")
    rep = repeat_scores()
    assert [(r["item_id"], r["reason"]) for r in after] == [
        ("t1", "repeat"),
        ("c1", "repeat"),
        ("t2", "repeat"),
        ("h1", "repeat"),
    ]
    assert after[2]["score"] == pytest.approx(2 ** (-1 / 1440 / 365) / rep["t1"], abs=1e-6)
    # explore leaves bought items out: t2 is gone at once
    assert "t2" not in ids(own_shop, user_id="r", mode="explore")


def test_repetition_control(own_shop: TestClient) -> None:
    n = iter(range(100))

    def shown(item: str, *ago_min: int) -> list[dict[str, Any]]:
        return [event("impression", "s", item, NOW_MS - m * MIN, next(n)) for m in ago_min]

    post(
        own_shop,
        "events",
        [
            *shown("x9", 180, 120, 60),  # 3 in 24 h, never clicked: left out
            *shown("t2", 180, 120, 60),  # 3, but clicked after the second one: kept
            event("click", "s", "t2", NOW_MS - 90 * MIN, next(n)),
            *shown("h1", 30 * 60, 120, 60),  # 2 in the last 24 h: kept
            *shown("c1", 180, 120, -5),  # the third is after NOW: kept at NOW
        ],
    )
    everything = {"x9", "t2", "h1", "c1", "t1"}
    assert set(ids(own_shop, user_id="s")) == everything - {"x9"}
    assert set(ids(own_shop, user_id="s", max_impressions=0)) == everything
    assert set(ids(own_shop, user_id="s", max_impressions=2)) == everything - {"x9", "h1", "c1"}
    # within the last 2 hours (after NOW-2h) x9 was shown once
    assert set(ids(own_shop, user_id="s", impression_hours=2)) == everything
    # 10 minutes later c1's third impression has happened
    later = iso(NOW_MS + 10 * MIN)
    assert set(ids(own_shop, user_id="s", now=later)) == everything - {"x9", "c1"}
    # the same in every mode and variant
    for params in ({"mode": "explore"}, {"mode": "repeat"}, {"variant": "b"}):
        assert "x9" not in ids(own_shop, user_id="s", limit=100, **params), params
        assert "x9" in ids(own_shop, user_id="s", limit=100, max_impressions=0, **params)


def test_variant_b_in_every_mode(shop: TestClient) -> None:
    for mode in ("mixed", "repeat", "explore"):
        got = rows(shop, user_id="r", variant="b", mode=mode, limit=100)
        assert got and {r["source"] for r in got} == {"for_user:b"}, mode
        bought = {"t1", "c1", "h1"}
        if mode == "explore":
            assert not bought & {r["item_id"] for r in got}
        else:
            assert bought <= {r["item_id"] for r in got}
    got = rows(shop, user_id="r", variant="b", mode="repeat", limit=3)
    assert [(r["item_id"], r["reason"]) for r in got] == [
        ("t1", "repeat"),
        ("c1", "repeat"),
        ("h1", "repeat"),
    ]
