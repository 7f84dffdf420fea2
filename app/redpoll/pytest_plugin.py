"""Pytest fixtures for testing a Redpoll project, registered as the `redpoll` plugin.

Installed with the package (entry point `pytest11` in pyproject.toml), so a project's
own tests get them with no import: Redpoll's suite uses them as well.

    def test_my_endpoint(redpoll_server):
        r = redpoll_server.client().get("/v0/pipes/also_bought.json?item_id=85123A")
        assert r.status_code == 200

| fixture | what |
|---|---|
| `redpoll_clickhouse_url` | session: `REDPOLL_TEST_CLICKHOUSE_URL`, else a session chDB directory |
| `redpoll_target` | a fresh, empty database in it (dropped after the test) |
| `redpoll_admin` | an admin client on that database |
| `redpoll_store` | a `Store` on that database with read pools (no lock, no migrations) |
| `redpoll_project` | a copy of the project under test, in a temporary folder (*) |
| `redpoll_server` | `redpoll serve` on that project (migrated, admin token `redpoll_admin_token`) |
| `redpoll_admin_sql` | the server's admin SQL API, shaped like a client (`.query(sql)`) |
| `redpoll_kafka` | a real Kafka-protocol broker (librdkafka's mock cluster) in a child process |

(*) the project is `REDPOLL_PROJECT_DIR`, else pytest's rootdir when it holds `sql/`, else
a new one (`redpoll init`).

chDB opens one data directory per process, so every in-process fixture shares the
session directory and isolates tests by database; servers run in child processes with
a data directory of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from redpoll.clickhouse.client import Client, Target, connect, parse_url, quote_identifier
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing import AdminSQL, RunningServer, copy_project, run_cli, run_server

if TYPE_CHECKING:
    from redpoll.testing_kafka import MockKafka

__all__ = (
    "redpoll_admin",
    "redpoll_admin_sql",
    "redpoll_admin_token",
    "redpoll_clickhouse_url",
    "redpoll_kafka",
    "redpoll_project",
    "redpoll_project_source",
    "redpoll_server",
    "redpoll_store",
    "redpoll_target",
)

URL_ENV = "REDPOLL_TEST_CLICKHOUSE_URL"


@pytest.fixture(scope="session")
def redpoll_clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get(URL_ENV)
    if url:
        return url
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture
def redpoll_target(redpoll_clickhouse_url: str) -> Iterator[Target]:
    database = f"t_{uuid.uuid4().hex[:12]}"
    target = parse_url(redpoll_clickhouse_url, database)
    admin = connect(target, create_database=True)
    try:
        yield target
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        admin.close()


@pytest.fixture
def redpoll_admin(redpoll_target: Target) -> Iterator[Client]:
    client = connect(redpoll_target)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redpoll_project_source(pytestconfig: pytest.Config) -> Path | None:
    """The project under test: `REDPOLL_PROJECT_DIR`, else pytest's rootdir when it holds
    `sql/`; None means a new project (`redpoll init`)."""
    given = os.environ.get("REDPOLL_PROJECT_DIR")
    if given:
        return Path(given).resolve()
    root = Path(pytestconfig.rootpath)
    return root if (root / "sql").is_dir() else None


@pytest.fixture
def redpoll_project(tmp_path: Path, redpoll_project_source: Path | None) -> Path:
    """A copy of the project under test in a folder of its own (its own embedded store)."""
    root = tmp_path / "project"
    if redpoll_project_source is None:
        result = run_cli(tmp_path, "init", str(root))
        if result.returncode != 0:
            raise RuntimeError(f"redpoll init failed: {result.stderr}")
        return root
    return copy_project(redpoll_project_source, root)


@pytest.fixture
def redpoll_store(
    redpoll_project: Path, redpoll_target: Target, redpoll_admin: Client
) -> Iterator[Store]:
    settings = load_settings({"project_dir": str(redpoll_project)}, environ={})
    store = Store.attach(settings, redpoll_target, redpoll_admin)
    yield store
    store.close_read_pools()


@pytest.fixture
def redpoll_admin_token() -> str:
    return f"test-admin-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redpoll_server(redpoll_project: Path, redpoll_admin_token: str) -> Iterator[RunningServer]:
    env = {"REDPOLL_ADMIN_TOKEN": redpoll_admin_token}
    migrated = run_cli(redpoll_project, "migrate", "up", env=env)
    if migrated.returncode != 0:
        raise RuntimeError(f"redpoll migrate up failed: {migrated.stderr}")
    with run_server(redpoll_project, env=env) as server:
        yield server


@pytest.fixture
def redpoll_admin_sql(redpoll_server: RunningServer, redpoll_admin_token: str) -> AdminSQL:
    return AdminSQL(redpoll_server.url, redpoll_admin_token)


@pytest.fixture(scope="session")
def redpoll_kafka() -> Iterator[MockKafka]:
    pytest.importorskip("confluent_kafka", reason="pip install redpoll[kafka]")
    from redpoll.testing_kafka import MockKafka

    with MockKafka() as kafka:
        yield kafka
