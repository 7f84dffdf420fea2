"""Replay a purchase data set in time order and score recommendations made before each
purchase (`redpoll evaluate`).

How it avoids seeing the future: events are grouped into fixed time windows (1 hour by
default). For each window, first every invoice of the window is answered from the store
as it was at the window's start (endpoints with `now` = the invoice time, baselines from
their state), then the whole window is ingested through `EventWriter`, the same writer
the HTTP and Kafka paths use, so every materialized view (co_purchase, trending,
user_history, user_item_stats) is updated exactly as in production. A purchase is never
in the store when it is predicted.

Endpoints are called in-process through the code the HTTP layer runs
(`redpoll.endpoints.registry.Registry` + `executor.prepare`/`execute`) on readonly
clients, one per worker thread; only the HTTP framing is skipped.
Every client comes from the `Store` (`Store.open_scratch`): this module opens none itself.

The store is a throwaway embedded chDB directory (never the project's own store) with
the project's migrations applied. `trending` has a 90-day TTL relative to the wall
clock, which would delete every 2010-2011 row: the harness removes the TTL on its own
copy (`ALTER TABLE trending REMOVE TTL`) so history behaves as if it were live.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from redpoll.clickhouse.client import Client
from redpoll.clickhouse.views import materialized_views, views_not_feeding
from redpoll.endpoints.compiler import render, validate_select
from redpoll.endpoints.executor import execute, prepare
from redpoll.endpoints.loader import catalog_from_client
from redpoll.endpoints.registry import Registry
from redpoll.evaluation.baselines import Baselines
from redpoll.evaluation.metrics import Accumulator, score_list
from redpoll.ingest.writer import EventWriter
from redpoll.store import Store

__all__ = ("EvalConfig", "EvalResult", "evaluate")

log = logging.getLogger("redpoll.evaluation")

BASELINES = ("popularity_all", "popularity_30d", "cooc_monthly")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass
class EvalConfig:
    dataset: Path
    project_dir: Path
    k: int = 10
    window_hours: float = 1.0
    workers: int = 2
    max_lines: int | None = None  # first N lines of the file (tests, quick runs)
    until: dt.datetime | None = None  # stop before this time
    start: dt.datetime | None = None  # ingest (warm up) without scoring before this time
    sample_every: int = 1  # score every n-th invoice only (quick runs)
    for_user_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    also_bought_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    all_views: bool = False  # keep views no evaluated query reads (slower, same answers)
    work_dir: Path | None = None  # default: a temporary directory, removed afterwards
    progress: Callable[[str], None] | None = None


@dataclasses.dataclass
class EvalResult:
    k: int
    table: list[dict[str, Any]]
    series: list[dict[str, Any]]
    counts: dict[str, Any]
    timings: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def get(self, task: str, method: str) -> dict[str, Any]:
        for row in self.table:
            if row["task"] == task and row["method"] == method:
                return row
        raise KeyError((task, method))


@dataclasses.dataclass
class _Invoice:
    order_id: str
    user_id: str
    ts: int
    items: list[str]  # distinct, in line order


def _iso(ts_ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=ts_ms)).strftime("%Y-%m-%d %H:%M:%SZ")


def _ms(when: dt.datetime) -> int:
    return int((when.replace(tzinfo=dt.UTC) - _EPOCH).total_seconds() * 1000)


def _stable_hash(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)


def _month(ts_ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=ts_ms)).strftime("%Y-%m")


def _windows(events: list[dict[str, Any]], width_ms: int) -> Iterator[list[dict[str, Any]]]:
    current: list[dict[str, Any]] = []
    key = None
    for event in events:
        k = event["ts"] // width_ms
        if key is not None and k != key and current:
            yield current
            current = []
        key = k
        current.append(event)
    if current:
        yield current


def _merge_warmup(windows: list[list[dict[str, Any]]], start_ms: int) -> list[list[dict[str, Any]]]:
    """Windows before `start_ms` are only ingested: send them in big batches (faster)."""
    out: list[list[dict[str, Any]]] = []
    buffer: list[dict[str, Any]] = []
    for window in windows:
        if window[0]["ts"] < start_ms:
            buffer.extend(window)
            if len(buffer) >= 50_000:
                out.append(buffer)
                buffer = []
            continue
        if buffer:
            out.append(buffer)
            buffer = []
        out.append(window)
    if buffer:
        out.append(buffer)
    return out


def _invoices(window: list[dict[str, Any]]) -> list[_Invoice]:
    by_order: dict[str, _Invoice] = {}
    for e in window:
        if e["event_type"] != "purchase":
            continue
        inv = by_order.get(e["order_id"])
        if inv is None:
            inv = by_order[e["order_id"]] = _Invoice(e["order_id"], e["user_id"], e["ts"], [])
        if e["item_id"] not in inv.items:
            inv.items.append(e["item_id"])
    return list(by_order.values())


class _EndpointCaller:
    """Runs endpoints in-process exactly as `GET /v0/pipes/<name>.json` does."""

    def __init__(self, new_client: Callable[[], Client], registry: Registry, workers: int) -> None:
        self.new_client = new_client
        self.registry = registry
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, "eval-query")

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.new_client()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def call(self, name: str, params: Mapping[str, Any]) -> list[str]:
        endpoint = self.registry.snapshot.get(name)
        query = prepare(endpoint, params, fmt="ndjson")
        body = execute(self._client(), query)
        return [json.loads(line)["item_id"] for line in body.splitlines() if line]

    def close(self) -> None:
        self.pool.shutdown()
        for client in self._clients:
            client.close()


def evaluate(config: EvalConfig) -> EvalResult:
    say = config.progress or (lambda _m: None)
    from redpoll.datasets.online_retail import read_events, read_items

    started = time.perf_counter()
    events = read_events(config.dataset, limit=config.max_lines)
    if config.until is not None:
        stop = _ms(config.until)
        events = [e for e in events if e["ts"] < stop]
    items = read_items(config.dataset, limit=config.max_lines)
    say(f"read {len(events)} events, {len(items)} items ({time.perf_counter() - started:.1f} s)")

    work = Path(tempfile.mkdtemp(prefix="redpoll-eval-", dir=config.work_dir))
    try:
        return _run(config, events, items, work, say, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _setup_store(config: EvalConfig, work: Path, items: list[dict[str, Any]]) -> Store:
    store = Store.open_scratch(
        config.project_dir, work / "data", "redpoll_eval", "redpoll evaluate"
    )
    store.migrations().up()
    admin, target = store.admin, store.target
    # the data set is years old: keep its history (see the module docstring)
    admin.command(f"ALTER TABLE {target.database}.trending REMOVE TTL")
    columns = ["item_id", "title", "category", "brand", "price", "available", "updated_at"]
    rows = [
        [
            i["item_id"],
            i["title"],
            i["category"],
            i["brand"],
            i["price"],
            i["available"],
            _EPOCH + dt.timedelta(milliseconds=i["updated_at"]),
        ]
        for i in items
    ]
    admin.insert(f"{target.database}.items", rows, column_names=columns)
    return store


def _run(
    config: EvalConfig,
    events: list[dict[str, Any]],
    items: list[dict[str, Any]],
    work: Path,
    say: Callable[[str], None],
    started: float,
) -> EvalResult:
    k = config.k
    store = _setup_store(config, work, items)
    target, admin = store.target, store.admin
    registry = Registry(
        config.project_dir / "endpoints", lambda: catalog_from_client(admin, target.database)
    )
    snap = registry.reload()
    for name in ("for_user", "also_bought"):
        if name not in snap.endpoints:
            errors = "; ".join(str(e) for e in snap.errors)
            raise RuntimeError(f"endpoint {name!r} not loaded: {errors or 'file missing'}")
    views_left_out: list[str] = []
    tables_left_out: list[str] = []
    if not config.all_views:
        views_left_out, tables_left_out = _drop_unread_views(
            admin, target.database, registry, config
        )
        say(f"views no evaluated query reads, left out: {', '.join(views_left_out) or 'none'}")
    writer = EventWriter(admin, target.database, views=config.project_dir)
    caller = _EndpointCaller(lambda: store.new_client(readonly=True), registry, config.workers)
    all_ids = [i["item_id"] for i in items] + [e["item_id"] for e in events]
    base = Baselines(dict.fromkeys(all_ids))
    acc = Accumulator()
    counts: collections.Counter[str] = collections.Counter()
    t_query = t_ingest = t_base = 0.0
    width_ms = int(config.window_hours * 3_600_000)
    fu_params = dict(config.for_user_params)
    ab_params = dict(config.also_bought_params)
    start_ms = _ms(config.start) if config.start else 0
    windows = _merge_warmup(list(_windows(events, width_ms)), start_ms)
    say(f"{len(windows)} windows of {config.window_hours:g} h")
    last_report = time.perf_counter()
    for n_window, window in enumerate(windows):
        w_start = window[0]["ts"] // width_ms * width_ms
        month = _month(w_start)
        t0 = time.perf_counter()
        base.start_window(w_start, month)
        invoices = _invoices(window)
        if w_start < start_ms:
            invoices = []
        elif config.sample_every > 1:
            every = config.sample_every
            invoices = [i for i in invoices if _stable_hash(i.order_id) % every == 0]

        # 1. ask the endpoints, before anything of this window is stored
        jobs: list[tuple[str, _Invoice, concurrent.futures.Future[list[str]]]] = []
        t1 = time.perf_counter()
        for inv in invoices:
            now = _iso(inv.ts)
            if inv.user_id:
                # One call serves both lists: the ranking with exclude_purchased=false;
                # the new-item list is that ranking without the user's purchases, which
                # is what exclude_purchased=true returns (exclusion only filters, the
                # scores do not depend on it; max_per_category is 0 here). The store
                # holds exactly the purchases the baselines know (`known`).
                known = base.user_known_item_ids(inv.user_id)
                limit = min(100, k + len(known))
                params = _for_user_params(fu_params, inv.user_id, limit, now, exclude=False)
                jobs.append(("user", inv, caller.pool.submit(caller.call, "for_user", params)))
            if len(inv.items) > 1:
                params = {**ab_params, "item_id": inv.items[0], "limit": k, "now": now}
                jobs.append(("item", inv, caller.pool.submit(caller.call, "also_bought", params)))
        answers = [(mode, inv, fut.result()) for mode, inv, fut in jobs]
        t_query += time.perf_counter() - t1

        # 2. score endpoints and baselines against the true baskets
        t2 = time.perf_counter()
        for mode, inv, ranked in answers:
            if mode == "item":
                relevant = set(inv.items[1:])
                acc.add("also_bought", "endpoint", month, score_list(ranked, relevant, k))
                for method in BASELINES:
                    rec = base.also_bought(method, inv.items[0], k)
                    acc.add("also_bought", method, month, score_list(rec, relevant, k))
                counts["also_bought_queries"] += 1
                continue
            # every purchase before this window, scored or not (what the store holds):
            # "new to the user" is relative to all of them
            known = base.user_known_item_ids(inv.user_id)
            fresh = [i for i in ranked if i not in known][:k]
            if len(fresh) < k and len(ranked) >= min(100, k + len(known)):
                params = _for_user_params(fu_params, inv.user_id, k, _iso(inv.ts), exclude=True)
                fresh = caller.call("for_user", params)
                counts["for_user_second_calls"] += 1
            for task, excl, rec in (
                ("for_user_all", False, ranked[:k]),
                ("for_user_new", True, fresh),
            ):
                relevant = {i for i in inv.items if not excl or i not in known}
                if not relevant:
                    continue
                acc.add(task, "endpoint", month, score_list(rec, relevant, k))
                for method in BASELINES:
                    base_rec = base.for_user(method, inv.user_id, k, exclude_purchased=excl)
                    acc.add(task, method, month, score_list(base_rec, relevant, k))
                counts[f"{task}_queries"] += 1
        t_base += time.perf_counter() - t2

        # 3. ingest the window through the real writer
        t3 = time.perf_counter()
        _ingest(writer, window)
        purchases = [
            (e["user_id"], e["order_id"], e["item_id"])
            for e in window
            if e["event_type"] == "purchase"
        ]
        base.observe(w_start, purchases)
        t_ingest += time.perf_counter() - t3
        counts["events"] += len(window)
        counts["invoices"] += len(invoices)
        del t0
        if time.perf_counter() - last_report > 15:
            last_report = time.perf_counter()
            say(
                f"  {month} window {n_window + 1}/{len(windows)}: "
                f"{counts['events']} events, query {t_query:.0f} s, ingest {t_ingest:.0f} s"
            )
    caller.close()
    store.close()
    timings = {
        "total_s": round(time.perf_counter() - started, 1),
        "query_s": round(t_query, 1),
        "ingest_and_learn_s": round(t_ingest, 1),
        "scoring_s": round(t_base, 1),
    }
    counts_out: dict[str, Any] = {
        **counts,
        "views_left_out": views_left_out,
        "tables_left_out": tables_left_out,
    }
    return EvalResult(k, acc.table(), acc.series(), counts_out, timings)


def _for_user_params(
    extra: Mapping[str, Any], user_id: str, limit: int, now: str, exclude: bool
) -> dict[str, Any]:
    """One `for_user` request of the harness: the run's `-f` parameters plus these."""
    return {
        **extra,
        "user_id": user_id,
        "limit": limit,
        "now": now,
        "exclude_purchased": "true" if exclude else "false",
    }


