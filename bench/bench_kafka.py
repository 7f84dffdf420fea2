"""Kafka -> events/views through Redpoll's consumer: throughput and freshness.

    .venv/bin/python bench/bench_kafka.py [--events 300000] [--rate 20000] [--seconds 10]
        [--online-retail [PATH]]

Broker: librdkafka's mock cluster in a child process (`redpoll.testing_kafka`), a topic
with 32 partitions (the mock keeps only ~5 MB per partition). Store: embedded chDB in a
temporary project with the repo's sql/ and migrations/ (all real-time views), binding
`kafka/events.toml` (batch_rows 50000, batch_ms 200).

Phase 1 (throughput): `--events` events are produced first, then one consumer
(`KafkaIngestor`, the code `redpoll serve` runs) is started; events/s = events / time
until every message is inserted (events table + all views) and its offset committed.
With `--online-retail`, phase 1 replays ../shared/data/online-retail (541,909 invoice lines,
time order) instead of the synthetic stream: its dense co-purchase pairs (~200 per event)
make the `co_purchase` view, not Kafka, the limit (see bench_ingest_views.py).
Phase 2 (freshness): the consumer runs while a producer sends `--rate` events/s for
`--seconds`; for each event, freshness = time its insert returned (it is then in
`events` and in every view) - time it was handed to the producer. Prints p50/p99/max.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from redpoll.ingest.service import IngestService
from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.consumer import KafkaIngestor
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing import copy_project
from redpoll.testing_kafka import MockKafka

REPO = Path(__file__).resolve().parent.parent
ONLINE_RETAIL = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"


def event(i: int, rnd: random.Random, prefix: str) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}{i}",
        "ts": int(time.time() * 1000) - rnd.randrange(0, 20 * 86_400_000),
        "user_id": f"u{rnd.randrange(20_000)}" if rnd.random() < 0.8 else "",
        "order_id": f"o{rnd.randrange(50_000)}",
        "item_id": f"i{rnd.randrange(4_000)}",
        "event_type": rnd.choices(["view", "cart", "purchase"], [70, 15, 15])[0],
        "quantity": rnd.randrange(1, 4),
        "price": round(rnd.uniform(1, 50), 2),
    }


def kafka_retained(bootstrap: str, topic: str, partitions: int) -> int:
    """Messages the broker still holds (high - low watermark, summed over partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        total = 0
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    # the mock broker keeps only ~5 MB / 100k messages per partition and drops the oldest
    # beyond that: a big backlog needs many, evenly filled partitions
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument(
        "--online-retail",
        type=Path,
        nargs="?",
        const=ONLINE_RETAIL,
        help="phase 1 replays this Online Retail file (default: ../shared)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    project = tmp / "shop"
    copy_project(REPO, project, ("sql", "materialized_views", "migrations"))
    (project / "kafka").mkdir()
    (project / "kafka" / "events.toml").write_text(
        'topic = "events"\ngroup = "bench"\nbatch_rows = 50000\nbatch_ms = 200\n'
    )
    settings = load_settings({"project_dir": str(project)}, environ={})
    rnd = random.Random(42)
    try:
        with MockKafka() as kafka, Store.open(settings, "bench_kafka") as store:
            kafka.create_topic("events", args.partitions)
            store.migrations().up()
            service = IngestService(store.new_client, store.target.database, project)
            binding = load_bindings(project)["events"]
            producer = Producer(
                {
                    "bootstrap.servers": kafka.bootstrap,
                    "linger.ms": 5,
                    # spread messages evenly (the default sticky partitioner fills one
                    # partition for 10 ms at a time, overflowing the mock's retention)
                    "sticky.partitioning.linger.ms": 0,
                    "queue.buffering.max.messages": 2_000_000,
                }
            )

            # ---- phase 1: backlog throughput
            if args.online_retail:
                from redpoll.datasets.online_retail import read_events

                backlog = [json.dumps(e).encode() for e in read_events(args.online_retail)]
                args.events = len(backlog)
            else:
                backlog = [json.dumps(event(i, rnd, "a")).encode() for i in range(args.events)]
            started = time.perf_counter()
            for i, message in enumerate(backlog):
                producer.produce("events", message)
                if i % 20_000 == 0:
                    producer.poll(0)
            producer.flush()
            print(f"produced {args.events} events in {time.perf_counter() - started:.1f}s")
            ingestor = KafkaIngestor(service, binding, kafka.bootstrap)
            started = time.perf_counter()
            ingestor.start()
            last_report = time.perf_counter()
            first_message = None
            caught_up_since = None
            while ingestor.stats.messages < args.events or ingestor.status()["lag"] > 0:
                time.sleep(0.02)
                # The mock broker keeps ~5 MB per partition and drops the oldest messages
                # beyond that: stop once the group has caught up and stays caught up.
                if ingestor.status()["lag"] == 0 and ingestor.stats.messages:
                    caught_up_since = caught_up_since or time.perf_counter()
                    if time.perf_counter() - caught_up_since > 5:
                        break
                else:
                    caught_up_since = None
                if first_message is None and ingestor.stats.messages:
                    first_message = time.perf_counter()
                if time.perf_counter() - last_report > 10:
                    last_report = time.perf_counter()
                    status = ingestor.status()
                    print(
                        f"  ... {status['messages']} consumed, lag {status['lag']}, "
                        f"state {status['state']}, last error {status['last_error']!r}"
                    )
            done = time.perf_counter()
            consumed = ingestor.stats.messages
            stored = store.admin.command("SELECT count() FROM events")
            if consumed < args.events:
                done = caught_up_since or done  # not the 5 s that confirmed it
                retained = kafka_retained(kafka.bootstrap, "events", args.partitions)
                print(
                    f"  consumed {consumed} of {args.events} produced; the broker retains "
                    f"{retained} (the mock dropped {args.events - retained})"
                )
            elapsed = done - started
            sustained = done - (first_message or started)
            print(
                f"phase 1: {consumed} events topic -> events + views in {elapsed:.2f}s "
                f"= {consumed / elapsed:,.0f} events/s incl. the consumer-group join; "
                f"{consumed / sustained:,.0f} events/s from the first message "
                f"(target 50,000); {ingestor.stats.batches} batches, stored {stored}"
            )

            # ---- phase 2: freshness under a steady rate
            sent: dict[str, float] = {}
            visible: dict[str, float] = {}
            original = service.ingest_batch

            def timed(datasource: Any, batch: Any, **kwargs: Any) -> Any:
                result = original(datasource, batch, **kwargs)
                now = time.perf_counter()
                for event_id in batch.columns["event_id"]:
                    visible.setdefault(event_id, now)
                return result

            service.ingest_batch = timed  # type: ignore[method-assign]
            total = int(args.rate * args.seconds)
            t0 = time.perf_counter()
            for i in range(total):
                due = t0 + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                event_id = f"b{i}"
                producer.produce("events", json.dumps(event(i, rnd, "b")).encode())
                sent[event_id] = time.perf_counter()
                if i % 500 == 0:
                    producer.poll(0)
            producer.flush()
            achieved = total / (time.perf_counter() - t0)
            deadline = time.perf_counter() + 60
            while len(visible) < total and time.perf_counter() < deadline:
                time.sleep(0.05)
            lat = [visible[k] - t for k, t in sent.items() if k in visible]
            print(
                f"phase 2: {total} events at {achieved:,.0f}/s offered; visible {len(lat)}; "
                f"freshness p50 {statistics.median(lat) * 1000:.0f} ms, "
                f"p99 {pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
            )
            ingestor.stop()
            service.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
