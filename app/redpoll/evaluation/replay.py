"""Replay a purchase data set in time order and score recommendations made before each
purchase (`redpoll evaluate`).

How it avoids seeing the future: events are grouped into fixed time windows (1 hour by
default). For each window, first every invoice of the window is answered from the store
as it was at the window's start (endpoints with `now` = the invoice time, baselines from
their state), then the whole window is ingested through `EventWriter`, the same writer
the HTTP and Kafka paths use, so every materialized view (buyer_pairs, trending,
user_history, user_item_stats) is updated exactly as in production. A purchase is never
in the store when it is predicted.

The replay is a sequence of named stages (`evaluate` reads as that sequence):

* split (`_split`): cut the events into windows and pick each window's test invoices;
* per window, in this order: query (`_Querier.ask`) the endpoints for the test invoices,
  score (`_Scorer.score`) their answers and the baselines' against the true baskets,
  feed (`_feed`) the window to the store and the baselines;
* report (`_report`): the result's tables, monthly series, counts and timings.

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
import contextlib
import dataclasses
import datetime as dt
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
from redpoll.endpoints.executor import RequestOptions, execute, prepare
from redpoll.endpoints.loader import catalog_from_client
from redpoll.endpoints.registry import Registry
from redpoll.evaluation.baselines import Baselines
from redpoll.evaluation.metrics import Accumulator, score_list
from redpoll.evaluation.scratch import (
    drop_unread_views,
    event_writer,
    insert_events,
    insert_items,
    tables_read,
)
from redpoll.evaluation.timeline import iso, month, ms, stable_hash
from redpoll.ingest.writer import EventWriter
from redpoll.store import Store

__all__ = (
    "EndpointCaller",
    "EvalConfig",
    "EvalResult",
    "evaluate",
    "load_endpoints",
    "setup_store",
)

log = logging.getLogger("redpoll.evaluation")

BASELINES = ("popularity_all", "popularity_30d", "cooc_monthly")

Event = dict[str, Any]


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


@dataclasses.dataclass
class _Window:
    """One replay step: every event of it is fed, only `cases` are asked and scored."""

    start_ms: int
    month: str
    events: list[Event]
    cases: list[_Invoice]  # the test invoices (none in warm-up, sampled)


@dataclasses.dataclass
class _ItemAnswer:
    """`also_bought` of the invoice's first item: the rest of the basket is relevant."""

    invoice: _Invoice
    ranked: list[str]


@dataclasses.dataclass
class _UserAnswer:
    """`for_user` of the invoice's customer, as a ranking of everything (`ranked`) and
    of items new to the customer (`fresh`), with what the store knew the customer bought."""

    invoice: _Invoice
    ranked: list[str]
    known: set[str]
    fresh: list[str]
    second_call: bool  # `fresh` needed its own exclude_purchased=true call


_Answer = _ItemAnswer | _UserAnswer


# -- the replay, stage by stage ---------------------------------------------------------


