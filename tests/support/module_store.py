"""A store in a fresh database that lives as long as a module-scoped fixture wants it.

The function-scoped `store` of tests/conftest.py gives each test an empty database; tests
that only read, or whose writes do not disturb one another (e.g. the route x scope table
of tests/api/test_access_control.py), share one migrated store and app per module instead
of migrating the project again for every case.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redpoll.clickhouse.client import connect, parse_url, quote_identifier
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN


@contextlib.contextmanager
def module_store(
    clickhouse_url: str, project_dir: Path, **overrides: Any
) -> Iterator[tuple[Settings, Store]]:
    """Settings for `project_dir` (ADMIN_TOKEN, `overrides`) and a store on a new database
    of `clickhouse_url` (the session's, `redpoll_clickhouse_url`); dropped on exit."""
    for folder in ["sql", "materialized_views", "endpoints", "migrations"]:
        (project_dir / folder).mkdir(parents=True, exist_ok=True)
    target = parse_url(clickhouse_url, f"t_{uuid.uuid4().hex[:12]}")
    admin = connect(target, create_database=True)
    values = {"project_dir": str(project_dir), "admin_token": ADMIN_TOKEN, **overrides}
    settings = load_settings(values, environ={})
    store = Store.attach(settings, target, admin)
    try:
        yield settings, store
    finally:
        store.close_read_pools()
        admin.command(f"DROP DATABASE IF EXISTS {quote_identifier(target.database)}")
        admin.close()