def _drop_unread_views(
    admin: Client, database: str, registry: Registry, config: EvalConfig
) -> tuple[list[str], list[str]]:
    """Drop, from the throwaway store, the views whose output no evaluated query reads,
    and the tables only they write; return both lists.

    The tables read come from the endpoints rendered with the evaluation's parameters
    (branches depend on parameters, not on which user or item is asked), so the answers
    are the same as with every view (`--all-views` checks it); ingest gets ~3x faster
    when the per-buyer `co_purchase` view goes.
    """
    catalog = registry.catalog()
    now = "2011-01-01 00:00:00Z"
    calls = [
        ("for_user", _for_user_params(config.for_user_params, "u", 10, now, exclude))
        for exclude in (False, True)
    ]
    calls.append(
        ("also_bought", {**config.also_bought_params, "item_id": "i", "limit": 10, "now": now})
    )
    tables: set[str] = set()
    for name, params in calls:
        rendered = render(registry.snapshot.get(name), params)
        tables |= validate_select(rendered.sql, catalog, set(rendered.parameters))
    unread, orphans = views_not_feeding(materialized_views(admin, database), tables)
    for view in unread:
        admin.command(f"DROP VIEW {database}.`{view}`")
    # their tables go too: a query that still reached one fails instead of reading nothing
    for table in orphans:
        admin.command(f"DROP TABLE {database}.`{table}`")
    return unread, orphans


def _ingest(writer: EventWriter, window: Sequence[dict[str, Any]]) -> None:
    writer.insert(
        {
            "event_id": [e["event_id"] for e in window],
            "ts": [e["ts"] / 1000 for e in window],
            "user_id": [e["user_id"] for e in window],
            "order_id": [e["order_id"] for e in window],
            "item_id": [e["item_id"] for e in window],
            "event_type": [e["event_type"] for e in window],
            "quantity": [e["quantity"] for e in window],
            "price": [e["price"] for e in window],
        }
    )
