"""Bytes on disk per event, per table, with every view: the storage input of
docs/capacity.md (what one shard stores for its share of the events).

    .venv/bin/python bench/bench_storage.py [--limit N] [--batch 50000]

Online Retail (../shared/data/online-retail, 541,909 invoice lines, time order, shifted to
end an hour ago so that trending's 90-day TTL keeps everything) is inserted through the
EventWriter in `--batch`-event INSERTs into a fresh embedded store with the repository's
migrations; then `events` is merged (OPTIMIZE FINAL) and the active parts of every
table are summed. Also prints events/s of the load (one writer, one shard's pipeline).
EmbeddedRocksDB (`event_ids`) keeps no parts: its directory size is printed apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redpoll.clickhouse.client import connect, parse_url  # noqa: E402
from redpoll.datasets.online_retail import read_events  # noqa: E402
from redpoll.ingest.writer import EventWriter  # noqa: E402
from tests.support.views import VIEWS, apply_migrations  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
NAMES = ("event_id", "ts", "user_id", "order_id", "item_id", "event_type", "quantity", "price")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    events = read_events(DATA, limit=args.limit)
    shift = int(time.time() * 1000) - max(e["ts"] for e in events) - 3_600_000
    data_dir = Path(tempfile.mkdtemp(prefix="storage-"))
    try:
        client = connect(parse_url(f"chdb://{data_dir}", "probe"), create_database=True)
        apply_migrations(client, "probe")
        writer = EventWriter(client, "probe", views=VIEWS)
        started = time.perf_counter()
        for i in range(0, len(events), args.batch):
            chunk = events[i : i + args.batch]
            columns = {n: [e.get(n) for e in chunk] for n in NAMES}
            columns["ts"] = [
                dt.datetime.fromtimestamp((e["ts"] + shift) / 1000, dt.UTC) for e in chunk
            ]
            writer.insert(columns)
        seconds = time.perf_counter() - started
        print(f"{len(events):,} events in {seconds:.1f} s: {len(events) / seconds:,.0f} events/s")
        client.command("OPTIMIZE TABLE probe.events FINAL")
        rows = client.query(
            "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts"
            " WHERE database = 'probe' AND active GROUP BY table ORDER BY 3 DESC"
        ).result_rows
        total = 0
        print("| table | rows | MiB on disk | bytes per event |\n|---|---:|---:|---:|")
        for table, count, size in rows:
            total += int(size)
            print(f"| {table} | {count:,} | {size / 2**20:.1f} | {size / len(events):.1f} |")
        print(f"| all parts | | {total / 2**20:.1f} | {total / len(events):.1f} |")
        path = client.command(
            "SELECT data_paths[1] FROM system.tables"
            " WHERE database = 'probe' AND name = 'event_ids'"
        )
        rocks = sum(f.stat().st_size for f in Path(str(path)).rglob("*") if f.is_file())
        per_event = rocks / len(events)
        print(f"event_ids (EmbeddedRocksDB): {rocks / 2**20:.1f} MiB, {per_event:.1f} B/event")
        client.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