def evaluate(config: EvalConfig) -> EvalResult:
    """Replay `config.dataset` into a throwaway store and score the endpoints and the
    baselines on every test invoice (see the module docstring for the stages)."""
    say = config.progress or (lambda _m: None)
    started = time.perf_counter()
    events, items = _read(config, say)
    work = Path(tempfile.mkdtemp(prefix="redpoll-eval-", dir=config.work_dir))
    try:
        with _opened_bench(config, work, items, say) as bench:
            return _replay(config, events, items, bench, say, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replay(
    config: EvalConfig,
    events: list[Event],
    items: list[dict[str, Any]],
    bench: _Bench,
    say: Callable[[str], None],
    started: float,
) -> EvalResult:
    """The stages in order: split, then per window query, score and feed (queries and
    baselines see only earlier windows), then report."""
    all_ids = [i["item_id"] for i in items] + [e["item_id"] for e in events]
    base = Baselines(dict.fromkeys(all_ids))
    querier = _Querier(bench.caller, config)
    scorer = _Scorer(config.k, base)
    windows = _split(events, config)
    say(f"{len(windows)} windows of {config.window_hours:g} h")
    clock = _Clock(started)
    for n, window in enumerate(windows):
        base.start_window(window.start_ms, window.month)
        with clock.stage("query_s"):
            answers = querier.ask(window.cases, base.user_known_item_ids)
        with clock.stage("scoring_s"):
            scorer.score(window.month, answers)
        with clock.stage("ingest_and_learn_s"):
            _feed(bench.writer, base, window)
        scorer.replayed(window)
        clock.progress(say, f"{window.month} window {n + 1}/{len(windows)}", scorer.counts)
    return _report(config.k, scorer, bench, clock)


def _read(
    config: EvalConfig, say: Callable[[str], None]
) -> tuple[list[Event], list[dict[str, Any]]]:
    """The data set's events (before `config.until`) in time order, and its items."""
    from redpoll.datasets.online_retail import read_events, read_items

    started = time.perf_counter()
    events = read_events(config.dataset, limit=config.max_lines)
    if config.until is not None:
        stop = ms(config.until)
        events = [e for e in events if e["ts"] < stop]
    items = read_items(config.dataset, limit=config.max_lines)
    say(f"read {len(events)} events, {len(items)} items ({time.perf_counter() - started:.1f} s)")
    return events, items


def _split(events: list[Event], config: EvalConfig) -> list[_Window]:
    """Stage *split*: cut the events into the replay's windows and choose each window's
    test invoices. The window is the unit of "not seeing the future": its invoices are
    asked against the store as it was at the window's start."""
    width_ms = int(config.window_hours * 3_600_000)
    start_ms = ms(config.start) if config.start else 0
    windows: list[_Window] = []
    for events_in in _merge_warmup(list(_windows(events, width_ms)), start_ms):
        w_start = events_in[0]["ts"] // width_ms * width_ms
        cases = _test_cases(events_in, w_start >= start_ms, config.sample_every)
        windows.append(_Window(w_start, month(w_start), events_in, cases))
    return windows


def _windows(events: list[Event], width_ms: int) -> Iterator[list[Event]]:
    current: list[Event] = []
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


def _merge_warmup(windows: list[list[Event]], start_ms: int) -> list[list[Event]]:
    """Windows before `start_ms` are only ingested: send them in big batches (faster)."""
    out: list[list[Event]] = []
    buffer: list[Event] = []
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


def _test_cases(window: list[Event], scored: bool, sample_every: int) -> list[_Invoice]:
    """The window's invoices that are asked and scored: none during warm-up, every
    `sample_every`-th by a hash of the order id (the same invoices on every run)."""
    if not scored:
        return []
    invoices = _invoices(window)
    if sample_every > 1:
        invoices = [i for i in invoices if stable_hash(i.order_id) % sample_every == 0]
    return invoices


def _invoices(window: list[Event]) -> list[_Invoice]:
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


class _Querier:
    """Stage *query*: ask the endpoints about a window's test invoices while the store
    holds only the windows before it (called before `_feed`), so an answer can never
    contain the purchase it is scored against. Calls run on the caller's thread pool."""

    def __init__(self, caller: EndpointCaller, config: EvalConfig) -> None:
        self.caller = caller
        self.k = config.k
        self.for_user_params = dict(config.for_user_params)
        self.also_bought_params = dict(config.also_bought_params)

    def ask(self, cases: Sequence[_Invoice], known_of: Callable[[str], set[str]]) -> list[_Answer]:
        """Answers in case order (`for_user` before `also_bought` for one invoice);
        `known_of(user)`: the user's purchases the store holds."""
        jobs: list[tuple[_Invoice, set[str] | None, concurrent.futures.Future[list[str]]]] = []
        for inv in cases:
            now = iso(inv.ts)
            if inv.user_id:
                known = known_of(inv.user_id)
                limit = self._user_limit(known)
                params = _for_user_params(
                    self.for_user_params, inv.user_id, limit, now, exclude=False
                )
                jobs.append((inv, known, self._submit("for_user", params)))
            if len(inv.items) > 1:
                params = {
                    **self.also_bought_params,
                    "item_id": inv.items[0],
                    "limit": self.k,
                    "now": now,
                }
                jobs.append((inv, None, self._submit("also_bought", params)))
        ranked = [(inv, known, future.result()) for inv, known, future in jobs]
        return [
            _ItemAnswer(inv, rec) if known is None else self._user_answer(inv, known, rec)
            for inv, known, rec in ranked
        ]

    def _submit(self, name: str, params: Mapping[str, Any]) -> concurrent.futures.Future[list[str]]:
        return self.caller.pool.submit(self.caller.call, name, params)

    def _user_limit(self, known: set[str]) -> int:
        return min(100, self.k + len(known))

    def _user_answer(self, inv: _Invoice, known: set[str], ranked: list[str]) -> _UserAnswer:
        """One call serves both lists: the ranking with exclude_purchased=false; the
        new-item list is that ranking without the user's purchases, which is what
        exclude_purchased=true returns (exclusion only filters, the scores do not depend
        on it; max_per_category is 0 here). The store holds exactly the purchases the
        baselines know (`known`). Only when the ranking was cut short by the 100-row
        limit is the new-item list asked for separately."""
        fresh = [i for i in ranked if i not in known][: self.k]
        second_call = len(fresh) < self.k and len(ranked) >= self._user_limit(known)
        if second_call:
            params = _for_user_params(
                self.for_user_params, inv.user_id, self.k, iso(inv.ts), exclude=True
            )
            fresh = self.caller.call("for_user", params)
        return _UserAnswer(inv, ranked, known, fresh, second_call)


class _Scorer:
    """Stage *score*: hit rate, MRR and NDCG of the endpoint's answers and of every
    baseline's list for the same case, against the true basket, per task and month.
    Baselines are asked here, after the query stage and before `_feed`: they know
    exactly the windows the store knows."""

    def __init__(self, k: int, base: Baselines) -> None:
        self.k = k
        self.base = base
        self.acc = Accumulator()
        self.counts: collections.Counter[str] = collections.Counter()

    def score(self, month: str, answers: Sequence[_Answer]) -> None:
        for answer in answers:
            if isinstance(answer, _ItemAnswer):
                self._also_bought(month, answer)
            else:
                self._for_user(month, answer)

    def replayed(self, window: _Window) -> None:
        """Count a window once it is fed (events, test invoices)."""
        self.counts["events"] += len(window.events)
        self.counts["invoices"] += len(window.cases)

    def _also_bought(self, month: str, answer: _ItemAnswer) -> None:
        item = answer.invoice.items[0]
        lists = {"endpoint": answer.ranked} | {
            method: self.base.also_bought(method, item, self.k) for method in BASELINES
        }
        self._add("also_bought", month, set(answer.invoice.items[1:]), lists)

    def _for_user(self, month: str, answer: _UserAnswer) -> None:
        """`for_user_all`: any basket item is a hit; `for_user_new`: only items the user
        never bought before (every earlier purchase, scored or not: what the store holds).
        A task with nothing relevant in the basket is not scored."""
        if answer.second_call:
            self.counts["for_user_second_calls"] += 1
        inv = answer.invoice
        for task, exclude, endpoint in (
            ("for_user_all", False, answer.ranked[: self.k]),
            ("for_user_new", True, answer.fresh),
        ):
            relevant = {i for i in inv.items if not exclude or i not in answer.known}
            if not relevant:
                continue
            lists = {"endpoint": endpoint} | {
                method: self.base.for_user(method, inv.user_id, self.k, exclude_purchased=exclude)
                for method in BASELINES
            }
            self._add(task, month, relevant, lists)

    def _add(
        self, task: str, month: str, relevant: set[str], lists: Mapping[str, Sequence[str]]
    ) -> None:
        for method, ranked in lists.items():
            self.acc.add(task, method, month, score_list(ranked, relevant, self.k))
        self.counts[f"{task}_queries"] += 1


def _feed(writer: EventWriter, base: Baselines, window: _Window) -> None:
    """Stage *feed*: ingest the whole window through the production writer (every
    materialized view updated as in production), then let the baselines learn the same
    purchases. Runs after the window's queries and scores, never before."""
    insert_events(writer, window.events)
    purchases = [
        (e["user_id"], e["order_id"], e["item_id"])
        for e in window.events
        if e["event_type"] == "purchase"
    ]
    base.observe(window.start_ms, purchases)


def _report(k: int, scorer: _Scorer, bench: _Bench, clock: _Clock) -> EvalResult:
    """Stage *report*: the per-task table and per-month series of the scores, the counts
    (with the views the store left out, so a run says what it measured) and timings."""
    counts: dict[str, Any] = {
        **scorer.counts,
        "views_left_out": bench.views_left_out,
        "tables_left_out": bench.tables_left_out,
    }
    return EvalResult(k, scorer.acc.table(), scorer.acc.series(), counts, clock.timings())


class _Clock:
    """Where the replay's time goes (the result's `timings`), and a progress line every
    15 s: a full replay takes minutes and a silent one looks hung."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.spent = {"query_s": 0.0, "ingest_and_learn_s": 0.0, "scoring_s": 0.0}
        self._last_line = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.spent[name] += time.perf_counter() - t0

    def progress(self, say: Callable[[str], None], where: str, counts: Mapping[str, int]) -> None:
        if time.perf_counter() - self._last_line <= 15:
            return
        self._last_line = time.perf_counter()
        say(
            f"  {where}: {counts['events']} events, query {self.spent['query_s']:.0f} s, "
            f"ingest {self.spent['ingest_and_learn_s']:.0f} s"
        )

    def timings(self) -> dict[str, float]:
        total = {"total_s": round(time.perf_counter() - self.started, 1)}
        return total | {name: round(spent, 1) for name, spent in self.spent.items()}


# -- the bench: the throwaway store and what runs against it ----------------------------


@dataclasses.dataclass
class _Bench:
    """The scratch store with the project's endpoints loaded, the production writer
    and the in-process endpoint caller; what was left out of the store, for the report."""

    store: Store
    writer: EventWriter
    caller: EndpointCaller
    views_left_out: list[str]
    tables_left_out: list[str]

    def close(self) -> None:
        self.caller.close()
        self.store.close()


@contextlib.contextmanager
def _opened_bench(
    config: EvalConfig, work: Path, items: list[dict[str, Any]], say: Callable[[str], None]
) -> Iterator[_Bench]:
    """The bench on `work`, closed on the way out, also on an error: chDB opens one data
    path per process, and a path left open fails every later replay in the process."""
    store = setup_store(config, work, items)
    try:
        registry = load_endpoints(config.project_dir, store)
        views_left_out: list[str] = []
        tables_left_out: list[str] = []
        if not config.all_views:
            views_left_out, tables_left_out = _drop_unread_views(store, registry, config)
            left = ", ".join(views_left_out) or "none"
            say(f"views no evaluated query reads, left out: {left}")
        writer = event_writer(store, config.project_dir)
    except BaseException:
        store.close()
        raise
    caller = EndpointCaller(lambda: store.new_client(readonly=True), registry, config.workers)
    bench = _Bench(store, writer, caller, views_left_out, tables_left_out)
    try:
        yield bench
    finally:
        bench.close()


def setup_store(config: EvalConfig, work: Path, items: list[dict[str, Any]]) -> Store:
    store = Store.open_scratch(
        config.project_dir, work / "data", "redpoll_eval", "redpoll evaluate"
    )
    try:
        store.migrations().up()
        admin, target = store.admin, store.target
        # the data set is years old: keep its history (see the module docstring)
        admin.command(f"ALTER TABLE {target.database}.trending REMOVE TTL")
        insert_items(store, items)
    except BaseException:
        store.close()  # chDB opens one data path per process: never leave this one open
        raise
    return store


def load_endpoints(
    project_dir: Path, store: Store, required: Sequence[str] = ("for_user", "also_bought")
) -> Registry:
    """The project's endpoints against the scratch store; the evaluated ones must load."""
    admin, database = store.admin, store.target.database
    registry = Registry(project_dir / "endpoints", lambda: catalog_from_client(admin, database))
    snap = registry.reload()
    for name in required:
        if name not in snap.endpoints:
            errors = "; ".join(str(e) for e in snap.errors)
            raise RuntimeError(f"endpoint {name!r} not loaded: {errors or 'file missing'}")
    return registry


class EndpointCaller:
    """Runs endpoints in-process as `GET /v0/pipes/<name>.json` does, without the
    endpoints' serving time limits (`OPTIONS`)."""

    #: a replay measures answers: a query the machine is too busy to finish in its
    #: serving limit (2 s for most endpoints) waits up to a minute instead of failing
    OPTIONS = RequestOptions(fmt="ndjson", time_limit=60.0)

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

    def rows(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The endpoint's rows, as JSON objects."""
        query = prepare(self.registry.snapshot.get(name), params, self.OPTIONS)
        body = execute(self._client(), query)
        return [json.loads(line) for line in body.splitlines() if line]

    def call(self, name: str, params: Mapping[str, Any]) -> list[str]:
        """The ranked item ids."""
        return [row["item_id"] for row in self.rows(name, params)]

    def close(self) -> None:
        self.pool.shutdown()
        for client in self._clients:
            client.close()


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
    store: Store, registry: Registry, config: EvalConfig
) -> tuple[list[str], list[str]]:
    """Drop, from the throwaway store, the views whose output no evaluated query reads,
    and the tables only they write; return both lists.

    The tables read come from the endpoints rendered with the evaluation's parameters
    (branches depend on parameters, not on which user or item is asked), so the answers
    are the same as with every view (`--all-views` checks it); ingest gets ~3x faster
    when unread pair views go.
    """
    now = "2011-01-01 00:00:00Z"
    calls = [
        ("for_user", _for_user_params(config.for_user_params, "u", 10, now, exclude))
        for exclude in (False, True)
    ]
    calls.append(
        ("also_bought", {**config.also_bought_params, "item_id": "i", "limit": 10, "now": now})
    )
    return drop_unread_views(store, tables_read(registry, calls))
