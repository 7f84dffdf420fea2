"""The workload of bench/bench_serving.py, the same for every system it compares: request
parameters drawn from Online Retail's own skew, a replay of the events after the
preload, a steady paced ingest, fixed-concurrency request levels, freshness probes and a
maximum-ingest phase. Each system is an HTTP base URL plus how it names its paths.
"""

from __future__ import annotations

import http.client as httplib
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgspec
from bench_ingest_path import Http

ENDPOINTS = ("also_bought", "trending", "for_user")
EVENTS_PATH = {"redpoll": "/v0/events?name=events", "redis": "/events"}


@dataclass(frozen=True)
class Api:
    """How one system is called: base URL and path style (`redpoll`: /v0/pipes/<name>.json,
    `redis`: bench/redis_recommender.py's /<name>)."""

    url: str
    style: str

    def path(self, endpoint: str, params: dict[str, Any]) -> str:
        query = urlencode(params)
        if self.style == "redpoll":
            return f"/v0/pipes/{endpoint}.json?{query}"
        return f"/{endpoint}?{query}"

    @property
    def events_path(self) -> str:
        return EVENTS_PATH[self.style]


def request_keys(events: Sequence[dict[str, Any]]) -> dict[str, tuple[str, list[Any], list[int]]]:
    """Per endpoint, the parameter that picks its answer, the values asked for and their
    weights: item and user ids by their number of events in the data (Online Retail's own
    request skew: the most frequent item has 2,313 events, the median a few dozen)."""
    items = Counter(e["item_id"] for e in events)
    users = Counter(e["user_id"] for e in events if e["user_id"])
    return {
        "also_bought": ("item_id", list(items), list(items.values())),
        "trending": ("hours", [24, 72, 168], [1, 3, 1]),
        "for_user": ("user_id", list(users), list(users.values())),
    }


def skewed_params(events: Sequence[dict[str, Any]], seed: int) -> Callable[[str], dict[str, Any]]:
    """A source of request parameters per endpoint, drawn by `request_keys`' weights."""
    keys = {
        endpoint: (name, values, list(itertools.accumulate(weights)))
        for endpoint, (name, values, weights) in request_keys(events).items()
    }
    rng = random.Random(seed)

    def draw(endpoint: str) -> dict[str, Any]:
        name, values, cum_weights = keys[endpoint]
        return {name: rng.choices(values, cum_weights=cum_weights)[0], "limit": 10}

    return draw


