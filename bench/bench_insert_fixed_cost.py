"""The fixed cost of one INSERT into `events`, and what each materialized view adds to it.

    .venv/bin/python bench/bench_insert_fixed_cost.py [--preload 100000] [--reps 15]

Why: issue 16's throughput and freshness targets both hang on how much an INSERT costs
whatever its size (README, "Ingest throughput"). Here, in-process (no HTTP), a chDB
store with this repository's migrations is loaded with the first `--preload` events of
Online Retail (10,000-event INSERTs through `EventWriter`), then the median time of a
1-event and of a 200-event INSERT is measured with every view, and again after each
materialized view is dropped in turn (all but `events_mv`, which stores the events).
The drop of a view shows what it cost; the 1-event figure is the fixed part. Background
merges are stopped during the measurement so that every step sees the same parts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import clickhouse_connect
from http_replay import DATA, REPO

from redpoll.datasets.online_retail import read_events
from redpoll.ingest.writer import EventWriter
from redpoll.materialized import load_views
from redpoll.migrations.runner import MigrationRunner

COLUMNS = ("event_id", "ts", "user_id", "item_id", "event_type", "order_id", "quantity", "price")


def columns(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out = {name: [e[name] for e in events] for name in COLUMNS}
    out["ts"] = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC) for ms in out["ts"]]
    return out


class Timer:
    """Median INSERT times of fresh events (the next ones of the data set each time)."""

    def __init__(self, writer: EventWriter, events: list[dict[str, Any]], start: int) -> None:
        self.writer, self.events, self.next = writer, events, start

    def median_ms(self, size: int, reps: int) -> float:
        times = []
        for _ in range(reps):
            chunk = self.events[self.next : self.next + size]
            self.next += size
            started = time.perf_counter()
            self.writer.insert(columns(chunk))
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DATA)
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    events = read_events(args.csv, args.preload + 20 * args.reps * 201)
    with tempfile.TemporaryDirectory(prefix="redpoll-fixed-") as tmp:
        client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/data")
        client.command("CREATE DATABASE bench")
        MigrationRunner(client, REPO / "migrations", "bench").up()
        writer = EventWriter(client, "bench", views=load_views(REPO))
        for start in range(0, args.preload, 10_000):
            writer.insert(columns(events[start : min(start + 10_000, args.preload)]))
        client.command("SYSTEM STOP MERGES")
        views = client.query(
            "SELECT name FROM system.tables WHERE database = 'bench'"
            " AND engine = 'MaterializedView' AND name != 'events_mv' ORDER BY name"
        ).result_columns[0]
        timer = Timer(writer, events, args.preload)
        one, batch = timer.median_ms(1, args.reps), timer.median_ms(200, args.reps)
        print(f"{args.preload:,} events preloaded; median of {args.reps} INSERTs each\n")
        print("| views | 1 event | 200 events | dropping the view saved (1 / 200) |")
        print("|---|---:|---:|---|")
        print(f"| all {len(views) + 1} | {one:.1f} ms | {batch:.1f} ms | |")
        for view in views:
            client.command(f"DROP VIEW bench.{view}")
            one_now, batch_now = timer.median_ms(1, args.reps), timer.median_ms(200, args.reps)
            print(
                f"| without {view} and those above | {one_now:.1f} ms | {batch_now:.1f} ms | "
                f"{one - one_now:+.1f} / {batch - batch_now:+.1f} ms |"
            )
            one, batch = one_now, batch_now
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
