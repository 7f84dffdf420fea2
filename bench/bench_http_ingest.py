"""Replay UCI Online Retail through the HTTP events API with all views on.

Starts a real `redpoll serve` (embedded chDB, temp project with this repo's sql/ and
migrations/), then C client threads POST NDJSON requests of B events each (pre-encoded,
in time order) to `/v0/events?name=events`. Prints:

- sustained events/s (all acknowledged events / wall time from first send to last ack),
- request latency p50/p99 (send -> acknowledgement),
- freshness p50/p99: for every 10th request, the time from its acknowledgement until a
  probe query sees its last event in the `events` and `user_history` view targets.

    .venv/bin/python bench/bench_http_ingest.py [--batch 5000] [--clients 4] [--limit N]

The server runs with REDPOLL_ADMIN_TOKEN set and REDPOLL_RATE_LIMIT_IP_RPS=0,
REDPOLL_RATE_LIMIT_RPS=0 (the rate limits would throttle a benchmark client).
`bench/bench_ingest_path.py` runs this replay side by side with a no-view server and
prints where the time goes per stage.

Data: ../shared/data/online-retail (CC BY 4.0, Chen, Sain & Guo 2012).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from http_replay import ENV, REPO, TOKEN, pct, recent_events, replay_arguments, request_bodies

from redpoll.testing import copy_project, run_cli, run_server


def main(argv: list[str] | None = None) -> int:
    parser = replay_arguments(__doc__)
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        print(f"data set not found: {args.csv}", file=sys.stderr)
        return 2

    events = recent_events(args.csv, args.limit)
    bodies = request_bodies(events, args.batch)
    print(
        f"{len(events):,} events in {len(bodies)} requests of {args.batch}, {args.clients} clients"
    )

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "bench"
        project.mkdir()
        copy_project(REPO, project, ("sql", "materialized_views", "migrations"))
        assert run_cli(project, "migrate", "up").returncode == 0
        with run_server(project, env=ENV) as server:
            latencies: list[float] = []
            freshness: list[float] = []
            next_index = iter(range(len(bodies)))
            lock = threading.Lock()
            acked = [0]

            def probe(http: httpx.Client, last: dict) -> float:
                started = time.perf_counter()
                query = (
                    "SELECT (SELECT count() FROM events WHERE event_type = {t:String} AND "
                    "item_id = {i:String} AND event_id = {e:String}) + "
                    "(SELECT count() FROM user_history WHERE user_id = {u:String} AND "
                    "event_id = {e:String})"
                )
                params = {
                    "t": last["event_type"],
                    "i": last["item_id"],
                    "e": last["event_id"],
                    "u": last["user_id"],
                }
                sql = query
                for key, value in params.items():  # bench-only literal binding
                    literal = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
                    sql = sql.replace("{" + key + ":String}", literal)
                want = 2 if last["user_id"] else 1
                while time.perf_counter() - started < 30:
                    r = http.post(
                        "/redpoll/v1/admin/sql",
                        json={"query": sql, "format": "csv"},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                    if int(r.text.splitlines()[-1]) >= want:
                        return time.perf_counter() - started
                    time.sleep(0.001)
                raise TimeoutError(f"event {last['event_id']} not visible after 30 s")

            def worker() -> None:
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    for index in next_index:
                        body, last, _count = bodies[index]
                        t0 = time.perf_counter()
                        r = http.post(
                            "/v0/events?name=events",
                            content=body,
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        )
                        t1 = time.perf_counter()
                        assert r.status_code == 202, r.text
                        with lock:
                            latencies.append(t1 - t0)
                            acked[0] += r.json()["successful_rows"]
                        if index % 10 == 0:
                            fresh = probe(http, last)
                            with lock:
                                freshness.append(fresh)

            started = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            with httpx.Client(base_url=server.url) as http:
                stored = http.post(
                    "/redpoll/v1/admin/sql",
                    json={"query": "SELECT count() FROM events", "format": "csv"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).text.split()[-1]

    print(
        f"acknowledged events: {acked[0]:,} in {wall:.1f} s -> {acked[0] / wall:,.0f} events/s "
        f"(target 50,000: ratio {acked[0] / wall / 50_000:.2f})"
    )
    print(
        f"request latency p50 {pct(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {pct(latencies, 0.99) * 1000:.0f} ms"
    )
    print(
        f"freshness after ack (n={len(freshness)}): p50 {pct(freshness, 0.5) * 1000:.1f} ms, "
        f"p99 {pct(freshness, 0.99) * 1000:.1f} ms (target p99 < 1000 ms)"
    )
    print(f"events stored: {stored}; mean {statistics.mean(latencies) * 1000:.0f} ms/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
