"""Acknowledged means durable: kill -9 the server while clients are posting, restart it,
and check every acknowledged event is stored exactly once and the views are consistent,
with either `ack` mode (after the INSERT, or after the write-ahead log's fsync: then the
restart inserts what the log holds)."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from redpoll.testing import AdminSQL, copy_project, run_cli, run_server
from tests.support.paths import REPO_ROOT
from tests.support.views import oracle

TOKEN = "crash-test-token"
ENV = {"REDPOLL_ADMIN_TOKEN": TOKEN}


def admin_sql(url: str, query: str) -> list[dict[str, Any]]:
    return AdminSQL(url, TOKEN).rows(query)


def make_events(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    base = 1_700_000_000_000
    return [
        {
            "event_id": f"ev{seed}-{i}",
            "ts": base + rnd.randrange(0, 40 * 86_400_000),
            "user_id": f"u{rnd.randrange(8)}" if rnd.random() < 0.8 else "",
            "order_id": f"o{rnd.randrange(30)}",
            "item_id": f"i{rnd.randrange(15)}",
            "event_type": rnd.choice(["purchase", "purchase", "view", "cart"]),
            "quantity": 1,
        }
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("ack", ["visible", "durable"])
def test_kill_dash_9_loses_no_acknowledged_event(tmp_path: Path, ack: str) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"))
    assert run_cli(project, "migrate", "up").returncode == 0

    acked: list[dict] = []
    sent_any = threading.Event()
    lock = threading.Lock()

    env = {**ENV, "REDPOLL_ACK": ack}
    with run_server(project, env=env) as server:

        def client_loop(worker: int) -> None:
            with server.client(timeout=30) as http:
                for k in range(1000):
                    batch = make_events(40, seed=worker * 10_000 + k)
                    if k % 3 == 1:  # a client retry: the previous batch again
                        batch = make_events(40, seed=worker * 10_000 + k - 1)
                    body = "\n".join(json.dumps(e) for e in batch)
                    try:
                        r = http.post("/v0/events?name=events", content=body)
                    except httpx.HTTPError:
                        return  # server died: this request was not acknowledged
                    if r.status_code != 202:
                        return
                    with lock:
                        acked.extend(batch)
                    sent_any.set()

        workers = [threading.Thread(target=client_loop, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        assert sent_any.wait(60)
        while len(acked) < 2000:
            threading.Event().wait(0.05)
        server.kill9()
        for w in workers:
            w.join(60)

    with run_server(project, env=env) as server:
        rows = admin_sql(
            server.url,
            "SELECT event_id, toUnixTimestamp64Milli(ts) AS ts, "
            "user_id, order_id, item_id, event_type, quantity FROM events",
        )
        counts = {}
        for r in rows:
            counts[r["event_id"]] = counts.get(r["event_id"], 0) + 1
        assert all(c == 1 for c in counts.values()), "an event is stored twice"
        acked_ids = {e["event_id"] for e in acked}
        missing = acked_ids - set(counts)
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"

        for r in rows:
            r["ts"] = int(r["ts"])
            r["quantity"] = int(r["quantity"])
        expected = oracle(rows)["buyer_pairs"]
        got = {
            (r["item_id"], r["other_item_id"]): int(r["buyers"])
            for r in admin_sql(
                server.url,
                "SELECT item_id, other_item_id, sum(buyers) AS buyers FROM buyer_pairs "
                "GROUP BY item_id, other_item_id HAVING buyers != 0",
            )
        }
        assert got == expected
