"""Repetition control, measured (`redpoll evaluate --task repetition`): does `for_user`
stop showing an item the user keeps ignoring, and what does that cost in hits?

`for_user` leaves out items shown to the user at least `max_impressions` times in the
last `impression_hours` with no click since (endpoints/for_user.sql). Online Retail has
no impressions, so this replay simulates them:

* requests: each sampled user opens the page `requests_per_day` times a day, evenly
  spaced, during the `request_days` days before each of their test invoices (only after
  their previous invoice: every request has one "next purchase");
* per request: `for_user` (mode mixed, limit k, `now` = the request time) answers; its
  rows become impression events (same user, ts = the request time, the `rec_id` and
  `source` the endpoint returned), and every shown item of the user's next invoice
  becomes a click 1 s later (click model: the user clicks what they are about to buy,
  `click_share` of those clicks kept, by a stable hash; 1.0 by default); both are
  ingested through `EventWriter`, the writer of the real events;
* real events are fed in time order up to each window's last request (`now` is exact in
  every endpoint, so a request never reads an event after its time).

The same replay runs twice, each on a fresh store from the same events: with the
control off (`max_impressions=0`) and on (`max_impressions`, `impression_hours`).
Per run: the share of returned recommendations already shown >= k times in the last h
hours with no click since, counted in Python from the simulated log
(`unclicked_impressions`, independent of the SQL), and HitRate/NDCG@k against the next
invoice. The control works when that share is 0 with it on; the cost is the HitRate
ratio on/off.

Requests are answered in windows (at most `window_minutes` long, a user at most once
per window, so a user's next request always sees the impressions of the previous one):
a window's requests run in parallel on the store as it was after the previous window's
impressions and clicks; other users' clicks of the same window are not seen yet (a
trend effect only: clicks weigh 0.5 in the trend, impressions 0). One INSERT per window
(its real events and the previous window's simulated ones) keeps the ingest cost
proportional to the windows, not to the requests.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import itertools
import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redpoll.endpoints.registry import Registry
from redpoll.evaluation.metrics import score_list
from redpoll.evaluation.replay import EndpointCaller, EvalConfig, load_endpoints, setup_store
from redpoll.evaluation.scratch import drop_unread_views, event_writer, insert_events, tables_read
from redpoll.evaluation.timeline import iso, ms, stable_hash
from redpoll.store import Store

__all__ = (
    "ExposureLog",
    "RepetitionConfig",
    "RepetitionResult",
    "Request",
    "evaluate_repetition",
    "plan_requests",
    "unclicked_impressions",
)

ENDPOINT = "for_user"
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

Event = dict[str, Any]


@dataclasses.dataclass
class RepetitionConfig:
    dataset: Path
    project_dir: Path
    k: int = 10
    users: int = 100  # sampled users (stable hash of the id); 0 = every eligible user
    start: dt.datetime | None = None  # test invoices from here (default: last test_days)
    until: dt.datetime | None = None  # events from here on are not read
    test_days: int = 90
    max_lines: int | None = None
    requests_per_day: int = 4
    request_days: float = 2.0
    max_impressions: int = 3  # k of the control in the "on" run and of the Python count
    impression_hours: int = 24
    click_share: float = 1.0  # share of shown next-basket items clicked (stable hash)
    # with the control on, also ask with it off and check that exactly the items the
    # Python count marks are left out (one more call per request: tests, small runs)
    cross_check: bool = False
    window_minutes: int = 360
    workers: int = 2
    for_user_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    all_views: bool = False
    work_dir: Path | None = None
    progress: Callable[[str], None] | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One page view: the user asks at `ts` (epoch ms); `basket` is their next invoice."""

    ts: int
    user_id: str
    order_id: str
    basket: frozenset[str]


