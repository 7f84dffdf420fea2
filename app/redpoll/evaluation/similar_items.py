"""Offline evaluation of `similar_items` against `also_bought` (`redpoll train --evaluate`).

The protocol is the also_bought task of the replay (evaluation/replay.py): given an
invoice's first item, the rest of the invoice is relevant. Here both endpoints answer
from one frozen store, since the embedding is a batch model:

1. cut: train on the events before `cut` (default: the time of the event at 80% of the
   file), test on the invoices at or after it with at least two distinct items (every
   `sample_every`-th by a stable hash of the invoice number, as the replay samples);
2. a throwaway embedded store with the project's migrations gets the catalog and every
   event before the cut through `EventWriter` (so `basket_pairs` is what production would
   hold), views that neither endpoint nor the training reads are left out;
3. `redpoll train`'s job (`embeddings.train`) learns the vectors from that store;
4. per test invoice, `similar_items` and `also_bought` of its first item (in-process, as
   `GET /v0/pipes/<name>.json` runs them, limit k) and all-time popularity before the cut
   (the first item left out) are scored: HitRate@k, Recall@k (share of the rest of the
   basket found in the top k), NDCG@k, and how often the endpoint answered anything.

No answer sees a test invoice: nothing after the cut is ever ingested.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redpoll.clickhouse.client import Client
from redpoll.embeddings.factorize import DIMENSIONS
from redpoll.embeddings.training import StoreRunner, TrainResult, train
from redpoll.endpoints.executor import execute, prepare
from redpoll.endpoints.registry import Registry
from redpoll.evaluation.metrics import score_list
from redpoll.evaluation.replay import load_endpoints
from redpoll.evaluation.scratch import (
    drop_unread_views,
    event_writer,
    insert_events,
    insert_items,
    tables_read,
)
from redpoll.evaluation.timeline import iso, ms, stable_hash
from redpoll.store import Store

__all__ = (
    "BasketCase",
    "SimilarConfig",
    "SimilarResult",
    "basket_cases",
    "evaluate_similar",
    "format_table",
    "recall_at",
)

METHODS = ("similar_items", "also_bought", "popularity")


@dataclasses.dataclass
class SimilarConfig:
    dataset: Path
    project_dir: Path
    cut: dt.datetime | None = None  # default: the time of the event at 80% of the file
    k: int = 10
    sample_every: int = 1
    dims: int = DIMENSIONS
    max_lines: int | None = None  # first N lines of the file (tests, quick runs)
    work_dir: Path | None = None
    progress: Callable[[str], None] | None = None


@dataclasses.dataclass
class SimilarResult:
    k: int
    cut: str
    table: list[dict[str, Any]]
    model: dict[str, Any]
    counts: dict[str, int]
    timings: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def get(self, method: str) -> dict[str, Any]:
        return next(row for row in self.table if row["method"] == method)


@dataclasses.dataclass(frozen=True)
class BasketCase:
    """One test invoice: its first item is shown, the rest are what it should find."""

    order_id: str
    first: str
    rest: frozenset[str]


def evaluate_similar(config: SimilarConfig) -> SimilarResult:
    """Run the protocol of the module docstring and return its table."""
    from redpoll.datasets.online_retail import read_events, read_items

    say = config.progress or (lambda _m: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    events = read_events(config.dataset, limit=config.max_lines)
    items = read_items(config.dataset, limit=config.max_lines)
    cut_ms = _cut_ms(events, config.cut)
    train_events = [e for e in events if e["ts"] < cut_ms]
    cases = basket_cases([e for e in events if e["ts"] >= cut_ms], config.sample_every)
    popularity = collections.Counter(
        e["item_id"] for e in train_events if e["event_type"] == "purchase"
    )
    timings["read_s"] = round(time.perf_counter() - t0, 1)
    say(f"cut {iso(cut_ms)}: {len(train_events)} events to learn from, {len(cases)} test invoices")
    work = Path(tempfile.mkdtemp(prefix="redpoll-eval-similar-", dir=config.work_dir))
    try:
        store = Store.open_scratch(
            config.project_dir, work / "data", "redpoll_eval", "redpoll train --evaluate"
        )
        try:
            store.migrations().up()
            registry = load_endpoints(config.project_dir, store, ("similar_items", "also_bought"))
            _drop_unread_views(store, registry)
            t0 = time.perf_counter()
            _load(store, items, train_events)
            timings["ingest_s"] = round(time.perf_counter() - t0, 1)
            model = train(StoreRunner(store), config.dims, say=say)
            timings["train_s"] = model.seconds
            t0 = time.perf_counter()
            table, counts = _score(store, registry, cases, popularity, config.k)
            timings["query_s"] = round(time.perf_counter() - t0, 1)
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SimilarResult(config.k, iso(cut_ms), table, _model(model), counts, timings)


def format_table(result: SimilarResult) -> str:
    """The table as Markdown, one row per method."""
    k = result.k
    lines = [
        f"| method | cases | answered | HitRate@{k} | Recall@{k} | NDCG@{k} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result.table:
        lines.append(
            f"| {row['method']} | {row['n']} | {row['answered']:.1%} | {row['hit']:.4f} | "
            f"{row['recall']:.4f} | {row['ndcg']:.4f} |"
        )
    return "\n".join(lines)


def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    """Share of the relevant items found in the top k."""
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


# -- stages ------------------------------------------------------------------------------


def _cut_ms(events: Sequence[Mapping[str, Any]], cut: dt.datetime | None) -> int:
    if cut is not None:
        return ms(cut)
    if not events:
        raise ValueError("the data set has no events")
    return int(events[int(len(events) * 0.8)]["ts"])


def basket_cases(events: Sequence[Mapping[str, Any]], sample_every: int) -> list[BasketCase]:
    """Purchase invoices with at least two distinct items, in time order, sampled by the
    replay's stable hash of the invoice number."""
    baskets: dict[str, list[str]] = {}
    for e in events:
        if e["event_type"] != "purchase":
            continue
        basket = baskets.setdefault(e["order_id"], [])
        if e["item_id"] not in basket:
            basket.append(e["item_id"])
    return [
        BasketCase(order, basket[0], frozenset(basket[1:]))
        for order, basket in baskets.items()
        if len(basket) > 1 and (sample_every <= 1 or stable_hash(order) % sample_every == 0)
    ]


