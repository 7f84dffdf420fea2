"""What the HTTP ingest benches share (bench_http_ingest.py, bench_ingest_path.py): the
Online Retail events shifted to end now, encoded once as NDJSON request bodies, and the
server environment a benchmark client needs.

Data: ../shared/data/online-retail (CC BY 4.0, Chen, Sain & Guo 2012).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from redpoll.datasets.online_retail import read_events

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
TOKEN = "bench-token"
#: an admin token, and no per-IP or per-token rate limit (they would throttle the client)
ENV = {
    "REDPOLL_ADMIN_TOKEN": TOKEN,
    "REDPOLL_RATE_LIMIT_IP_RPS": "0",
    "REDPOLL_RATE_LIMIT_RPS": "0",
}
#: one request body: NDJSON, the event whose visibility is probed, the number of events
Body = tuple[bytes, dict[str, Any], int]


def replay_arguments(doc: str) -> argparse.ArgumentParser:
    """The options of a replay: --batch (events per request), --clients, --limit, --csv."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=DATA)
    return parser


def recent_events(csv: Path, limit: int | None) -> list[dict[str, Any]]:
    """The data set's events in time order, shifted so that the last one is now: the
    2010-2011 rows would otherwise fall out of trending's 90-day TTL."""
    events = read_events(csv, limit)
    shift = int(time.time() * 1000) - events[-1]["ts"]
    for event in events:
        event["ts"] += shift
    return events


def request_bodies(
    events: list[dict[str, Any]],
    batch: int,
    probe: Callable[[list[dict[str, Any]]], dict[str, Any]] = lambda chunk: chunk[-1],
) -> list[Body]:
    """`events` in requests of `batch`, encoded before any timing starts; `probe` picks
    each body's event to look for (its last one by default)."""
    encode = msgspec.json.Encoder().encode
    bodies = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        bodies.append((b"\n".join(encode(e) for e in chunk), probe(chunk), len(chunk)))
    return bodies


def pct(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
