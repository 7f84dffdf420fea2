"""`redpoll erase user|item` on the embedded store (no server) and through a running
server (cli/_backend.py: the admin route, then its job), as an operator runs them.

Afterwards the stored events are exactly those loaded minus the erased user's and item's,
every view fed by `events` equals the Python oracle computed from them
(tests/support/views.py), `items_latest` equals `items FINAL`, and both erasures are in
`datasources_ops_log`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from redpoll.testing import AdminSQL, run_cli, run_server
from tests.support.checksums import synthetic_events, synthetic_items, write_ndjson
from tests.support.cli_project import purchases_project
from tests.support.views import observed, oracle


def test_erase_user_locally_then_item_through_the_server(tmp_path: Path) -> None:
    project = purchases_project(tmp_path)
    events = synthetic_events(80, seed=11)
    items = synthetic_items(30)
    for name, rows in (("events", events), ("items", items)):
        loaded = run_cli(
            project, "load", name, str(write_ndjson(tmp_path / f"{name}.ndjson", rows))
        )
        assert loaded.returncode == 0, loaded.stderr

    refused = run_cli(project, "erase", "user", "u2")  # no --yes, no terminal: aborted
    assert refused.returncode != 0
    local = run_cli(project, "erase", "user", "u2", "--yes")
    assert local.returncode == 0, local.stderr
    gone_user = sum(e["user_id"] == "u2" for e in events)
    assert f"events {gone_user}" in local.stdout

    with run_server(project) as server:
        remote = run_cli(project, "erase", "item", "i7", "--yes")
        assert remote.returncode == 0, remote.stderr
        assert "through the running server" in remote.stderr and "items 1" in remote.stdout
        sql = AdminSQL(server.url, server.token)
        kept = [e for e in events if e["user_id"] != "u2" and e["item_id"] != "i7"]
        stored = sql.rows(
            "SELECT event_id, toUnixTimestamp64Milli(ts) AS ts, user_id, session_id, order_id,"
            " item_id, event_type, quantity FROM events"
        )
        assert {e["event_id"] for e in stored} == {e["event_id"] for e in kept}
        for row in stored:  # JSON numbers of 64-bit types arrive as strings
            row["ts"], row["quantity"] = int(row["ts"]), int(row["quantity"])
        database = sql.rows("SELECT currentDatabase() AS db")[0]["db"]
        assert observed(sql, database) == oracle(stored)  # type: ignore[arg-type]
        latest = sql.rows("SELECT item_id FROM items_latest ORDER BY item_id")
        final = sql.rows("SELECT item_id FROM items FINAL ORDER BY item_id")
        assert latest == final and {"item_id": "i7"} not in latest
        deadline = time.monotonic() + 5
        while True:
            logged = sql.rows(
                "SELECT datasource, rows FROM datasources_ops_log WHERE operation = 'erase'"
            )
            if len(logged) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {"datasource": "items", "rows": 1} in logged, json.dumps(logged)
        assert {"datasource": "events", "rows": gone_user} in logged, json.dumps(logged)
