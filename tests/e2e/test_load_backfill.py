"""`redpoll load` (CSV, NDJSON, Parquet, gzip) and `redpoll backfill`, locally and through
a running server, with the repository's own data sources and views."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redpoll.testing import copy_project, run_cli, run_server
from tests.support.paths import REPO_ROOT

EVENTS = [
    {
        "event_id": f"e{i}",
        "ts": f"2026-11-0{1 + i % 3}T10:00:00Z",
        "user_id": f"u{i % 2}",
        "order_id": f"o{i % 4}",
        "item_id": f"i{i % 5}",
        "event_type": "purchase",
        "quantity": 1,
    }
    for i in range(20)
]


def sql(project: Path, query: str) -> list[str]:
    out = run_cli(project, "sql", query, "--format", "csv")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[1:]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    copy_project(REPO_ROOT, root, ("sql", "materialized_views", "migrations"))
    assert run_cli(root, "migrate", "up").returncode == 0
    return root


def test_load_formats_quarantine_and_dedup(project: Path, tmp_path: Path) -> None:
    ndjson = tmp_path / "a.ndjson.gz"
    ndjson.write_bytes(
        gzip.compress(("\n".join(json.dumps(e) for e in EVENTS[:10]) + "\n{broken\n").encode())
    )
    out = run_cli(project, "load", "events", str(ndjson))
    assert out.returncode == 0, out.stderr
    assert "10 rows loaded into events, 1 quarantined" in out.stdout

    csv_path = tmp_path / "b.csv"
    header = "event_id,ts,user_id,order_id,item_id,event_type,quantity"
    lines = [header] + [",".join(str(e[k]) for k in header.split(",")) for e in EVENTS[5:15]]
    csv_path.write_text("\n".join([*lines, "x1,2026-11-01T00:00:00Z,u,o,i,view,lots"]) + "\n")
    out = run_cli(project, "load", "events", str(csv_path))
    assert "10 rows loaded into events, 1 quarantined" in out.stdout  # e5..e9 are replays

    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(EVENTS[15:]), parquet)
    out = run_cli(project, "load", "events", str(parquet))
    assert "5 rows loaded into events" in out.stdout

    assert sql(project, "SELECT count() FROM events") == ["20"]
    assert sql(project, "SELECT count() FROM events_quarantine") == ["2"]
    assert sql(project, "SELECT line, column FROM events_quarantine ORDER BY ALL") == [
        '11,""',
        '12,"quantity"',
    ]  # file line numbers (CSV: header is line 1)


def test_backfill_through_running_server_restores_a_view(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "e.ndjson"
    data.write_text("\n".join(json.dumps(e) for e in EVENTS))
    assert run_cli(project, "load", "events", str(data)).returncode == 0
    pairs = (
        "SELECT item_id, other_item_id, sum(buyers) AS n FROM buyer_pairs GROUP BY ALL "
        "HAVING n != 0 ORDER BY ALL"
    )
    before = sql(project, pairs)
    assert before

    with run_server(project):
        assert run_cli(project, "sql", "TRUNCATE TABLE buyer_pairs").returncode == 0
        assert sql(project, pairs) == []
        out = run_cli(project, "backfill", "buyer_pairs")
        assert out.returncode == 0, out.stderr
        assert "through the running server" in out.stderr
        assert sql(project, pairs) == before
        again = run_cli(project, "load", "events", str(data))  # replay via the server
        assert "20 rows loaded" in again.stdout
        assert sql(project, pairs) == before

    bad = run_cli(project, "backfill", "nope")
    assert bad.returncode == 2 and "Invalid value" in bad.stderr


def test_load_of_a_missing_file_is_one_line_naming_it(project: Path, tmp_path: Path) -> None:
    for missing in ("/missing.csv", str(tmp_path / "gone" / "events.ndjson.gz")):
        out = run_cli(project, "load", "events", missing)
        assert out.returncode == 1
        assert out.stdout == ""
        assert out.stderr.splitlines() == [
            f"error: cannot read {missing}: No such file or directory"
        ], out.stderr