class Replay:
    """The events after the preload, in time order, stamped with the time they are sent
    (as live traffic); once exhausted, again with fresh event and order ids."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        self.events = events
        self.next = 0
        self.round = 0
        self.lock = threading.Lock()
        self.encode = msgspec.json.Encoder().encode

    def take(self, n: int) -> list[dict[str, Any]]:
        now_ms = int(time.time() * 1000)
        out = []
        with self.lock:
            for _ in range(n):
                if self.next == len(self.events):
                    self.next, self.round = 0, self.round + 1
                event = dict(self.events[self.next], ts=now_ms)
                self.next += 1
                if self.round:
                    event["event_id"] += f"~{self.round}"
                    if event["order_id"]:
                        event["order_id"] += f"~{self.round}"
                out.append(event)
        return out

    def body(self, n: int) -> bytes:
        return b"\n".join(self.encode(e) for e in self.take(n))


@dataclass
class IngestStats:
    events: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dropped_ticks: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")


def _post(http: Http, path: str, body: bytes) -> tuple[int, bytes]:
    try:
        return http.request("POST", path, body)
    except (OSError, httplib.HTTPException) as exc:
        return 0, str(exc).encode()


class PacedIngest:
    """`rate` events/s in requests of `batch` (e.g. 20 events every 10 ms) while the
    requests are measured: a ticker queues one body per tick and `senders` connections
    post them, so a slow acknowledgement does not slow the offered rate. A tick finding
    `2 * senders` bodies still queued is dropped and counted (the system is behind)."""

    def __init__(self, api: Api, replay: Replay, rate: float, batch: int, senders: int = 32):
        self.api, self.replay, self.batch, self.senders = api, replay, batch, senders
        self.interval = batch / rate
        self.stats = IngestStats()
        self.stop_flag = threading.Event()
        self.pending: list[bytes] = []
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> PacedIngest:
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self._tick, daemon=True)]
        self.threads += [
            threading.Thread(target=self._send, daemon=True) for _ in range(self.senders)
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        with self.cond:
            self.cond.notify_all()
        for t in self.threads:
            t.join(30)
        self.stats.seconds = time.perf_counter() - self.started

    def _tick(self) -> None:
        due = time.perf_counter()
        while not self.stop_flag.is_set():
            due += self.interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:  # a stall (GC, CPU): do not burst to catch up
                due = time.perf_counter()
            with self.cond:
                if len(self.pending) >= 2 * self.senders:
                    self.stats.dropped_ticks += 1
                    continue
            body = self.replay.body(self.batch)
            with self.cond:
                self.pending.append(body)
                self.cond.notify()

    def _send(self) -> None:
        http = Http(self.api.url)
        try:
            while True:
                with self.cond:
                    while not self.pending and not self.stop_flag.is_set():
                        self.cond.wait(0.1)
                    if self.stop_flag.is_set():
                        return
                    body = self.pending.pop(0)
                status, answer = _post(http, self.api.events_path, body)
                with self.cond:
                    self.stats.requests += 1
                    if status in (200, 202):
                        self.stats.events += self.batch
                    elif len(self.stats.errors) < 5:
                        self.stats.errors.append(f"{status}: {answer[:200]!r}")
        finally:
            http.close()


def max_ingest(api: Api, replay: Replay, seconds: float, batch: int, clients: int) -> IngestStats:
    """Events/s acknowledged when `clients` connections post `batch`-event requests back
    to back for `seconds` (no other load)."""
    stats = IngestStats()
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        http = Http(api.url)
        try:
            while time.perf_counter() < stop:
                status, answer = _post(http, api.events_path, replay.body(batch))
                with lock:
                    stats.requests += 1
                    if status in (200, 202):
                        stats.events += batch
                    elif len(stats.errors) < 5:
                        stats.errors.append(f"{status}: {answer[:200]!r}")
        finally:
            http.close()

    stats.seconds = _run_threads(worker, clients)
    return stats


def _run_threads(worker: Callable[[], None], n: int) -> float:
    """Run `worker` in `n` threads at once; the wall seconds until all have finished."""
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


@dataclass
class Level:
    """One endpoint at one concurrency: latencies of the 200 answers, wall time."""

    endpoint: str
    concurrency: int
    latencies: list[float]
    errors: int
    seconds: float
    first_error: str = ""

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")


def run_level(
    api: Api, endpoint: str, paths: Sequence[str], concurrency: int, max_seconds: float
) -> Level:
    """Send `paths` from `concurrency` keep-alive connections, each waiting for its
    answer before the next request; stop early after `max_seconds`."""
    todo: Iterator[str] = iter(paths)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + max_seconds

    def worker() -> None:
        http = Http(api.url)
        mine: list[float] = []
        try:
            for path in todo:
                if time.perf_counter() > stop:
                    break
                t0 = time.perf_counter()
                try:
                    status, answer = http.request("GET", path)
                except (OSError, httplib.HTTPException) as exc:
                    status, answer = 0, str(exc).encode()
                    http.close()
                    http = Http(api.url)
                elapsed = time.perf_counter() - t0
                if status == 200:
                    mine.append(elapsed)
                else:
                    with lock:
                        errors.append(f"{status}: {answer[:200]!r}")
        finally:
            http.close()
            with lock:
                latencies.extend(mine)

    wall = _run_threads(worker, concurrency)
    return Level(endpoint, concurrency, latencies, len(errors), wall, errors[0] if errors else "")


def freshness(
    api: Api, pairs: Sequence[tuple[str, str]], timeout: float = 5.0, max_seconds: float = 60
) -> tuple[list[float], list[str]]:
    """Per pair (a, b) of catalog items never bought: ask also_bought(a) (so that a
    cache holds the old answer), post one order with a and b, and from its
    acknowledgement poll also_bought(a) until b is in the answer. Returns the seconds
    from acknowledgement to the first answer with b, and errors (timeouts); stops
    probing after `max_seconds`."""
    http = Http(api.url)
    out: list[float] = []
    errors: list[str] = []
    encode = msgspec.json.encode
    stop = time.perf_counter() + max_seconds
    try:
        for n, (a, b) in enumerate(pairs):
            if time.perf_counter() > stop:
                break
            path = api.path("also_bought", {"item_id": a, "limit": 10})
            http.request("GET", path)
            now_ms = int(time.time() * 1000)
            order = f"bench-probe-order-{n}-{now_ms}"
            body = b"\n".join(
                encode(
                    {
                        "event_id": f"{order}:{item}",
                        "ts": now_ms,
                        "item_id": item,
                        "event_type": "purchase",
                        "order_id": order,
                        "quantity": 1,
                        "price": 1.0,
                    }
                )
                for item in (a, b)
            )
            status, answer = _post(http, api.events_path, body)
            if status not in (200, 202):
                errors.append(f"ingest {status}: {answer[:200]!r}")
                continue
            acked = time.perf_counter()
            needle = f'"{b}"'.encode()
            while True:
                status, answer = http.request("GET", path)
                if status == 200 and needle in answer:
                    out.append(time.perf_counter() - acked)
                    break
                if time.perf_counter() - acked > timeout:
                    errors.append(f"{b} not in also_bought({a}) {timeout:.0f} s after the ack")
                    break
                time.sleep(0.001)
            time.sleep(0.05)
    finally:
        http.close()
    return out, errors


def cache_counts(metrics: str, endpoint: str) -> tuple[float, float] | None:
    """(hits, misses) of the result cache in a Prometheus exposition, for `endpoint` when
    the samples carry endpoint labels; None when no cache metric is exposed. Reads any
    sample whose name has `cache` and whose name or labels say hit or miss."""
    hits = misses = 0.0
    found = False
    samples = []
    for line in metrics.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, number = line.rpartition(" ")
        name, _, labels = head.partition("{")
        text = (name + " " + labels).lower()
        if "cache" not in name.lower() or name.endswith("_created"):
            continue
        if any(word in text for word in ("evict", "bytes", "size", "entries")):
            continue
        samples.append((text, labels, float(number)))
    labelled = any(f'"{e}"' in labels for _, labels, _ in samples for e in ENDPOINTS)
    for text, labels, value in samples:
        if labelled and f'"{endpoint}"' not in labels:
            continue
        if "miss" in text:
            misses += value
            found = True
        elif "hit" in text:
            hits += value
            found = True
    return (hits, misses) if found else None
