"""`views_not_feeding`: which views (and tables) a set of queries does not need."""

from __future__ import annotations

from redpoll.clickhouse.views import MaterializedView, views_not_feeding


def mv(name: str, target: str | None, *reads: str) -> MaterializedView:
    return MaterializedView(name, target, frozenset(reads))


GRAPH = [
    mv("events_mv", "events", "landing", "event_ids"),
    mv("event_ids_mv", "event_ids", "events"),
    mv("pairs_mv", "pairs", "landing", "event_ids", "pair_history"),
    mv("pair_history_mv", "pair_history", "events"),
    mv("trending_mv", "trending", "events"),
    mv("daily_mv", "daily", "trending"),
]


def test_a_chain_is_kept_through_the_tables_its_views_read() -> None:
    unread, orphans = views_not_feeding(GRAPH, {"daily"})
    # daily <- trending <- events <- (landing, event_ids <- events)
    assert unread == ["pairs_mv", "pair_history_mv"]
    assert orphans == ["pair_history", "pairs"]


def test_a_table_read_by_a_kept_view_keeps_its_writer() -> None:
    unread, orphans = views_not_feeding(GRAPH, {"pairs"})
    assert unread == ["trending_mv", "daily_mv"]
    assert orphans == ["daily", "trending"]


def test_views_without_a_target_are_always_kept() -> None:
    graph = [*GRAPH, mv("inner_mv", None, "pair_history")]
    unread, orphans = views_not_feeding(graph, {"trending"})
    assert unread == ["pairs_mv", "daily_mv"]
    assert orphans == ["daily", "pairs"]


def test_nothing_needed_drops_everything() -> None:
    unread, orphans = views_not_feeding(GRAPH, set())
    assert unread == [v.name for v in GRAPH]
    assert orphans == sorted(v.target for v in GRAPH if v.target)
