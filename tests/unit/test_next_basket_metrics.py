"""Next-basket evaluation without a store: the metrics against hand-computed values, each
baseline on a toy data set with its exact ranking, and the protocol (basket sizes,
minimum baskets, the cut that keeps the future out). The run through a real store is in
tests/test_next_basket.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from redpoll.evaluation.basket_baselines import (
    Basket,
    GTopFreq,
    PTopFreq,
    TifuKnn,
    TifuParams,
    group_bounds,
)
from redpoll.evaluation.next_basket import (
    NextBasketConfig,
    Protocol,
    baskets_of,
    ndcg_at_k,
    recall_at_k,
    run_next_basket,
    score_basket,
    select_cases,
)

L2, L3, L4 = 1.0, 1 / math.log2(3), 0.5  # gains at ranks 1, 2, 3


# -- metrics ------------------------------------------------------------------------------


def test_recall_and_ndcg_by_hand() -> None:
    ranked = ["a", "b", "c", "d"]
    truth = {"b", "d", "x"}
    # top 3 = a, b, c: one of three basket items, at rank 2
    assert recall_at_k(ranked, truth, 3) == pytest.approx(1 / 3)
    assert ndcg_at_k(ranked, truth, 3) == pytest.approx(L3 / (L2 + L3 + L4))
    # top 4 finds d at rank 4 too; the ideal still has 3 hits
    assert recall_at_k(ranked, truth, 4) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranked, truth, 4) == pytest.approx((L3 + 1 / math.log2(5)) / (L2 + L3 + L4))
    # a list shorter than k; the ideal is capped at min(|truth|, k) hits
    assert recall_at_k(["x"], {"x", "y"}, 10) == pytest.approx(0.5)
    assert ndcg_at_k(["x"], {"x", "y"}, 10) == pytest.approx(1 / (L2 + L3))
    assert ndcg_at_k(["y", "x"], {"x", "y"}, 1) == pytest.approx(1.0)
    # a repeated item counts once, and does not push the next one out of the top k
    assert recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        recall_at_k(["a"], set(), 10)


def test_repeat_and_explore_parts_by_hand() -> None:
    # the user bought b and c before; the basket is b (repeat), d and x (explore)
    s = score_basket(["a", "b", "c", "d"], ["b", "d", "x"], known={"b", "c"}, k=3)
    assert s.recall == pytest.approx(1 / 3)
    assert s.ndcg == pytest.approx(L3 / (L2 + L3 + L4))
    assert s.hit == 1.0
    assert s.recall_repeat == pytest.approx(1.0)  # b found
    assert s.ndcg_repeat == pytest.approx(L3 / L2)  # at rank 2 instead of 1
    assert s.recall_explore == 0.0
    assert s.ndcg_explore == 0.0
    assert s.repeat_ratio == pytest.approx(2 / 3)  # b and c of 3 slots
    # explore only: no repeat part
    s = score_basket(["d", "q"], ["d", "x"], known={"b"}, k=2)
    assert s.recall_repeat is None and s.ndcg_repeat is None
    assert s.recall_explore == pytest.approx(0.5)
    assert s.ndcg_explore == pytest.approx(1 / (L2 + L3))
    assert s.repeat_ratio == 0.0
    # repeat only: no explore part
    s = score_basket(["b"], ["b"], known={"b"}, k=10)
    assert s.recall_explore is None
    assert s.repeat_ratio == pytest.approx(0.1)  # of k slots, not of the list


# -- baselines ----------------------------------------------------------------------------


def _b(user: str, order: str, ts: int, *items: str) -> Basket:
    return Basket(user, order, ts, items)


def test_g_topfreq_counts_baskets_of_everyone() -> None:
    g = GTopFreq()
    for b in (
        _b("u1", "o1", 1, "a", "b", "c"),
        _b("u2", "o2", 2, "b", "c", "d"),
        _b("", "o3", 3, "c", "e"),
    ):
        g.observe(b)
    # c in 3 baskets, b in 2, then a, d, e in 1 (equal counts by id); guests count
    assert g.ranking() == ["c", "b", "a", "d", "e"]
    assert g.recommend("anyone", 2) == ["c", "b"]
    g.observe(_b("u3", "o4", 4, "e", "d"))
    assert g.ranking() == ["c", "b", "d", "e", "a"]


def test_p_topfreq_ranks_own_items_then_fills_with_global() -> None:
    p = PTopFreq()
    for b in (
        _b("u1", "o1", 1, "a", "b", "c"),
        _b("u1", "o2", 2, "a", "d", "e"),
        _b("u2", "o3", 3, "z", "y", "e"),
        _b("u2", "o4", 4, "z", "y"),
        _b("u1", "o5", 5, "g", "b", "f"),
    ):
        p.observe(b)
    # u1: a and b twice (b more recent first); once: f, g (o5), d, e (o2), c (o1);
    # then G-TopFreq without u1's items: e is u1's, y and z (2 each, by id)
    assert p.recommend("u1", 10) == ["b", "a", "f", "g", "d", "e", "c", "y", "z"]
    assert p.recommend("u1", 3) == ["b", "a", "f"]
    # a user without baskets: G-TopFreq (a, b, e, y, z twice; by id)
    assert p.recommend("new", 4) == ["a", "b", "e", "y"]


def test_group_bounds() -> None:
    assert group_bounds(2, 7) == [(0, 1), (1, 2)]  # fewer baskets than groups
    assert group_bounds(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert group_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]  # the larger groups last
    assert group_bounds(8, 3) == [(0, 2), (2, 5), (5, 8)]
    assert group_bounds(0, 3) == []


def test_tifuknn_user_vector_by_hand() -> None:
    t = TifuKnn(TifuParams(within_decay=0.5, group_decay=0.5, groups=2))
    for b in (_b("u", "o1", 1, "p"), _b("u", "o2", 2, "p", "r"), _b("u", "o3", 3, "r")):
        t.observe(b)
    # basket weights 0.25, 0.5, 1; groups [o1], [o2, o3]: g1 = 0.25 p,
    # g2 = (0.5 (p + r) + 1 r) / 2 = 0.25 p + 0.75 r; u = (0.5 g1 + g2) / 2
    vec = t.user_vector(t.baskets[t.users["u"]])
    got = {t.fill.ids[c]: v for c, v in enumerate(vec)}
    assert got == pytest.approx({"p": (0.125 + 0.25) / 2, "r": 0.75 / 2})


def test_tifuknn_blends_the_user_with_the_nearest_neighbours() -> None:
    t = TifuKnn(TifuParams(neighbours=1, within_decay=0.5, group_decay=0.5, groups=2, alpha=0.5))
    for b in (
        _b("A", "o1", 1, "x", "y"),
        _b("B", "o2", 2, "y", "w"),
        _b("C", "o3", 3, "q"),
        _b("", "o4", 4, "y", "q"),  # a guest: global counts only
        _b("A", "o5", 5, "y", "z"),
    ):
        t.observe(b)
    # A: u = (0.5 * 0.5 {x, y} + 1 {y, z}) / 2 = x 0.125, y 0.625, z 0.5; nearest
    # neighbour by cosine: B = {y: 1, w: 1} (C shares nothing); score = (u + B) / 2 =
    # y 0.8125, w 0.5, z 0.25, x 0.0625, then the zeros in G-TopFreq order (q: 2 baskets)
    assert t.recommend("A", 5) == ["y", "w", "z", "x", "q"]
    scores = t.scores("A")
    assert scores is not None
    assert scores[t.fill.index["y"]] == pytest.approx(0.8125)
    # alpha = 1: the user alone, the rest by G-TopFreq (y 3, q 2, then by id)
    alone = TifuKnn(
        TifuParams(neighbours=1, within_decay=0.5, group_decay=0.5, groups=2, alpha=1.0)
    )
    for b in (
        _b("A", "o1", 1, "x", "y"),
        _b("B", "o2", 2, "y", "w"),
        _b("C", "o3", 3, "q"),
        _b("", "o4", 4, "y", "q"),
        _b("A", "o5", 5, "y", "z"),
    ):
        alone.observe(b)
    assert alone.recommend("A", 5) == ["y", "z", "x", "q", "w"]
    # no neighbour with a positive similarity: the user alone
    assert t.recommend("C", 2) == ["q", "y"]
    # an unknown user: G-TopFreq
    assert t.recommend("nobody", 3) == ["y", "q", "w"]


def test_tifuknn_defaults_are_the_papers_tafeng_setting() -> None:
    p = TifuParams()
    assert (p.neighbours, p.groups, p.within_decay, p.group_decay, p.alpha) == (
        300,
        7,
        0.9,
        0.7,
        0.7,
    )
    with pytest.raises(ValueError):
        TifuParams(alpha=1.5)


# -- protocol -----------------------------------------------------------------------------


def _events(
    rows: list[tuple[str, str, int, list[str]]], event_type: str = "purchase"
) -> list[dict[str, Any]]:
    """(user, order, minute, items) -> event dicts as the Online Retail reader makes."""
    out = []
    for user, order, minute, items in rows:
        for n, item in enumerate(items):
            out.append(
                {
                    "event_id": f"{order}:{n}",
                    "ts": 1_293_840_000_000 + minute * 60_000,  # 2011-01-01 + minutes
                    "user_id": user,
                    "order_id": order,
                    "item_id": item,
                    "event_type": event_type,
                    "quantity": 1,
                    "price": 1.0,
                }
            )
    return out


def _items(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def test_baskets_are_distinct_purchased_items_per_order() -> None:
    events = _events([("u", "o1", 5, ["a", "b", "a"]), ("u", "o2", 1, ["c"])])
    events += _events([("u", "c9", 3, ["a"])], event_type="return")
    events.append({**events[0], "order_id": "o1", "item_id": "d", "ts": events[0]["ts"] - 60_000})
    baskets = baskets_of(events)
    # sorted by time; o1 takes its earliest line's time; returns are no basket
    assert [(b.order_id, b.items) for b in baskets] == [("o2", ("c",)), ("o1", ("a", "b", "d"))]
    assert baskets[1].ts == events[0]["ts"] - 60_000


def test_protocol_filters_basket_size_and_number_of_baskets() -> None:
    rows = [
        # u1: three kept baskets (3 and 50 items are in range): tested
        ("u1", "a1", 1, _items(3, "A")),
        ("u1", "a2", 2, _items(50, "B")),
        ("u1", "a3", 3, _items(4, "C")),
        # u2: 2 and 51 items do not count: only two kept baskets, not tested
        ("u2", "b1", 1, _items(3, "A")),
        ("u2", "b2", 2, _items(2, "B")),
        ("u2", "b3", 3, _items(51, "C")),
        ("u2", "b4", 4, _items(3, "D")),
        # u3: the last kept basket is the test basket; the small order after it is future
        ("u3", "c1", 1, _items(3, "A")),
        ("u3", "c2", 2, ["x", "y"]),
        ("u3", "c3", 3, _items(3, "B")),
        ("u3", "c4", 4, ["A00", "Q1", "Q2"]),
        ("u3", "c5", 5, ["Q3"]),
        # u4: three kept baskets, two at the same time: only one is strictly before
        ("u4", "d1", 1, _items(3, "A")),
        ("u4", "d2", 2, _items(3, "B")),
        ("u4", "d3", 2, _items(3, "C")),
        # guests are never tested
        ("", "g1", 1, _items(3, "A")),
        ("", "g2", 2, _items(3, "A")),
        ("", "g3", 3, _items(3, "A")),
    ]
    cases = select_cases(baskets_of(_events(rows)))
    assert [(c.user_id, c.basket.order_id) for c in cases] == [("u1", "a3"), ("u3", "c4")]
    u3 = cases[1]
    # history = every earlier order of any size (c2's 2 items too), nothing after
    assert u3.known == frozenset([*_items(3, "A"), "x", "y", *_items(3, "B")])
    assert u3.orders_before == 3
    # a looser protocol tests u2 (2-item baskets count) but still not u4
    loose = select_cases(baskets_of(_events(rows)), Protocol(min_items=2, max_items=60))
    assert {c.user_id for c in loose} == {"u1", "u2", "u3"}


def test_baselines_see_nothing_at_or_after_the_cut(tmp_path: Path) -> None:
    rows = [
        ("u1", "a1", 10, ["p", "q", "r"]),
        ("u1", "a2", 20, ["p", "q", "s"]),
        ("u1", "a3", 30, ["p", "q", "t", "f"]),  # test basket: p, q repeat; t, f explore
        # other users at the cut and after it buy f over and over
        ("u2", "b1", 30, ["f", "g", "h"]),
        ("u2", "b2", 40, ["f", "g", "h"]),
        ("u3", "c1", 50, ["f", "g", "h"]),
        ("u3", "c2", 60, ["f", "g", "h"]),
        ("u3", "c3", 70, ["f", "g", "h"]),
        # before the cut, a guest buys t
        ("", "g1", 25, ["t", "x", "y"]),
    ]
    config = NextBasketConfig(project_dir=tmp_path, k=3, endpoint=False)
    result = run_next_basket(_events(rows), [], config)
    assert result.counts["users_tested"] == 2  # u1 (cut 30) and u3 (cut 70)
    g = result.get("G-TopFreq")
    # for u1, G-TopFreq knows a1, a2 and g1 only: p, q (2), then r (by id) - f is not
    # seen; for u3 (test basket f, g, h) it knows f, g, h from u2's baskets (and c1, c2)
    assert g["users"] == 2 and g["users_repeat"] == 2 and g["users_explore"] == 1
    assert g["recall_explore"] == 0.0  # u1's t and f
    assert g["recall_repeat"] == pytest.approx((1.0 + 1.0) / 2)
    p = result.get("P-TopFreq")
    # u1: p, q (twice), then r or s (once; s more recent): p q s -> repeat items found
    assert p["recall"] == pytest.approx((2 / 4 + 1.0) / 2)
    assert p["repeat_ratio"] == pytest.approx(1.0)
    assert result.counts["repeat_item_share"] == pytest.approx(5 / 7, abs=1e-4)
