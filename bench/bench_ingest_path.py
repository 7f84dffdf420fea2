"""Where ingest time goes, side by side in one run: POST /v0/events with every view vs none.

Phases (each a real `redpoll serve` over embedded chDB, temp projects with this repo's
sql/, materialized_views/ and migrations/):

1. `none`: landing + `events` only (the migration that creates `events_landing`, no view
   file): full Online Retail in time order, C clients x B-event NDJSON requests.
2. `all`: every migration and view of the repository, the same replay. Freshness is
   probed on every 10th request: acknowledgement -> its last event visible in `events`
   and in every view table with an `event_id` column (the answer is only sent after the
   INSERT, all views included, returned: ADR 0008).
3. `small`: on the `all` server, 32 clients POST one event per request for 20 s; then
   the same clients GET /v0/health for 20 s (the HTTP floor of this client and server).
   Lost = acknowledged events missing from `events`.
4. `views`: each view's own cost, in-process (`EventWriter`, no HTTP): the first
   `--view-sample` events in B-event inserts with no view, each view alone (with the
   views it reads), and all of them. chDB has no `system.query_views_log`, so a view's
   cost is the difference of insert time with and without it.

Printed: events/s and the all/none ratio, request latency, per-stage seconds from the
server's own counters (`GET /redpoll/v1/admin/ingest/status`: decode, validate, group,
convert, insert), first-tenth vs last-tenth throughput, peak server RSS (VmHWM),
freshness p50/p99, small-request rate / floor, per-view milliseconds per insert.

    .venv/bin/python bench/bench_ingest_path.py [--batch 5000] [--clients 4] [--limit N]
        [--small-seconds 20] [--small-clients 32] [--view-sample 50000] [--skip none,views]
        [--ack visible|durable] [--ack-max-backlog-rows N]

The servers run with REDPOLL_ADMIN_TOKEN set and REDPOLL_RATE_LIMIT_IP_RPS=0,
REDPOLL_RATE_LIMIT_RPS=0 (the per-IP and per-token rate limits would otherwise throttle a
benchmark client). Heavy (several minutes on 2 cores): run it alone, e.g.
`flock /tmp/redpoll-heavy.lock .venv/bin/python bench/bench_ingest_path.py`.
Data: ../shared/data/online-retail (CC BY 4.0, Chen, Sain & Guo 2012).
"""

from __future__ import annotations

import argparse
import csv
import http.client as httplib
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec
from http_replay import (
    ENV,
    REPO,
    TOKEN,
    Body,
    pct,
    recent_events,
    replay_arguments,
    request_bodies,
)

from redpoll.settings import ACK_MODES, setting_default
from redpoll.testing import RunningServer, copy_project, run_cli, run_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAGES = ("decode_s", "validate_s", "group_s", "convert_s", "insert_s")


class Http:
    """A keep-alive stdlib HTTP connection (cheaper per request than httpx)."""

    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.conn = httplib.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = dict(AUTH)
        if body is not None:
            headers["Content-Type"] = "application/x-ndjson"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def sql(self, query: str) -> list[str]:
        body = json.dumps({"query": query, "format": "csv"}).encode()
        self.conn.request(
            "POST", "/redpoll/v1/admin/sql", body=body, headers={**AUTH, "Content-Type": "json"}
        )
        response = self.conn.getresponse()
        text = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {text}")
        return text.splitlines()[1:]  # CSVWithNames: the header first

    def close(self) -> None:
        self.conn.close()


