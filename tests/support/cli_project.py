"""The project of the CLI end-to-end tests (tests/e2e/test_cli_auth.py, test_cli_tokens.py):
the repository's data sources, views and migrations, migrated, plus one endpoint
(`purchases`) with a fixture that holds for `EVENTS`."""

from __future__ import annotations

import json
from pathlib import Path

from redpoll.testing import copy_project, run_cli
from tests.support.paths import REPO_ROOT

#: Five purchases by one user: three of item i0, two of i1 (what FIXTURE expects).
EVENTS = [
    {
        "event_id": f"e{i}",
        "ts": "2026-11-01T10:00:00Z",
        "user_id": "u1",
        "order_id": f"o{i}",
        "item_id": f"i{i % 2}",
        "event_type": "purchase",
        "quantity": 1,
    }
    for i in range(5)
]
ENDPOINT = """-- Purchases per item (a fixture for this test).
SELECT item_id, count() AS purchases
FROM events
WHERE event_type = 'purchase'
GROUP BY item_id
ORDER BY item_id
"""
FIXTURE = """- name: counts
  params: {}
  expected_rows:
    - {item_id: i0, purchases: "3"}
    - {item_id: i1, purchases: "2"}
"""


def purchases_project(parent: Path) -> Path:
    """`parent`/shop: the project, migrated (`redpoll migrate up`)."""
    root = parent / "shop"
    root.mkdir()
    copy_project(REPO_ROOT, root, ("sql", "materialized_views", "migrations"))
    (root / "endpoints" / "tests").mkdir(parents=True)
    (root / "endpoints" / "purchases.sql").write_text(ENDPOINT)
    (root / "endpoints" / "tests" / "purchases.yaml").write_text(FIXTURE)
    out = run_cli(root, "migrate", "up")
    assert out.returncode == 0, out.stderr
    return root


def write_events(path: Path) -> Path:
    """`EVENTS` as NDJSON at `path`."""
    path.write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n")
    return path