@dataclasses.dataclass
class RepetitionResult:
    k: int
    runs: list[dict[str, Any]]
    params: dict[str, Any]
    counts: dict[str, Any]
    timings: dict[str, float]

    def cost(self) -> float | None:
        """HitRate@k with the control on / off."""
        off, on = self.run("off"), self.run("on")
        return on["hit"] / off["hit"] if off["hit"] else None

    def run(self, name: str) -> dict[str, Any]:
        return next(r for r in self.runs if r["run"] == name)

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "cost": self.cost()}, indent=2)

    def markdown(self) -> str:
        k, n, h = self.k, self.params["max_impressions"], self.params["impression_hours"]
        lines = [
            f"| control | max_impressions | requests | recommendations | shown >= {n}x in "
            f"{h} h, no click since | share | HitRate@{k} | NDCG@{k} |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.runs:
            lines.append(
                f"| {r['run']} | {r['max_impressions']} | {r['requests']} | "
                f"{r['recommendations']} | {r['repeated']} | {r['share']:.4f} | "
                f"{r['hit']:.4f} | {r['ndcg']:.4f} |"
            )
        cost = self.cost()
        if cost is not None:
            lines.append("")
            lines.append(f"Cost: HitRate@{k} on / off = {cost:.4f} ({cost - 1:+.1%}).")
        return "\n".join(lines)


def unclicked_impressions(
    impressions: Sequence[int], clicks: Sequence[int], now_ms: int, hours: float
) -> int:
    """How many of the impressions fall in (now - hours, now] and after the last click at
    or before now: the count the control compares with `max_impressions` (an impression
    at the same time as the click does not count, as in endpoints/for_user.sql)."""
    last_click = max((c for c in clicks if c <= now_ms), default=None)
    since = now_ms - int(hours * _HOUR_MS)
    return sum(
        1 for t in impressions if since < t <= now_ms and (last_click is None or t > last_click)
    )


class ExposureLog:
    """The simulated impressions and clicks per (user, item), in Python."""

    def __init__(self) -> None:
        self.impressions: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.clicks: dict[tuple[str, str], list[int]] = defaultdict(list)

    def unclicked(self, user_id: str, item_id: str, now_ms: int, hours: float) -> int:
        key = (user_id, item_id)
        return unclicked_impressions(
            self.impressions.get(key, ()), self.clicks.get(key, ()), now_ms, hours
        )

    def shown(self, user_id: str, item_id: str, ts: int) -> None:
        self.impressions[user_id, item_id].append(ts)

    def clicked(self, user_id: str, item_id: str, ts: int) -> None:
        self.clicks[user_id, item_id].append(ts)


# -- plan: who asks when -----------------------------------------------------------------


def plan_requests(events: Sequence[Event], config: RepetitionConfig) -> list[Request]:
    """The requests of the sampled users, in time order (see the module docstring)."""
    invoices: dict[str, dict[str, tuple[int, list[str]]]] = defaultdict(dict)
    for e in events:
        if e["event_type"] != "purchase" or not e["user_id"]:
            continue
        ts, items = invoices[e["user_id"]].setdefault(e["order_id"], (e["ts"], []))
        if e["item_id"] not in items:
            items.append(e["item_id"])
    last = max((e["ts"] for e in events), default=0)
    start = ms(config.start) if config.start else last - config.test_days * _DAY_MS
    step = _DAY_MS // config.requests_per_day
    per_invoice = round(config.requests_per_day * config.request_days)
    plans: dict[str, list[Request]] = {}
    for user, orders in invoices.items():
        timeline = sorted((ts, order, items) for order, (ts, items) in orders.items())
        mine: list[Request] = []
        for (previous, _, _), (ts, order, items) in itertools.pairwise(timeline):
            if ts < start:
                continue
            for j in range(1, per_invoice + 1):
                at = ts - j * step
                if at <= previous:
                    break
                mine.append(Request(at, user, order, frozenset(items)))
        if mine:
            plans[user] = mine
    chosen = sorted(plans, key=lambda u: (stable_hash(u), u))
    if config.users:
        chosen = chosen[: config.users]
    return sorted((r for u in chosen for r in plans[u]), key=lambda r: (r.ts, r.user_id))


def _windows(requests: Sequence[Request], width_ms: int) -> list[list[Request]]:
    """Consecutive requests within `width_ms` of the window's first, a user at most once
    (their next request must see the impressions of this one)."""
    out: list[list[Request]] = []
    users: set[str] = set()
    for r in requests:
        if out and r.user_id not in users and r.ts - out[-1][0].ts < width_ms:
            out[-1].append(r)
        else:
            out.append([r])
            users = set()
        users.add(r.user_id)
    return out


# -- one run: a fresh store, the requests in time order ----------------------------------


@dataclasses.dataclass
class _Tally:
    requests: int = 0
    recommendations: int = 0
    repeated: int = 0
    short_answers: int = 0
    hit: float = 0.0
    ndcg: float = 0.0
    impressions: int = 0
    clicks: int = 0
    cross_checked: int = 0
    cross_mismatches: int = 0

    def row(self, name: str, cap: int, seconds: float) -> dict[str, Any]:
        n = self.requests or 1
        return {
            "run": name,
            "max_impressions": cap,
            "requests": self.requests,
            "recommendations": self.recommendations,
            "repeated": self.repeated,
            "share": self.repeated / (self.recommendations or 1),
            "hit": self.hit / n,
            "ndcg": self.ndcg / n,
            "short_answers": self.short_answers,
            "impressions_ingested": self.impressions,
            "clicks_ingested": self.clicks,
            "cross_checked": self.cross_checked,
            "cross_mismatches": self.cross_mismatches,
            "seconds": round(seconds, 1),
        }


class _Run:
    """One replay (control off or on) on its own scratch store."""

    def __init__(
        self,
        config: RepetitionConfig,
        cap: int,
        items: Sequence[Mapping[str, Any]],
        work: Path,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.cap = cap
        self.say = say
        base = EvalConfig(dataset=config.dataset, project_dir=config.project_dir)
        self.store: Store = setup_store(base, work, [dict(i) for i in items])
        try:
            registry = load_endpoints(base.project_dir, self.store)
            self.left_out: list[str] = []
            if not config.all_views:
                self.left_out = self._leave_out_unread_views(registry)
            self.writer = event_writer(self.store, config.project_dir)
            self.caller = EndpointCaller(
                lambda: self.store.new_client(readonly=True), registry, config.workers
            )
        except BaseException:
            self.store.close()
            raise
        self.log = ExposureLog()
        self.tally = _Tally()
        self.ingest_s = 0.0
        self.query_s = 0.0

    def params(self, user_id: str, ts: int) -> dict[str, Any]:
        return {
            "mode": "mixed",
            **self.config.for_user_params,
            "user_id": user_id,
            "limit": self.config.k,
            "now": iso(ts),
            "max_impressions": self.cap,
            "impression_hours": self.config.impression_hours,
        }

    def _leave_out_unread_views(self, registry: Registry) -> list[str]:
        """Drop the views `for_user` never reads (as the replay does): same answers,
        faster ingest. Rendered with the control on, which reads the same tables."""
        params = {**self.params("u", ms(dt.datetime(2011, 1, 1))), "max_impressions": 3}
        unread, _ = drop_unread_views(self.store, tables_read(registry, [(ENDPOINT, params)]))
        return list(unread)

    def replay(self, events: Sequence[Event], requests: Sequence[Request]) -> None:
        times = [e["ts"] for e in events]
        fed = 0
        pending: list[Event] = []
        windows = _windows(requests, self.config.window_minutes * 60_000)
        last_line = time.perf_counter()
        for n, window in enumerate(windows):
            upto = bisect.bisect_right(times, window[-1].ts)
            self._insert([*events[fed:upto], *pending])
            fed, pending = upto, []
            t0 = time.perf_counter()
            futures = [
                self.caller.pool.submit(self.caller.rows, ENDPOINT, self.params(r.user_id, r.ts))
                for r in window
            ]
            answers = [f.result() for f in futures]
            self.query_s += time.perf_counter() - t0
            for request, rows in zip(window, answers, strict=True):
                if self.config.cross_check and self.cap > 0:
                    self._cross_check(request, rows)
                pending.extend(self._observe(request, rows))
            if time.perf_counter() - last_line > 15:
                last_line = time.perf_counter()
                self.say(
                    f"  max_impressions={self.cap}: window {n + 1}/{len(windows)}, "
                    f"query {self.query_s:.0f} s, ingest {self.ingest_s:.0f} s"
                )

    def _cross_check(self, request: Request, rows: Sequence[Mapping[str, Any]]) -> None:
        """The control must leave out exactly what the Python count says: the answer
        with it on equals the answer with it off (same store, same `now`) minus the items
        shown >= k times without a click (leaving out never changes a score)."""
        config = self.config
        off = {**self.params(request.user_id, request.ts), "max_impressions": 0, "limit": 100}
        ranked = [str(r["item_id"]) for r in self.caller.rows(ENDPOINT, off)]
        expected = [
            item
            for item in ranked
            if self.log.unclicked(request.user_id, item, request.ts, config.impression_hours)
            < self.cap
        ][: config.k]
        self.tally.cross_checked += 1
        if [str(r["item_id"]) for r in rows] != expected:
            self.tally.cross_mismatches += 1
            self.say(f"  control and Python count disagree: {request}")

    def _observe(self, request: Request, rows: Sequence[Mapping[str, Any]]) -> list[Event]:
        """Count, score and log one answer; return its impressions and clicks."""
        config, tally, user = self.config, self.tally, request.user_id
        shown = [str(r["item_id"]) for r in rows][: config.k]
        tally.requests += 1
        tally.recommendations += len(shown)
        tally.short_answers += len(shown) < config.k
        tally.repeated += sum(
            self.log.unclicked(user, item, request.ts, config.impression_hours)
            >= config.max_impressions
            for item in shown
        )
        scores = score_list(shown, request.basket, config.k)
        tally.hit += scores.hit
        tally.ndcg += scores.ndcg
        out: list[Event] = []
        for row, item in zip(rows, shown, strict=False):
            self.log.shown(user, item, request.ts)
            out.append(_simulated(request, item, "impression", request.ts, row))
            if item in request.basket and self._clicks(request, item):
                self.log.clicked(user, item, request.ts + 1000)
                out.append(_simulated(request, item, "click", request.ts + 1000, row))
        tally.impressions += len(shown)
        tally.clicks += sum(e["event_type"] == "click" for e in out)
        return out

    def _clicks(self, request: Request, item: str) -> bool:
        share = self.config.click_share
        if share >= 1:
            return True
        return stable_hash(f"{request.user_id}:{item}:{request.ts}") % 10_000 < share * 10_000

    def _insert(self, batch: Sequence[Event]) -> None:
        t0 = time.perf_counter()
        insert_events(self.writer, batch, chunk=50_000, attribution=True)
        self.ingest_s += time.perf_counter() - t0

    def close(self) -> None:
        self.caller.close()
        self.store.close()


def _simulated(request: Request, item: str, kind: str, ts: int, row: Mapping[str, Any]) -> Event:
    return {
        "event_id": f"sim:{kind}:{request.user_id}:{item}:{ts}",
        "ts": ts,
        "user_id": request.user_id,
        "order_id": "",
        "item_id": item,
        "event_type": kind,
        "quantity": 0,
        "price": 0.0,
        "rec_id": str(row.get("rec_id", "")),
        "source": str(row.get("source", "")),
    }


# -- the evaluation: read, plan, run off and on, report ----------------------------------


def evaluate_repetition(config: RepetitionConfig) -> RepetitionResult:
    """Replay the sampled users' requests twice (control off, then on), each on a fresh
    scratch store from the same events, and compare."""
    from redpoll.datasets.online_retail import read_events, read_items

    say = config.progress or (lambda _m: None)
    started = time.perf_counter()
    events = read_events(config.dataset, limit=config.max_lines)
    if config.until is not None:
        stop = ms(config.until)
        events = [e for e in events if e["ts"] < stop]
    items = read_items(config.dataset, limit=config.max_lines)
    requests = plan_requests(events, config)
    if not requests:
        raise ValueError("no request to replay: no sampled user has a test invoice")
    # real events after the last request are never read: not ingested
    events = [e for e in events if e["ts"] <= requests[-1].ts]
    users = {r.user_id for r in requests}
    invoices = {(r.user_id, r.order_id) for r in requests}
    say(
        f"read {len(events)} events, {len(items)} items; {len(users)} users, "
        f"{len(invoices)} test invoices, {len(requests)} requests per run"
    )
    runs: list[dict[str, Any]] = []
    left_out: list[str] = []
    timings = {"read_s": round(time.perf_counter() - started, 1)}
    for name, cap in (("off", 0), ("on", config.max_impressions)):
        t0 = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix="redpoll-repetition-", dir=config.work_dir))
        try:
            run = _Run(config, cap, items, work, say)
            try:
                run.replay(events, requests)
            finally:
                run.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        left_out = run.left_out
        runs.append(run.tally.row(name, cap, time.perf_counter() - t0))
        timings[f"{name}_query_s"] = round(run.query_s, 1)
        timings[f"{name}_ingest_s"] = round(run.ingest_s, 1)
        say(f"run {name} (max_impressions={cap}): {runs[-1]}")
    timings["total_s"] = round(time.perf_counter() - started, 1)
    first = min(r.ts for r in requests)
    params = {
        "for_user": {
            "mode": "mixed",
            **config.for_user_params,
            "limit": config.k,
            "now": "request time",
        },
        "max_impressions": config.max_impressions,
        "impression_hours": config.impression_hours,
        "requests_per_day": config.requests_per_day,
        "request_days": config.request_days,
        "click_share": config.click_share,
        "users": config.users,
        "first_request": iso(first),
        "window_minutes": config.window_minutes,
    }
    counts = {
        "users": len(users),
        "test_invoices": len(invoices),
        "requests": len(requests),
        "events_read": len(events),
        "views_left_out": left_out,
    }
    return RepetitionResult(config.k, runs, params, counts, timings)
