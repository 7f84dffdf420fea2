"""Latency of the recommendation endpoints over HTTP with the full Online Retail loaded.

    .venv/bin/python bench/bench_recommendations.py [--requests 1000] [--concurrency 1 4]

1. Creates a temporary project (the repository's sql/, migrations/, endpoints/), loads
   all 541,909 Online Retail lines through `EventWriter` (timestamps shifted so the data
   ends now, as on a live shop; `trending`'s 90-day TTL then keeps the last 90 days) and
   the catalog, in this process, merges every table's parts (OPTIMIZE ... FINAL: the
   state background merges leave a long-running store in; `--no-merge` serves the
   several parts per table the bulk load leaves), then closes the store.
2. Starts `redpoll serve` (a subprocess, as in production: `redpoll.testing.run_server`)
   and, per endpoint, sends `--requests` GETs with varied parameters (random customers,
   random popular items, categories) from `concurrency` keep-alive clients.
3. Before serving, prints per endpoint the in-process p50 of the whole query and of its
   `EXPLAIN PLAN` (parse, analysis, planning: the cost before any data is read).
4. Prints p50/p99/max per endpoint and concurrency, and the targets (p99 < 20 ms for
   for_user, < 10 ms for the others).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from redpoll.testing import copy_project, run_server

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
TARGET_MS = {"for_user": 20.0}


def load(project: Path, dataset: Path, merge: bool = True) -> dict[str, list[str]]:
    import datetime as dt

    from redpoll.clickhouse.client import connect, parse_url
    from redpoll.datasets.online_retail import read_events, read_items
    from redpoll.ingest.writer import EventWriter
    from redpoll.migrations.runner import MigrationRunner

    started = time.perf_counter()
    events = read_events(dataset)
    items = read_items(dataset)
    shift = int(time.time() * 1000) - events[-1]["ts"]
    target = parse_url(f"chdb://{project / '.redpoll' / 'data'}", "")
    client = connect(target, create_database=True)
    MigrationRunner(client, project / "migrations", target.database, "").up()
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    client.insert(
        f"{target.database}.items",
        [
            [
                i["item_id"],
                i["title"],
                i["category"],
                "",
                i["price"],
                True,
                epoch + dt.timedelta(milliseconds=i["updated_at"] + shift),
            ]
            for i in items
        ],
        column_names=["item_id", "title", "category", "brand", "price", "available", "updated_at"],
    )
    writer = EventWriter(client, target.database, views=REPO)
    for start in range(0, len(events), 50_000):
        chunk = events[start : start + 50_000]
        writer.insert(
            {
                "event_id": [e["event_id"] for e in chunk],
                "ts": [(e["ts"] + shift) / 1000 for e in chunk],
                "user_id": [e["user_id"] for e in chunk],
                "order_id": [e["order_id"] for e in chunk],
                "item_id": [e["item_id"] for e in chunk],
                "event_type": [e["event_type"] for e in chunk],
                "quantity": [e["quantity"] for e in chunk],
                "price": [e["price"] for e in chunk],
            }
        )
    db = target.database
    if merge:
        merged = time.perf_counter()
        for (table,) in client.query(
            f"SELECT name FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree'"
        ).result_rows:
            client.command(f"OPTIMIZE TABLE {db}.`{table}` FINAL")
        print(f"merged all parts in {time.perf_counter() - merged:.1f} s", file=sys.stderr)
    users = [
        r[0]
        for r in client.query(
            f"SELECT user_id FROM {db}.user_item_stats GROUP BY user_id ORDER BY user_id"
        ).result_rows
    ]
    popular = [
        r[0]
        for r in client.query(
            f"SELECT item_id FROM {db}.buyer_pairs WHERE item_id != '' GROUP BY item_id "
            "ORDER BY sum(buyers) DESC LIMIT 1000"
        ).result_rows
    ]
    categories = [
        r[0]
        for r in client.query(
            f"SELECT category FROM {db}.items FINAL GROUP BY category ORDER BY count() DESC "
            "LIMIT 30"
        ).result_rows
    ]
    sizes = client.query(
        f"SELECT (SELECT count() FROM {db}.events), (SELECT count() FROM {db}.buyer_pairs), "
        f"(SELECT count() FROM {db}.trending)"
    ).result_rows[0]
    pools = {"users": users, "items": popular, "categories": categories}
    for line in planning_share(client, project, pools):
        print(line)
    client.close()
    print(
        f"loaded in {time.perf_counter() - started:.0f} s: events {sizes[0]:,}, "
        f"buyer_pairs rows {sizes[1]:,}, trending rows (90 days kept) {sizes[2]:,}",
        file=sys.stdout,
    )
    return pools


def planning_share(
    client: Any, project: Path, pools: dict[str, list[str]], n: int = 60
) -> list[str]:
    """In-process p50 per endpoint, whole query vs `EXPLAIN PLAN` of it.

    EXPLAIN PLAN parses, analyses and plans the query (running its scalar subqueries)
    without reading the tables: what a request costs before any data is touched, and a
    reference for how fast the machine is today.
    """
    from redpoll.endpoints.executor import prepare
    from redpoll.endpoints.loader import catalog_from_client, load_endpoint

    catalog = catalog_from_client(client)
    rng = random.Random(11)

    def p50(sqls: list[tuple[str, dict]]) -> float:
        times = []
        for sql, parameters in sqls:
            started = time.perf_counter()
            client.raw_query(sql, parameters=parameters or None, fmt="TSV")
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    lines = [f"in-process p50: SELECT 1 {p50([('SELECT 1', {})] * n):.2f} ms"]
    for name in ("for_user", "also_bought", "trending", "popular", "recently_viewed"):
        endpoint = load_endpoint(project / "endpoints" / f"{name}.sql", catalog)
        queries = []
        for params in requests_for(name, pools, n, rng):
            query = prepare(endpoint, {k: str(v) for k, v in params.items()})
            queries.append((query.sql, dict(query.parameters)))
        p50(queries)  # warm-up
        whole = p50(queries)
        plan = p50([("EXPLAIN PLAN " + sql, parameters) for sql, parameters in queries])
        lines.append(
            f"in-process p50: {name:16s} {whole:5.1f} ms, of which parse + analysis + "
            f"planning (EXPLAIN PLAN) {plan:4.1f} ms ({plan / whole:.0%})"
        )
    return lines


def requests_for(name: str, pools: dict[str, list[str]], n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        if name == "for_user":
            user = rng.choice(pools["users"]) if rng.random() < 0.9 else f"new-{rng.random()}"
            out.append({"user_id": user, "limit": 10})
        elif name == "also_bought":
            out.append({"item_id": rng.choice(pools["items"]), "limit": 10})
        elif name == "trending":
            p = {"limit": 10, "hours": rng.choice([24, 72, 168])}
            if rng.random() < 0.3:
                p["category"] = rng.choice(pools["categories"])
            out.append(p)
        elif name == "popular":
            p = {"limit": 10, "days": rng.choice([7, 30, 90])}
            if rng.random() < 0.3:
                p["category"] = rng.choice(pools["categories"])
            out.append(p)
        elif name == "recently_viewed":
            out.append({"user_id": rng.choice(pools["users"]), "event_types": "purchase"})
    return out


def run(url: str, name: str, params: list[dict], concurrency: int) -> list[float]:
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(concurrency)]

    def worker(i: int) -> list[float]:
        http = clients[i]
        times = []
        for p in params[i::concurrency]:
            t0 = time.perf_counter()
            r = http.get(f"/v0/pipes/{name}.json", params=p)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        return times

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        samples = [t for ts in pool.map(worker, range(concurrency)) for t in ts]
    for c in clients:
        c.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--load-into", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-merge",
        action="store_true",
        help="serve the store as the bulk load left it (several unmerged parts per table) "
        "instead of merged, as background merges leave a long-running store",
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--endpoints",
        nargs="+",
        default=["for_user", "also_bought", "trending", "popular", "recently_viewed"],
    )
    args = parser.parse_args()
    if args.load_into:  # child process: chDB keeps a data directory open per process
        print(json.dumps(load(args.load_into, args.dataset, merge=not args.no_merge)))
        return 0
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "bench"
        copy_project(REPO, project, ("sql", "migrations", "endpoints", "materialized_views"))
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--dataset",
                str(args.dataset),
                "--load-into",
                str(project),
                *(["--no-merge"] if args.no_merge else []),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        sys.stdout.write("\n".join(child.stdout.splitlines()[:-1]) + "\n")
        pools = json.loads(child.stdout.splitlines()[-1])
        env = {"REDPOLL_ADMIN_TOKEN": "bench", "REDPOLL_LOG_LEVEL": "warning"}
        rows = []
        with run_server(project, env=env, ready_timeout=120) as server:
            for name in args.endpoints:
                params = requests_for(name, pools, args.requests, rng)
                run(server.url, name, params[:50], 1)  # warm-up
                for conc in args.concurrency:
                    samples = sorted(run(server.url, name, params, conc))
                    p50 = statistics.median(samples) * 1000
                    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
                    target = TARGET_MS.get(name, 10.0)
                    rows.append((name, conc, len(samples), p50, p99, samples[-1] * 1000, target))
                    print(
                        f"{name:16s} concurrency {conc}: n={len(samples)} p50={p50:.1f} ms "
                        f"p99={p99:.1f} ms max={samples[-1] * 1000:.1f} ms "
                        f"(target p99 < {target:.0f} ms: {'ok' if p99 < target else 'MISSED'})",
                        flush=True,
                    )
    print("\n| endpoint | concurrency | requests | p50 ms | p99 ms | target p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, conc, n, p50, p99, _mx, target in rows:
        print(f"| {name} | {conc} | {n} | {p50:.1f} | {p99:.1f} | < {target:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