def peak_rss(server: RunningServer) -> int:
    """Peak resident set (VmHWM) of the server process, bytes."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def probe_event(chunk: list[dict[str, Any]]) -> dict[str, Any]:
    """The event whose visibility is probed: the body's last one with a user (views
    keyed by user, e.g. `user_history`, leave anonymous events out)."""
    return next((e for e in reversed(chunk) if e["user_id"]), chunk[-1])


def make_project(root: Path, views: bool) -> Path:
    project = root / ("all" if views else "none")
    copy_project(REPO, project, ("sql", "materialized_views", "migrations"))
    if not views:  # landing + events only: the migration creating events_landing
        for path in (project / "migrations").glob("*.sql"):
            if not re.search(r"CREATE TABLE[^(]*\bevents_landing\b", path.read_text()):
                path.unlink()
        shutil.rmtree(project / "materialized_views")
        (project / "materialized_views").mkdir()
    done = run_cli(project, "migrate", "up", env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    return project


def replay(
    server: RunningServer,
    bodies: list[Body],
    clients: int,
    probe_tables: dict[str, list[str]] | None,
) -> dict[str, Any]:
    """Send every body once (clients in parallel, requests in order); time each one."""
    sent = [0.0] * len(bodies)
    acked = [0.0] * len(bodies)
    rows = [0] * len(bodies)
    freshness: list[float] = []
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    errors: list[str] = []

    def visible(http: Http, last: dict[str, Any]) -> float:
        started = time.perf_counter()
        event_id = str(last["event_id"]).replace("\\", "\\\\").replace("'", "\\'")
        # a view keyed by user or session (user_history, session_history) keeps only
        # events that have one: it is not waited for when the event has none
        checks = [
            f"(SELECT count() FROM {t} WHERE event_id = '{event_id}') > 0"
            for t, keys in tables.items()
            if all(last.get(k) for k in keys)
        ]
        query = "SELECT " + " AND ".join(checks)
        while time.perf_counter() - started < 30:
            if http.sql(query)[-1].strip() in {"1", "true"}:
                return time.perf_counter() - started
            time.sleep(0.001)
        raise TimeoutError(f"event {last['event_id']} not visible after 30 s")

    tables = {"events": [], **(probe_tables or {})}
    # warm-up (first INSERT of a fresh store: table and pipeline set-up), not timed
    warm = Http(server.url)
    try:
        status, answer = warm.request("POST", "/v0/events?name=events", b'{"event_id":"warm-up"}')
        assert status == 202, answer
    finally:
        warm.close()

    def worker() -> None:
        http = Http(server.url)
        try:
            for index in next_index:
                body, last, _count = bodies[index]
                sent[index] = time.perf_counter()
                status, answer = http.request("POST", "/v0/events?name=events", body)
                acked[index] = time.perf_counter()
                if status != 202:
                    with lock:
                        errors.append(f"{status}: {answer[:200]!r}")
                    continue
                rows[index] = json.loads(answer)["successful_rows"]
                if probe_tables is not None and index % 10 == 0:
                    try:
                        fresh = visible(http, last)
                    except TimeoutError as exc:
                        fresh = float("inf")
                        errors.append(str(exc))
                    with lock:
                        freshness.append(fresh)
        finally:
            http.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked_wall = time.perf_counter() - started
    # with ack=durable the last acknowledged batches are still on their way in: the rate
    # counts until every event is stored (and so in every view)
    http = Http(server.url)
    try:
        while int(http.sql("SELECT count() FROM events")[-1]) < sum(rows):
            time.sleep(0.05)
    finally:
        http.close()
    wall = time.perf_counter() - started
    tenth = max(1, len(bodies) // 10)

    def rate(indexes: range) -> float:
        events = sum(rows[i] for i in indexes)
        span = max(acked[i] for i in indexes) - min(sent[i] for i in indexes)
        return events / span if span > 0 else float("nan")

    latencies = [a - s for a, s in zip(acked, sent, strict=True)]
    return {
        "events": sum(rows),
        "wall": wall,
        "rate": sum(rows) / wall,
        "acked_rate": sum(rows) / acked_wall,
        "first_tenth": rate(range(tenth)),
        "last_tenth": rate(range(len(bodies) - tenth, len(bodies))),
        "latency_p50": pct(latencies, 0.5),
        "latency_p99": pct(latencies, 0.99),
        "freshness": freshness,
        "errors": errors,
    }


def stage_report(server: RunningServer, events: int) -> str:
    http = Http(server.url)
    try:
        status, body = http.request("GET", "/redpoll/v1/admin/ingest/status")
    finally:
        http.close()
    if status != 200:
        return f"  (ingest status: HTTP {status})"
    stats = json.loads(body)["datasources"].get("events", {})
    lines = [
        f"  requests {stats.get('requests', 0):,} ({stats.get('fast_requests', 0):,} fast path),"
        f" inserts {stats.get('inserts', 0):,}"
    ]
    for stage in STAGES:
        seconds = stats.get(stage, 0.0)
        lines.append(
            f"  {stage[:-2]:<9} {seconds:8.2f} s  {seconds / max(events, 1) * 1e6:7.2f} us/event"
        )
    lines.append(
        "  (decode/validate: request threads, in parallel; group/convert/insert: the one"
        " committer thread; insert includes every view)"
    )
    return "\n".join(lines)


def small_requests(server: RunningServer, clients: int, seconds: float) -> dict[str, Any]:
    """One event per request from `clients` threads for `seconds`, then the /v0/health
    floor with the same client code."""
    encode = msgspec.json.Encoder().encode
    now_ms = int(time.time() * 1000)

    def run(path: str, make_body: Any) -> tuple[int, int, list[float]]:
        ok = [0] * clients
        errors = [0] * clients
        latencies: list[list[float]] = [[] for _ in range(clients)]
        stop = time.perf_counter() + seconds

        def worker(k: int) -> None:
            http = Http(server.url)
            n = 0
            try:
                while time.perf_counter() < stop:
                    body = make_body(k, n)
                    t0 = time.perf_counter()
                    try:
                        status, _ = http.request("POST" if body else "GET", path, body)
                    except (OSError, httplib.HTTPException):
                        errors[k] += 1
                        http.close()
                        http = Http(server.url)
                        continue
                    latencies[k].append(time.perf_counter() - t0)
                    n += 1
                    if status in (200, 202):
                        ok[k] += 1
                    else:
                        errors[k] += 1
            finally:
                http.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(ok), sum(errors), [x for per in latencies for x in per]

    def event(k: int, n: int) -> bytes:
        return encode(
            {
                "event_id": f"small-{k}-{n}",
                "ts": now_ms,
                "user_id": f"su{k}",
                "item_id": f"si{n % 500}",
                "event_type": "view",
            }
        )

    acked, errors, latencies = run("/v0/events?name=events", event)
    http = Http(server.url)
    try:  # with ack=durable the last acknowledged batches may still be on their way in
        deadline = time.perf_counter() + 10
        while True:
            found = http.sql("SELECT count() FROM events WHERE event_id LIKE 'small-%'")
            stored = int(found[-1])
            if stored >= acked or time.perf_counter() > deadline:
                break
            time.sleep(0.2)
    finally:
        http.close()
    floor_ok, floor_errors, floor_latencies = run("/v0/health", lambda k, n: None)
    return {
        "acked": acked,
        "errors": errors,
        "stored": stored,
        "rate": acked / seconds,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "floor_rate": floor_ok / seconds,
        "floor_errors": floor_errors,
        "floor_p50": pct(floor_latencies, 0.5),
    }


def stage_profile(bodies: list[Body]) -> list[str]:
    """Request-thread stages in-process, general path vs fast path, on the same bodies
    (microseconds per event; one core, no server)."""
    from redpoll.ingest.convert import converter_for
    from redpoll.ingest.datasources import Column, DataSource
    from redpoll.ingest.validate import parse_body, validate_body, validate_rows
    from redpoll.materialized import table_columns

    landing = table_columns(REPO / "sql" / "events.sql", "events_landing")
    datasource = DataSource(
        "events",
        "events_landing",
        tuple(Column(n, t, "", converter_for(t, n)) for n, t in landing if n != "batch"),
        uses_landing=True,
    )
    sample = bodies[: max(1, min(len(bodies), 20))]
    events = sum(count for _, _, count in sample)
    parse = validate = fast = 0.0
    for body, _, _ in sample:
        t0 = time.perf_counter()
        parsed = parse_body(body)
        t1 = time.perf_counter()
        validate_rows(datasource, parsed)
        t2 = time.perf_counter()
        assert validate_body(datasource, body) is not None
        t3 = time.perf_counter()
        parse, validate, fast = parse + t1 - t0, validate + t2 - t1, fast + t3 - t2
    us = 1e6 / events
    return [
        f"  general path (parse_body + validate_rows): decode {parse * us:.2f} + validate"
        f" {validate * us:.2f} = {(parse + validate) * us:.2f} us/event",
        f"  fast path (validate_body): {fast * us:.2f} us/event"
        f" ({(parse + validate) / fast:.1f}x less), {events:,} events",
    ]


def view_costs(events: list[dict[str, Any]], batch: int) -> list[tuple[str, float]]:
    """Milliseconds per `batch`-event insert: no view, each view alone, all views."""
    import clickhouse_connect  # bench-only: in-process chDB, as bench_ingest_views.py

    from redpoll.ingest.writer import EventWriter
    from redpoll.materialized import load_views

    sys.path.insert(0, str(REPO / "bench"))
    from bench_ingest_views import apply_migrations

    views = load_views(REPO)
    fed = views.fed_by({"events_landing", "events", "event_ids"})
    owner = {table: view.name for view in views.views for table in view.tables}

    def needs(name: str) -> set[str]:
        found = {name}
        for obj in views.get(name).objects:
            for table in obj.reads:
                other = owner.get(table.split(".")[-1])
                if other and other not in found:
                    found |= needs(other)
        return found

    columns = {k: [e.get(k) for e in events] for k in events[0]}
    columns["ts"] = [ms / 1000 for ms in columns["ts"]]  # the writer takes numbers as seconds
    configs: list[tuple[str, set[str]]] = [("none", set())]
    configs += [(v.name, needs(v.name)) for v in fed]
    configs.append(("all", {v.name for v in fed}))
    out: list[tuple[str, float]] = []
    for label, keep in configs:
        with tempfile.TemporaryDirectory(prefix="redpoll-bench-") as tmp:
            client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/data")
            client.command("CREATE DATABASE IF NOT EXISTS bench")
            apply_migrations(client, "bench")
            for view in views.views:
                if view.name in keep:
                    continue
                for obj in view.objects:
                    if obj.kind == "materialized view":
                        client.command(f"DROP VIEW IF EXISTS bench.{obj.name}")
            tables = set(client.query("SHOW TABLES FROM bench").result_columns[0])
            if "trending" in tables:
                client.command("SYSTEM STOP TTL MERGES bench.trending")
            writer = EventWriter(client, "bench", views=views)
            times = []
            for start in range(0, len(events), batch):
                t0 = time.perf_counter()
                writer.insert({k: v[start : start + batch] for k, v in columns.items()})
                times.append(time.perf_counter() - t0)
            client.close()
        timed = times[1:] or times  # the first INSERT of a fresh store sets things up
        out.append((label, sum(timed) / len(timed) * 1000))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = replay_arguments(__doc__)
    parser.add_argument("--small-seconds", type=float, default=20)
    parser.add_argument("--small-clients", type=int, default=32)
    parser.add_argument(
        "--ack",
        choices=ACK_MODES,
        default=setting_default("ack"),
        help="the servers' `ack` setting (durable: 202 after the write-ahead log)",
    )
    parser.add_argument(
        "--ack-max-backlog-rows",
        type=int,
        help="the servers' `ack_max_backlog_rows` (default: the setting's; 0: no bound)",
    )
    parser.add_argument("--view-sample", type=int, default=50_000)
    parser.add_argument("--skip", default="", help="comma-separated: none, small, views")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if not args.csv.is_file():
        print(f"data set not found: {args.csv}", file=sys.stderr)
        return 2

    events = recent_events(args.csv, args.limit)
    bodies = request_bodies(events, args.batch, probe_event)
    print(
        f"{len(events):,} events in {len(bodies)} requests of {args.batch:,}, "
        f"{args.clients} clients, time order"
    )
    print("request-thread stages, in-process:")
    print("\n".join(stage_profile(bodies)), flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="redpoll-bench-") as tmp:
        for label in ("none", "all"):
            if label in skip:
                continue
            project = make_project(Path(tmp), views=label == "all")
            env = {**ENV, "REDPOLL_ACK": args.ack}
            if args.ack_max_backlog_rows is not None:
                env["REDPOLL_ACK_MAX_BACKLOG_ROWS"] = str(args.ack_max_backlog_rows)
            with run_server(project, env=env) as server:
                probe: dict[str, list[str]] | None = None
                if label == "all":
                    http = Http(server.url)
                    rows = http.sql(
                        "SELECT table, arrayStringConcat(arrayFilter(c -> c IN ('user_id',"
                        " 'session_id'), groupArray(name)), ' ') FROM system.columns WHERE"
                        " database = currentDatabase() GROUP BY table HAVING"
                        " has(groupArray(name), 'event_id') AND table NOT IN ('events',"
                        " 'events_landing', 'event_ids')"
                    )
                    probe = {table: keys.split() for table, keys in csv.reader(rows)}
                    http.close()
                result = replay(server, bodies, args.clients, probe)
                result["rss"] = peak_rss(server)
                result["stages"] = stage_report(server, result["events"])
                if label == "all" and "small" not in skip:
                    result["small"] = small_requests(server, args.small_clients, args.small_seconds)
                    result["rss"] = peak_rss(server)
                results[label] = result
            report(label, result, args)

    if "all" in results and "none" in results:
        ratio = results["all"]["rate"] / results["none"]["rate"]
        print(
            f"\nall views / no view: {results['all']['rate']:,.0f} / "
            f"{results['none']['rate']:,.0f} = {ratio:.2f}x (target >= 0.5x and >= 50,000 events/s)"
        )
    if "views" not in skip:
        sample = events[: args.view_sample]
        print(
            f"\nper-view cost, in-process EventWriter, {len(sample):,} events,"
            f" {args.batch:,}/insert (mean, first insert left out):"
        )
        costs = view_costs(sample, args.batch)
        base = costs[0][1]
        for label, ms in costs:
            extra = "" if label == "none" else f"  (+{ms - base:.0f} ms over none)"
            rate = args.batch / ms * 1000
            print(f"  {label:<16} {ms:7.0f} ms/insert  {rate:9,.0f} events/s{extra}")
    return 0


def report(label: str, r: dict[str, Any], args: argparse.Namespace) -> None:
    what = "every view" if label == "all" else "no view (landing + events)"
    print(f"\n== {label}: {what}")
    print(
        f"{r['events']:,} events stored (in every view) in {r['wall']:.1f} s ->"
        f" {r['rate']:,.0f} events/s (acknowledged at {r['acked_rate']:,.0f}/s);"
        f" {len(r['errors'])} errors {r['errors'][:3]}"
    )
    print(
        f"request latency p50 {r['latency_p50'] * 1000:.0f} ms, p99"
        f" {r['latency_p99'] * 1000:.0f} ms"
    )
    ratio = r["last_tenth"] / r["first_tenth"]
    print(
        f"first tenth {r['first_tenth']:,.0f} events/s, last tenth {r['last_tenth']:,.0f}"
        f" ({ratio:.2f}x; target within 25%)"
    )
    print(f"peak server RSS {r['rss'] / 2**20:,.0f} MiB (target <= 2048 MiB)")
    if r["freshness"]:
        print(
            f"freshness after ack (n={len(r['freshness'])}): p50"
            f" {pct(r['freshness'], 0.5) * 1000:.1f} ms, p99"
            f" {pct(r['freshness'], 0.99) * 1000:.1f} ms (target p99 <= 1000 ms)"
        )
    print("per stage (server counters):")
    print(r["stages"])
    if "small" in r:
        s = r["small"]
        print(
            f"one event per request, {args.small_clients} clients, {args.small_seconds:.0f} s:"
            f" {s['rate']:,.0f} acknowledged requests/s (target >= 2,000), {s['errors']}"
            f" errors, {s['acked'] - s['stored']} lost ({s['stored']:,} stored of"
            f" {s['acked']:,} acknowledged); latency p50 {s['p50'] * 1000:.1f} ms,"
            f" p99 {s['p99'] * 1000:.1f} ms"
        )
        print(
            f"HTTP floor (GET /v0/health, same client): {s['floor_rate']:,.0f} requests/s,"
            f" p50 {s['floor_p50'] * 1000:.1f} ms, {s['floor_errors']} errors ->"
            f" ingest at {s['rate'] / s['floor_rate']:.2f}x the floor"
        )


if __name__ == "__main__":
    raise SystemExit(main())
