"""Migrations rendered for a cluster (app/redpoll/cluster/ddl.py) against golden files.

For every file of migrations/ there are two goldens under tests/golden/migrations/:
`single/<file>` (what a single node runs: must stay what it is, byte for byte) and
`cluster/<file>` (ON CLUSTER, Replicated engines, Distributed twins). Every statement of
both must parse with sqlglot's ClickHouse dialect. No ClickHouse server runs here, so this
checks the text; tests/test_cluster_simulation.py checks the sharded behaviour.

After a deliberate change, or for a new migration: `REDPOLL_UPDATE_GOLDEN=1 .venv/bin/pytest
tests/test_cluster_ddl.py` rewrites the goldens; review them with `git diff`.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import sqlglot

from redpoll.cluster.ddl import (
    ClusterLayout,
    layout_for,
    render_cluster_statements,
    sharded_objects,
)
from redpoll.errors import MigrationError
from redpoll.migrations.files import (
    MigrationFile,
    Statement,
    discover,
    render_statements,
    template_variables,
)
from redpoll.migrations.runner import MigrationRunner
from tests.support.paths import REPO_ROOT

MIGRATIONS = discover(REPO_ROOT / "migrations")
GOLDEN = Path(__file__).parent / "golden" / "migrations"
UPDATE = os.environ.get("REDPOLL_UPDATE_GOLDEN") == "1"
DATABASE, CLUSTER = "redpoll", "redpoll"
LAYOUT = layout_for(MIGRATIONS, DATABASE, CLUSTER)


def _text(statements: list[Statement]) -> str:
    return "".join(f"-- statement {s.index} (line {s.line})\n{s.sql};\n\n" for s in statements)


def _renderings(migration: MigrationFile) -> dict[str, list[Statement]]:
    return {
        "single": render_statements(migration, template_variables(DATABASE, "")),
        "cluster": render_cluster_statements(migration, LAYOUT),
    }


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.filename)
@pytest.mark.parametrize("mode", ["single", "cluster"])
def test_rendering_matches_golden(migration: MigrationFile, mode: str) -> None:
    got = _text(_renderings(migration)[mode])
    golden = GOLDEN / mode / migration.filename
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    assert golden.is_file(), (
        f"no golden {golden.relative_to(REPO_ROOT)} for {migration.filename}: run"
        " REDPOLL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_cluster_ddl.py, then review it"
    )
    assert got == golden.read_text(encoding="utf-8"), (
        f"{mode} rendering of {migration.filename} differs from its golden"
        " (REDPOLL_UPDATE_GOLDEN=1 rewrites it after a deliberate change)"
    )


def test_no_golden_without_its_migration() -> None:
    """A golden left behind by a renamed or deleted migration is an error too."""
    names = {m.filename for m in MIGRATIONS}
    stale = sorted(
        f"{p.parent.name}/{p.name}" for p in GOLDEN.glob("*/*.sql") if p.name not in names
    )
    if UPDATE:
        for name in stale:
            (GOLDEN / name).unlink()
        stale = []
    assert not stale, f"goldens without a migration: {stale}"


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.filename)
def test_every_statement_parses_with_sqlglot(migration: MigrationFile) -> None:
    for mode, statements in _renderings(migration).items():
        for statement in statements:
            try:
                sqlglot.parse_one(statement.sql, read="clickhouse")
            except sqlglot.errors.ParseError as exc:  # pragma: no cover - the failure
                pytest.fail(f"{mode} {migration.filename} statement {statement.index}: {exc}")


_CREATE = re.compile(
    r"^CREATE (?P<kind>TABLE|MATERIALIZED VIEW|VIEW|DATABASE) IF NOT EXISTS "
    r"(?P<db>\w+)(?:\.(?P<name>\w+))? ON CLUSTER `redpoll`",
    re.MULTILINE,
)


def test_cluster_layout_places_every_object() -> None:
    """Sharded objects live in redpoll_shard with Replicated engines under the {shard}
    path; each sharded MergeTree table has a Distributed twin of the same name in
    redpoll (what endpoints read); nothing else is in redpoll_shard; every CREATE is ON
    CLUSTER."""
    twins: set[str] = set()
    local_tables: set[str] = set()
    for migration in MIGRATIONS:
        for statement in render_cluster_statements(migration, LAYOUT):
            lines = statement.sql.splitlines()
            sql = "\n".join(line for line in lines if not line.startswith("--")).strip()
            if sql.startswith("CREATE"):
                match = _CREATE.search(sql)
                assert match, f"{migration.filename}: not ON CLUSTER: {sql[:120]}"
                name, db = match["name"], match["db"]
                if match["kind"] == "DATABASE":
                    assert db == "redpoll_shard"
                    continue
                assert (db == "redpoll_shard") == (
                    name in LAYOUT.sharded and "Distributed" not in sql
                )
                if "ENGINE = Distributed(`redpoll`," in sql:
                    twins.add(name)
                elif db == "redpoll_shard" and "MergeTree" in sql:
                    assert "ENGINE = Replicated" in sql
                    assert (
                        f"('/clickhouse/tables/{{shard}}/redpoll_shard/{name}', '{{replica}}'"
                        in sql
                    )
                    local_tables.add(name)
                elif db == "redpoll" and "MergeTree" in sql and name not in LAYOUT.fanout:
                    path = f"/clickhouse/tables/all/redpoll/{name}"
                    assert f"('{path}', '{{shard}}-{{replica}}'" in sql
    assert local_tables == twins
    assert {"events", "basket_pairs", "buyer_pairs", "trending", "user_history"} <= twins
    assert "items" in LAYOUT.fanout and "items" not in LAYOUT.sharded


def test_events_twin_routes_like_the_router() -> None:
    events = render_cluster_statements(MIGRATIONS[0], LAYOUT)
    twin = next(s.sql for s in events if "AS redpoll_shard.events\n" in s.sql)
    assert "kafkaMurmurHash(multiIf(user_id != '', concat('u:', user_id)" in twin


def test_single_node_statements_are_the_runner_s_without_cluster() -> None:
    runner = MigrationRunner(cast(Any, None), REPO_ROOT / "migrations", DATABASE)
    for migration in MIGRATIONS:
        assert runner.render(migration) == _renderings(migration)["single"]
    clustered = MigrationRunner(cast(Any, None), REPO_ROOT / "migrations", DATABASE, CLUSTER)
    assert clustered.render(MIGRATIONS[0]) == _renderings(MIGRATIONS[0])["cluster"]


def _migration(text: str) -> MigrationFile:
    return MigrationFile(99, "x", Path("migrations/0099_x.sql"), text)


def test_event_fed_view_may_not_read_a_catalog_table() -> None:
    bad = _migration(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.v {{ on_cluster }}"
        " TO {{ database }}.t AS SELECT e.item_id FROM {{ database }}.events AS e"
        " INNER JOIN {{ database }}.items AS i ON i.item_id = e.item_id"
    )
    sharded = sharded_objects([*MIGRATIONS, bad])
    with pytest.raises(MigrationError, match="reads \\['items'\\]"):
        render_cluster_statements(bad, ClusterLayout(DATABASE, CLUSTER, sharded))


def test_data_statement_on_a_sharded_table_is_refused() -> None:
    bad = _migration("INSERT INTO {{ database }}.trending SELECT * FROM {{ database }}.trending")
    with pytest.raises(MigrationError, match="one node only"):
        render_cluster_statements(bad, LAYOUT)


def test_column_changes_reach_the_distributed_twin_only_where_there_is_one() -> None:
    """A new event field: the landing table (Null, no twin) changes in the shard database
    only; `events` changes there and on its Distributed twin, so reads see the column."""
    alter = _migration(
        "ALTER TABLE {{ database }}.events_landing {{ on_cluster }} ADD COLUMN channel String;\n"
        "ALTER TABLE {{ database }}.events {{ on_cluster }} ADD COLUMN channel String"
    )
    sql = [s.sql for s in render_cluster_statements(alter, LAYOUT)]
    assert sql == [
        "CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`",
        "ALTER TABLE redpoll_shard.events_landing ON CLUSTER `redpoll` ADD COLUMN channel String",
        "ALTER TABLE redpoll_shard.events ON CLUSTER `redpoll` ADD COLUMN channel String",
        "ALTER TABLE redpoll.events ON CLUSTER `redpoll` ADD COLUMN channel String",
    ]


def test_token_table_is_replicated_to_every_node_on_a_cluster() -> None:
    """Tokens made at run time through one API replica work on every node: on a cluster
    the token table has the request logs' engine (one replica set of all nodes); on a
    single node its DDL is what it always was."""
    from redpoll.tokens.table import TokenTable

    lock = threading.RLock()
    on_cluster = TokenTable(cast(Any, None), DATABASE, lock, f"ON CLUSTER `{CLUSTER}`")
    sql = on_cluster.create_sql()
    assert "ON CLUSTER `redpoll`" in sql
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/redpoll/_redpoll_tokens',"
        " '{shard}-{replica}', version) ORDER BY name"
    ) in sql
    sqlglot.parse_one(sql, dialect="clickhouse")
    single = TokenTable(cast(Any, None), DATABASE, lock).create_sql()
    assert single == (
        "CREATE TABLE IF NOT EXISTS `redpoll`._redpoll_tokens  ( name String,"
        " token_hash String, scopes Array(String), rps UInt32, created_at DateTime64(3, 'UTC'),"
        " revoked UInt8, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY name"
    )
