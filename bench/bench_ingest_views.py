"""Replay UCI Online Retail through `EventWriter` with all real-time views on.

Each invoice line becomes one event: event_id = InvoiceNo + ':' + line number in the file,
user_id = CustomerID ('' when empty), order_id = InvoiceNo, item_id = StockCode,
ts = InvoiceDate (taken as UTC), quantity, price = UnitPrice; invoices starting with 'C'
become `return` events, all others `purchase`. Rows are replayed in time order in
fixed-size batches into a temporary chDB directory (no HTTP).

    .venv/bin/python bench/bench_ingest_views.py [--batch 10000] [--limit N]
        [--shuffle] [--dup-rate 0.1] [--verify] [--window-days D] [--stop-merges]
        [--without 0006_basket_pairs.sql --without 0007_trending_daily.sql]

Prints sustained events/s, the process CPU time, per-insert latency p50/p99 and the
size of co_purchase. `--without FILE` leaves one view migration out (what a view costs).
The trending TTL (90 days) would delete the 2010-2011 rows in merges, so TTL merges are
stopped for the run. Data: CC BY 4.0, Chen, Sain & Guo (2012), see its README.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import clickhouse_connect
import jinja2

from redpoll.ingest.writer import EventWriter, backfill_queries
from redpoll.materialized import load_views
from redpoll.migrations.files import discover

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
#: every migration of the repository, in order (a view added there is benchmarked too)
MIGRATIONS = tuple(m.filename for m in discover(REPO / "migrations"))


def apply_migrations(
    client: object, database: str, window_days: float | None = None, without: tuple = ()
) -> None:
    """The repo's migrations; `window_days` replaces co_purchase's 30-day window."""
    for name in MIGRATIONS:
        if name in without:
            continue
        text = jinja2.Template((REPO / "migrations" / name).read_text()).render(
            database=database, on_cluster=""
        )
        if window_days is not None:
            text = text.replace("2592000000", str(int(window_days * 86_400_000)))
        for statement in text.split(";\n"):
            body = "\n".join(
                line for line in statement.splitlines() if not line.strip().startswith("--")
            )
            if body.strip():
                client.command(body)  # type: ignore[attr-defined]


def load_events(path: Path, limit: int | None) -> dict[str, list]:
    cols: dict[str, list] = {
        k: []
        for k in (
            "event_id",
            "ts",
            "user_id",
            "order_id",
            "item_id",
            "event_type",
            "quantity",
            "price",
        )
    }
    epoch = dt.datetime(1970, 1, 1)
    with gzip.open(path, "rt", newline="") as handle:
        for line_no, row in enumerate(csv.DictReader(handle), start=1):
            invoice = row["InvoiceNo"]
            cols["event_id"].append(f"{invoice}:{line_no}")
            ts = dt.datetime.strptime(row["InvoiceDate"], "%Y-%m-%d %H:%M:%S")
            cols["ts"].append((ts - epoch) // dt.timedelta(milliseconds=1) / 1000)
            customer = row["CustomerID"]
            cols["user_id"].append(customer.split(".")[0] if customer else "")
            cols["order_id"].append(invoice)
            cols["item_id"].append(row["StockCode"])
            cols["event_type"].append("return" if invoice.startswith("C") else "purchase")
            cols["quantity"].append(int(row["Quantity"]))
            cols["price"].append(float(row["UnitPrice"]))
            if limit and line_no >= limit:
                break
    order = sorted(range(len(cols["ts"])), key=cols["ts"].__getitem__)  # stable: time order
    return {k: [v[i] for i in order] for k, v in cols.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=None, help="first N lines only")
    parser.add_argument("--csv", type=Path, default=DATA)
    parser.add_argument("--shuffle", action="store_true", help="random arrival order")
    parser.add_argument(
        "--dup-rate",
        type=float,
        default=0.0,
        help="fraction of events redelivered once more at a random position",
    )
    parser.add_argument(
        "--window-days",
        type=float,
        default=None,
        help="co_purchase window W instead of the migrations' 30 days",
    )
    parser.add_argument(
        "--stop-merges",
        action="store_true",
        help="no background merges of co_purchase (its insert cost alone)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare co_purchase with a batch recomputation from events",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=MIGRATIONS[1:],
        metavar="MIGRATION",
        help="leave out this view migration",
    )
    args = parser.parse_args(argv)

    events = load_events(args.csv, args.limit)
    if args.shuffle or args.dup_rate:
        rng = random.Random(42)
        n = len(events["event_id"])
        order = list(range(n)) + rng.sample(range(n), int(n * args.dup_rate))
        if args.shuffle:
            rng.shuffle(order)
        else:
            order.sort()
        events = {k: [v[i] for i in order] for k, v in events.items()}
    total = len(events["event_id"])
    with tempfile.TemporaryDirectory(prefix="redpoll-bench-") as tmp:
        client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/data")
        client.command("CREATE DATABASE IF NOT EXISTS bench")
        apply_migrations(client, "bench", args.window_days, tuple(args.without))
        if "0004_trending.sql" not in args.without:
            client.command("SYSTEM STOP TTL MERGES bench.trending")
        if args.stop_merges:
            client.command("SYSTEM STOP MERGES bench.co_purchase")
        writer = EventWriter(client, "bench", views=load_views(REPO))
        latencies: list[float] = []
        cpu_started = time.process_time()
        started = time.perf_counter()
        for start in range(0, total, args.batch):
            chunk = {k: v[start : start + args.batch] for k, v in events.items()}
            t0 = time.perf_counter()
            writer.insert(chunk)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        tables = set(client.query("SHOW TABLES FROM bench").result_columns[0])
        counts = {
            table: client.command(f"SELECT count() FROM bench.{table}")
            for table in ("events", "co_purchase_history", "user_history", "trending")
            if table in tables
        }
        pairs = (
            client.query(
                "SELECT count(), sum(pairs) FROM "
                "(SELECT item_id, other_item_id, sum(pairs) AS pairs FROM bench.co_purchase "
                "GROUP BY item_id, other_item_id)"
            ).result_rows[0]
            if "co_purchase" in tables
            else None
        )
        mismatches = verify(client, args.window_days) if args.verify else None
        client.close()

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"events: {total:,} in {len(latencies)} inserts of {args.batch:,}")
    print(f"sustained: {total / elapsed:,.0f} events/s ({elapsed:.1f} s wall)")
    print(f"process CPU: {cpu:.1f} s (chDB runs in-process; includes background merges)")
    print(
        f"insert latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    if pairs is not None:
        print(f"co_purchase: {pairs[0]:,} (item, other_item) rows, {pairs[1]:,} pair counts")
    print(
        "stored rows (before background collapsing): "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    if mismatches is not None:
        print(f"verify: {mismatches} (item, other_item) counts differ from the batch recomputation")
        return 1 if mismatches else 0
    return 0


def verify(client: object, window_days: float | None = None) -> int:
    """Recompute co_purchase from `events` into a scratch table and count differences."""
    run = client.command  # type: ignore[attr-defined]
    run("CREATE TABLE bench.co_purchase_check AS bench.co_purchase")
    recompute = backfill_queries("bench", "co_purchase", load_views(REPO))[-1]
    if window_days is not None:
        recompute = recompute.replace("2592000000", str(int(window_days * 86_400_000)))
    run(recompute.replace("INTO bench.co_purchase ", "INTO bench.co_purchase_check "))
    grouped = "SELECT item_id, other_item_id, sum(pairs) FROM bench.{} GROUP BY ALL"
    return int(
        run(
            f"SELECT count() FROM (({grouped.format('co_purchase')} EXCEPT "
            f"{grouped.format('co_purchase_check')}) UNION ALL ("
            f"{grouped.format('co_purchase_check')} EXCEPT {grouped.format('co_purchase')}))"
        )
    )


if __name__ == "__main__":
    sys.exit(main())
