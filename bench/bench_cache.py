"""Result cache latency over HTTP: hits, misses and the uncached path, one client.

    .venv/bin/python bench/bench_cache.py [--requests 300]

1. Copies the repository's project to a temporary folder and loads the bundled sample
   (data/sample: 7 days of Online Retail, as `redpoll demo` does), then picks the most
   active items and customers.
2. Starts `redpoll serve` (a subprocess, 127.0.0.1) with the cache off, then with it on,
   and sends `--requests` GETs per endpoint and phase from one keep-alive client
   (stdlib http.client, so little of the time is the client's own):
   * `off`: varied parameters, cache off: the uncached path;
   * `distinct keys`: cache on, every request a new key (a miss that renders);
   * `repeated keys`: cache on, 5 keys round-robin: hits, and the misses the clock causes
     (for_user and trending call now(): an answer is reused within its second only);
   * `after a write`: cache on, one event posted before each GET (not timed): the answer
     is stale, the kept SQL runs again without rendering.
   Latencies are split by the `X-Redpoll-Cache` header of each answer.
3. Prints p50/p99 per endpoint, phase and cache result, in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redpoll.testing import copy_project, run_server

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-cache"


def load(project: Path) -> tuple[list[str], list[str]]:
    """Load the sample into the project's store; the top items and customers."""
    from redpoll.cli.commands.demo import SAMPLE_DIR, load_sample
    from redpoll.settings import load_settings
    from redpoll.store import Store

    settings = load_settings({"project_dir": str(project)}, environ={})
    load_sample(settings, REPO / SAMPLE_DIR)
    with Store.open(settings, "bench_cache") as store:
        db = store.target.database
        items = [
            r[0]
            for r in store.admin.query(
                f"SELECT item_id FROM {db}.basket_pairs WHERE item_id != '' GROUP BY item_id"
                " ORDER BY sum(orders) DESC LIMIT 40"
            ).result_rows
        ]
        users = [
            r[0]
            for r in store.admin.query(
                f"SELECT user_id FROM {db}.user_history WHERE user_id != '' GROUP BY user_id"
                " ORDER BY count() DESC LIMIT 40"
            ).result_rows
        ]
    return items, users


def percentiles(samples: list[float]) -> str:
    if not samples:
        return f"{'-':>7} {'-':>7} {0:>5}"
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"{p50:7.2f} {p99:7.2f} {len(ordered):5d}"


class Caller:
    """One keep-alive connection; `get` returns (seconds, X-Redpoll-Cache)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port))
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, name: str, params: dict[str, Any]) -> tuple[float, str]:
        path = f"/v0/pipes/{name}.json?{urllib.parse.urlencode(params)}"
        started = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
        return elapsed, response.getheader("x-redpoll-cache", "?")

    def post_event(self, item: str, n: int) -> None:
        row = {
            "event_id": f"bench-{n}-{time.time_ns()}",
            "ts": time.time(),
            "user_id": "bench-user",
            "order_id": f"bench-order-{n}",
            "item_id": item,
            "event_type": "view",
        }
        self.conn.request(
            "POST",
            "/v0/events?name=events&wait=true",
            body=json.dumps(row).encode(),
            headers=self.headers,
        )
        response = self.conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"ingest: {response.status}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="GETs per endpoint and phase")
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(REPO, Path(tmp) / "project")
        items, users = load(project)
        endpoints: dict[str, Callable[[int], dict[str, Any]]] = {
            "also_bought": lambda i: {"item_id": items[i % len(items)], "limit": 5 + i // 40 % 10},
            "trending": lambda i: {"hours": 24 + i % 2000, "limit": 10},
            "for_user": lambda i: {"user_id": users[i % len(users)], "limit": 5 + i // 40 % 10},
        }
        results: list[tuple[str, str, str, list[float]]] = []
        for cache in ("off", "on"):
            env = {"REDPOLL_ADMIN_TOKEN": TOKEN, "REDPOLL_LOG_LEVEL": "warning"}
            env["REDPOLL_CACHE"] = cache
            with run_server(project, env=env) as server:
                caller = Caller(server.url)
                for name, params in endpoints.items():
                    for i in range(20):  # warm: connections, shapes, parts in memory
                        caller.get(name, params(1000 + i))
                    phases: dict[str, Callable[[int], dict[str, Any]]] = {}
                    if cache == "off":
                        phases["off"] = params
                    else:
                        phases["distinct keys"] = lambda i, p=params: p(2000 + i)  # type: ignore[misc]
                        phases["repeated keys"] = lambda i, p=params: p(i % 5)  # type: ignore[misc]
                        phases["after a write"] = lambda i, p=params: p(i % 5)  # type: ignore[misc]
                    for phase, make in phases.items():
                        by_status: dict[str, list[float]] = {}
                        for i in range(n if phase != "after a write" else max(n // 3, 20)):
                            if phase == "after a write":
                                caller.post_event(items[i % len(items)], i)
                            seconds, status = caller.get(name, make(i))
                            by_status.setdefault(status, []).append(seconds)
                        for status, samples in sorted(by_status.items()):
                            results.append((name, phase, status, samples))
                caller.conn.close()
    print(f"HTTP GET, one client, 127.0.0.1; {n} requests per endpoint and phase")
    print(f"{'endpoint':14} {'phase':15} {'cache':6} {'p50 ms':>7} {'p99 ms':>7} {'n':>5}")
    for name, phase, status, samples in results:
        print(f"{name:14} {phase:15} {status:6} {percentiles(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
