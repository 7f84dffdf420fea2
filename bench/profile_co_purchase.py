"""Where one INSERT's time goes in `co_purchase_mv` (the view that limits ingest).

    .venv/bin/python bench/profile_co_purchase.py [--before 300000] [--batch 10000]

Replays the first `--before` Online Retail lines through `EventWriter` (all views on,
like bench_ingest_views.py), then copies the next `--batch` lines into a Memory table
shaped like `events_landing` and runs the view's own SELECT (read from
materialized_views/co_purchase.sql) on that copy, best of 3:

- the pairs before grouping and the grouped (item, other_item) rows,
- SELECT only (join + GROUP BY), the SELECT written into a Memory table, into an empty
  SummingMergeTree shaped like `co_purchase` (sorting + part writing), and with
  `max_threads=1` (how a view runs inside an INSERT),
- the full `EventWriter.insert` of the same block (all views).

Data: ../shared/data/online-retail (CC BY 4.0, Chen, Sain & Guo 2012).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from typing import Any

import clickhouse_connect
from bench_ingest_views import DATA, REPO, apply_migrations, load_events

from redpoll.ingest.writer import EventWriter

TARGET = "(item_id String, other_item_id String, pairs UInt64)"


def view_select(database: str, source: str) -> str:
    """The SELECT of `co_purchase_mv`, reading `source` instead of the landing table."""
    text = (REPO / "materialized_views" / "co_purchase.sql").read_text()
    view = text[text.index("co_purchase_mv {{ on_cluster }}") :]
    query = view[view.index("AS WITH") + 3 :].rstrip().rstrip(";")
    return query.replace("{{ database }}.events_landing", source).replace(
        "{{ database }}", database
    )


def best_of(
    client: Any,
    sql: str,
    settings: dict[str, Any] | None = None,
    setup: str | None = None,
    runs: int = 3,
) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        if setup:
            for statement in setup.split(";"):
                client.command(statement)
        started = time.perf_counter()
        result = client.command(sql, settings=settings or {})
        best = min(best, time.perf_counter() - started)
    return best * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    events = load_events(DATA, args.before + args.batch)
    with tempfile.TemporaryDirectory(prefix="redpoll-profile-") as tmp:
        client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/data")
        client.command("CREATE DATABASE bench")
        apply_migrations(client, "bench")
        client.command("SYSTEM STOP TTL MERGES bench.trending")
        writer = EventWriter(client, "bench", views=REPO)
        for start in range(0, args.before, 10_000):
            writer.insert(
                {k: v[start : min(start + 10_000, args.before)] for k, v in events.items()}
            )
        block = {k: v[args.before :] for k, v in events.items()}
        landing = {**block, "ts": [dt.datetime.fromtimestamp(t, dt.UTC) for t in block["ts"]]}
        client.command("CREATE TABLE bench.block AS bench.events_landing ENGINE = Memory")
        names = list(block)
        client.insert(
            "bench.block",
            [[*list(row), writer.last_batch + 1] for row in zip(*landing.values(), strict=True)],
            column_names=[*names, "batch"],
        )
        select = view_select("bench", "bench.block")
        body = select[select.rindex("SELECT item_id, other_item_id, count()") :]
        pairs = (
            select[: len(select) - len(body)]
            + "SELECT count() FROM ("
            + body[body.index("FROM\n(") + 5 : body.rindex("GROUP BY")]
            + ")"
        )
        fresh = "DROP TABLE IF EXISTS bench.target; CREATE TABLE bench.target {} ENGINE = {}"
        summing = fresh.format(TARGET, "SummingMergeTree(pairs) ORDER BY (item_id, other_item_id)")
        no_collapse = {"optimize_on_insert": 0}
        figures = {
            "pairs before grouping": best_of(client, pairs),
            "SELECT (join + GROUP BY), grouped rows": best_of(
                client, f"SELECT count() FROM ({select})"
            ),
            "SELECT into Memory": best_of(
                client, f"INSERT INTO bench.target {select}", setup=fresh.format(TARGET, "Memory")
            ),
            "SELECT into SummingMergeTree": best_of(
                client, f"INSERT INTO bench.target {select}", no_collapse, summing
            ),
            "same, max_threads=1 (as in a view)": best_of(
                client,
                f"INSERT INTO bench.target {select}",
                {**no_collapse, "max_threads": 1},
                summing,
            ),
        }
        started = time.perf_counter()
        writer.insert(block)
        figures["EventWriter.insert (all views)"] = ((time.perf_counter() - started) * 1000, None)
        client.close()
    print(f"one block of {args.batch:,} events after {args.before:,}:")
    for label, (ms, result) in figures.items():
        suffix = f" -> {int(result):,}" if isinstance(result, int | str) else ""
        print(f"  {label}: {ms:,.0f} ms{suffix}")


if __name__ == "__main__":
    main()