def _drop_unread_views(store: Store, registry: Registry) -> None:
    """Leave out the views that feed neither endpoint nor `events` (what the training
    reads): faster ingest, same answers (as the replay does, evaluation/replay.py)."""
    calls = [(name, {"item_id": "i", "limit": 10}) for name in ("similar_items", "also_bought")]
    drop_unread_views(store, {"events"} | tables_read(registry, calls))


def _load(store: Store, items: Sequence[Mapping[str, Any]], events: Sequence[Any]) -> None:
    insert_items(store, items)
    writer = event_writer(store, store.settings.project_dir)
    insert_events(writer, events, chunk=50_000)


def _score(
    store: Store,
    registry: Registry,
    cases: Sequence[BasketCase],
    popularity: collections.Counter[str],
    k: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    ranked_popular = [item for item, _ in popularity.most_common(k + 1)]
    sums: dict[str, dict[str, float]] = {m: collections.defaultdict(float) for m in METHODS}
    client = store.new_client(readonly=True)
    try:
        for case in cases:
            lists = {
                name: _call(client, registry, name, {"item_id": case.first, "limit": k})
                for name in ("similar_items", "also_bought")
            }
            lists["popularity"] = [i for i in ranked_popular if i != case.first][:k]
            for method, ranked in lists.items():
                s = score_list(ranked, case.rest, k)
                acc = sums[method]
                acc["n"] += 1
                acc["answered"] += 1 if ranked else 0
                acc["hit"] += s.hit
                acc["ndcg"] += s.ndcg
                acc["recall"] += recall_at(ranked, case.rest, k)
    finally:
        client.close()
    table = [
        {
            "method": m,
            "n": int(acc["n"]),
            **{key: acc[key] / (acc["n"] or 1) for key in ("answered", "hit", "recall", "ndcg")},
        }
        for m, acc in sums.items()
    ]
    return table, {"cases": len(cases)}


def _call(client: Client, registry: Registry, name: str, params: Mapping[str, Any]) -> list[str]:
    query = prepare(registry.snapshot.get(name), {k: str(v) for k, v in params.items()})
    data = json.loads(execute(client, query))["data"]
    return [row["item_id"] for row in data]


def _model(result: TrainResult) -> dict[str, Any]:
    return result.as_dict()
