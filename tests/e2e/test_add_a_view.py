"""An analyst adds a view that is not in the repository, with commands only (docs/views.md):
add the file -> `migrate new --from-views` -> `migrate up` -> `backfill` -> an endpoint."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

import yaml

from redpoll.materialized import load_views
from redpoll.testing import copy_project, run_cli
from tests.support.paths import REPO_ROOT

#: distinct buyers per item; no recompute block: its SELECT reads only `events`, so
#: backfill derives the recomputation from it
BUYERS_VIEW = """\
-- Materialized view `buyers_per_item`: how many distinct users bought each item.
-- Read it as SELECT item_id, uniqExactMerge(buyers) FROM buyers_per_item GROUP BY item_id.

CREATE TABLE IF NOT EXISTS {{ database }}.buyers_per_item {{ on_cluster }}
(
    item_id String,
    buyers AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY item_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.buyers_per_item_mv {{ on_cluster }}
TO {{ database }}.buyers_per_item
AS SELECT item_id, uniqExactState(user_id) AS buyers
FROM {{ database }}.events
WHERE event_type = 'purchase' AND user_id != ''
GROUP BY item_id;
"""

BUYERS_ENDPOINT = """\
-- Items with the most distinct buyers.
%
SELECT item_id, toUInt32(uniqExactMerge(buyers)) AS buyers
FROM buyers_per_item
GROUP BY item_id
ORDER BY buyers DESC, item_id
LIMIT {{ Int32(limit, 100, min=1, max=1000) }}
"""


def events(seed: int, n: int) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    return [
        {
            "event_id": f"s{seed}-{i}",
            "ts": f"2026-11-{1 + rnd.randrange(28):02d}T{rnd.randrange(24):02d}:00:00Z",
            "user_id": rnd.choice(["", "u1", "u2", "u3", "u4", "u5"]),
            "order_id": f"o{rnd.randrange(10)}",
            "item_id": f"i{rnd.randrange(6)}",
            "event_type": rnd.choice(["purchase", "purchase", "view"]),
            "quantity": 1,
        }
        for i in range(n)
    ]


def write_ndjson(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ok(project: Path, *args: str) -> str:
    out = run_cli(project, *args)
    assert out.returncode == 0, f"redpoll {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def buyers_of(rows: list[dict[str, object]]) -> dict[str, int]:
    """The view's definition in plain Python: distinct buyers per item."""
    buyers: dict[str, set[str]] = defaultdict(set)
    for e in rows:
        if e["event_type"] == "purchase" and e["user_id"]:
            buyers[str(e["item_id"])].add(str(e["user_id"]))
    return {item: len(users) for item, users in buyers.items()}


def table(project: Path) -> dict[str, int]:
    query = "SELECT item_id, uniqExactMerge(buyers) FROM buyers_per_item GROUP BY item_id"
    lines = ok(project, "sql", query, "--format", "csv").splitlines()[1:]
    return {item.strip('"'): int(n) for item, n in (line.split(",") for line in lines)}


def test_an_analyst_adds_a_view_with_commands_only(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"))
    (project / "endpoints" / "tests").mkdir(parents=True)
    before = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (project / "migrations").iterdir()
    }
    ok(project, "migrate", "up")
    first, later = events(1, 60), events(2, 40)
    ok(project, "load", "events", str(write_ndjson(tmp_path / "a.ndjson", first)))

    # 1. the file: nothing else is written by hand, no Python changes
    (project / "materialized_views" / "buyers_per_item.sql").write_text(BUYERS_VIEW)
    assert "buyers_per_item" in load_views(project).names  # what the writer rebuilds
    drift = run_cli(project, "migrate", "check")
    assert drift.returncode == 1
    assert "buyers_per_item is defined in materialized_views/buyers_per_item.sql" in drift.stderr

    # 2. the migration, generated; the existing ones are untouched
    next_version = max(int(p.name[:4]) for p in (project / "migrations").glob("*.sql")) + 1
    generated = Path(ok(project, "migrate", "new", "--from-views").strip())
    assert generated.name == f"{next_version:04d}_buyers_per_item.sql"
    text = generated.read_text()
    assert "CREATE TABLE IF NOT EXISTS {{ database }}.buyers_per_item {{ on_cluster }}" in text
    assert "buyers_per_item_mv" in text and "co_purchase" not in text
    assert {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (project / "migrations").iterdir()
        if p != generated
    } == before
    assert "nothing to generate" in ok(project, "migrate", "new", "--from-views")

    # 3. applied: no drift left
    ok(project, "migrate", "up")
    assert "no drift" in ok(project, "migrate", "check")

    # 4. new events reach it at once; the older ones through the backfill
    ok(project, "load", "events", str(write_ndjson(tmp_path / "b.ndjson", later)))
    assert table(project) == buyers_of(later)
    assert "buyers_per_item rebuilt" in ok(project, "backfill", "buyers_per_item")
    assert table(project) == buyers_of(first + later)
    rebuilt = ok(project, "backfill", "--all").splitlines()
    assert [line.split()[0] for line in rebuilt] == list(load_views(project).names)

    # 5. an endpoint on it answers what plain Python computes from the events
    expected = sorted(
        ({"item_id": item, "buyers": n} for item, n in buyers_of(first + later).items()),
        key=lambda r: (-int(r["buyers"]), r["item_id"]),
    )
    (project / "endpoints" / "buyers.sql").write_text(BUYERS_ENDPOINT)
    (project / "endpoints" / "tests" / "buyers.yaml").write_text(
        yaml.safe_dump([{"name": "distinct buyers per item", "expected_rows": expected}])
    )
    assert "1/1 passed" in ok(project, "endpoints", "test", "buyers")
