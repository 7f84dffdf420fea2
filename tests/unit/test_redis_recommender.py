"""The Redis baseline of bench/bench_serving.py answers what its docstring says: its
also_bought counts equal a plain-Python count of orders per item pair (cap on the order
size included, a replayed request counted once, orders split over requests), and its
trending and for_user answers follow their definitions. Runs a real `redis-server`
(skipped, with the reason, when the binary or the `redis` package is missing)."""

from __future__ import annotations

import itertools
import math
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("redis", reason="the `redis` package is not installed (pip install redis)")
if shutil.which("redis-server") is None:
    pytest.skip(
        "redis-server not found: `apt-get install redis-server` to test the Redis baseline",
        allow_module_level=True,
    )

from litestar.testing import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from redis_recommender import TREND_WEIGHTS, create_app, redis_server

CAP = 4  # max items per order counted in pairs (the real one is 50)


def make_events(rng: random.Random) -> list[dict[str, Any]]:
    """Purchases of 40 orders over 9 items (some lines repeated, some orders over the
    cap), views and carts, and returns; all in the current hour."""
    items = [f"i{n}" for n in range(9)]
    now_ms = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    for order in range(40):
        user = f"u{order % 6}"
        basket = rng.sample(items, rng.choice([1, 2, 3, 3, 4, 4, 5, 6]))
        lines = basket + rng.sample(basket, min(2, len(basket)))  # repeated lines
        for item in lines:
            events.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "event_type": "purchase",
                    "order_id": f"o{order}",
                }
            )
        events.append({"user_id": user, "item_id": rng.choice(items), "event_type": "view"})
        events.append({"user_id": user, "item_id": rng.choice(items), "event_type": "cart"})
    events.append({"user_id": "u1", "item_id": "i3", "event_type": "return", "order_id": "C1"})
    for item in ("i0", "i1"):  # a user with one small order
        events.append(
            {"user_id": "solo", "item_id": item, "event_type": "purchase", "order_id": "o-solo"}
        )
    rng.shuffle(events)  # an order's lines land in several requests
    for n, event in enumerate(events):
        event["event_id"] = f"e{n}"
        event["ts"] = now_ms
    return events


def expected_pairs(events: list[dict[str, Any]]) -> tuple[dict[str, Counter[str]], Counter[str]]:
    orders: dict[str, set[str]] = {}
    for e in events:
        if e["event_type"] == "purchase" and e.get("order_id"):
            orders.setdefault(e["order_id"], set()).add(e["item_id"])
    pairs: dict[str, Counter[str]] = {}
    popular: Counter[str] = Counter()
    for basket in orders.values():
        popular.update(basket)
        if len(basket) <= CAP:
            for a, b in itertools.permutations(basket, 2):
                pairs.setdefault(a, Counter())[b] += 1
    return pairs, popular


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as (_process, port):
        yield port


@pytest.fixture(scope="module")
def loaded(redis_port: int) -> Iterator[tuple[TestClient[Any], list[dict[str, Any]]]]:
    rng = random.Random(18)
    events = make_events(rng)
    encode = msgspec.json.encode
    with TestClient(app=create_app(redis_port, max_basket_items=CAP)) as client:
        start = 0
        while start < len(events):
            size = rng.randint(1, 12)
            chunk = events[start : start + size]
            body = b"\n".join(encode(e) for e in chunk)
            assert client.post("/events", content=body).status_code == 202
            start += size
        # a replayed request changes nothing
        again = client.post("/events", content=b"\n".join(encode(e) for e in events[:20]))
        assert again.json()["stored_rows"] == 0
        yield client, events


def test_also_bought_counts_orders_per_pair_under_the_cap(
    loaded: tuple[TestClient[Any], list[dict[str, Any]]],
) -> None:
    client, events = loaded
    pairs, popular = expected_pairs(events)
    for item in sorted(popular):
        rows = client.get("/also_bought", params={"item_id": item, "limit": 100}).json()["data"]
        co = {r["item_id"]: r["score"] for r in rows if r["score"] >= 1}
        assert co == dict(pairs.get(item, Counter())), item
        fill = [r for r in rows if r["score"] < 1]
        candidates = sorted((n for x, n in popular.items() if x != item and x not in co))[::-1]
        assert [popular[r["item_id"]] for r in fill] == candidates[: len(fill)], item
        assert len(co) + len(fill) == min(100, len(popular) - 1), item
        assert all(math.isclose(r["score"], round(1e-9 * popular[r["item_id"]], 6)) for r in fill)
    assert client.get("/also_bought", params={"item_id": "i1", "limit": 2}).json()["rows"] == 2
    assert client.get("/also_bought").status_code == 400


def test_trending_sums_type_weights_of_the_hour(
    loaded: tuple[TestClient[Any], list[dict[str, Any]]],
) -> None:
    client, events = loaded
    score: dict[str, float] = {}
    for e in events:
        score[e["item_id"]] = score.get(e["item_id"], 0.0) + TREND_WEIGHTS[e["event_type"]]
    now = time.time()
    decay = math.exp2(-(now - now // 3600 * 3600) / (3600 * 24))
    rows = client.get("/trending", params={"hours": 2, "limit": 100}).json()["data"]
    got = {r["item_id"]: r["score"] for r in rows}
    assert got.keys() == {i for i, s in score.items() if s > 0}
    for item, value in got.items():
        assert math.isclose(value, score[item] * decay, rel_tol=1e-3), item


def test_for_user_sums_the_neighbours_of_the_users_items(
    loaded: tuple[TestClient[Any], list[dict[str, Any]]],
) -> None:
    client, events = loaded
    pairs, _popular = expected_pairs(events)
    want = pairs["i0"] + pairs["i1"]  # both bought once: weight 1 each
    del want["i0"], want["i1"]  # bought: left out
    rows = client.get("/for_user", params={"user_id": "solo", "limit": 100}).json()["data"]
    assert {r["item_id"]: r["score"] for r in rows if r["score"] >= 1} == dict(want)
    assert not {r["item_id"] for r in rows} & {"i0", "i1"}
    cold = client.get("/for_user", params={"user_id": "nobody", "limit": 3}).json()["data"]
    assert len(cold) == 3  # trending fills
