"""Migration runner on real chDB: ordering, checksums, idempotence, failure recovery, lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.errors import MigrationError
from redpoll.migrations.files import discover, render_statements, template_variables
from redpoll.migrations.generate import created_objects, drift, new_from_files
from redpoll.migrations.runner import LOCK_TABLE, MigrationRunner, new_migration
from redpoll.testing import copy_project


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def mig_dir(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    write(
        d, "0001_t.sql", "CREATE TABLE {{ database }}.t (x UInt32) ENGINE = MergeTree ORDER BY x;\n"
    )
    write(d, "0002_seed.sql", "INSERT INTO {{ database }}.t VALUES (1), (2);\n")
    return d


@pytest.fixture
def runner(admin_client: Client, ch_target: Target, mig_dir: Path) -> MigrationRunner:
    return MigrationRunner(admin_client, mig_dir, ch_target.database)


def count(client: Client, database: str) -> int:
    return client.query(f"SELECT count() FROM `{database}`.t").result_rows[0][0]


def test_files_are_ordered_by_version_and_names_checked(tmp_path: Path) -> None:
    d = tmp_path / "m"
    for name in ["0010_c.sql", "0002_b.sql", "0001_a.sql"]:
        write(d, name, "SELECT 1;")
    assert [m.version for m in discover(d)] == [1, 2, 10]
    write(d, "0003_Bad-Name.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"0003_Bad-Name\.sql"):
        discover(d)


def test_duplicate_version_is_rejected(tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "0001_a.sql", "SELECT 1;")
    write(d, "0001_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="version 1 is also used"):
        discover(d)


def test_statement_splitting_respects_strings_and_comments(tmp_path: Path) -> None:
    path = write(tmp_path, "0001_x.sql", "-- a; b\nSELECT 'x;y';\n/* ; */\nSELECT 2;\n-- end\n")
    stmts = render_statements(discover(tmp_path)[0], template_variables("db", ""))
    assert [(s.line, s.sql.splitlines()[-1]) for s in stmts] == [
        (2, "SELECT 'x;y'"),
        (4, "SELECT 2"),
    ]
    assert path.exists()


def test_on_cluster_variable() -> None:
    assert template_variables("db", "main")["on_cluster"] == "ON CLUSTER `main`"
    assert template_variables("db", "")["on_cluster"] == ""


def test_up_twice_applies_once(runner: MigrationRunner, admin_client: Client) -> None:
    assert [s.version for s in runner.up()] == [1, 2]
    assert runner.up() == []
    assert count(admin_client, runner.database) == 2
    assert [s.status for s in runner.status()] == ["applied", "applied"]
    assert runner.problems() == []


def test_up_to_stops_at_version(runner: MigrationRunner) -> None:
    assert [s.version for s in runner.up(to=1)] == [1]
    assert [s.status for s in runner.status()] == ["applied", "pending"]
    assert runner.problems() == ["0002_seed.sql is pending"]


def test_edited_applied_migration_blocks_up_and_check(
    runner: MigrationRunner, mig_dir: Path
) -> None:
    runner.up()
    write(mig_dir, "0002_seed.sql", "INSERT INTO {{ database }}.t VALUES (1), (2), (3);\n")
    write(mig_dir, "0003_more.sql", "INSERT INTO {{ database }}.t VALUES (9);\n")
    with pytest.raises(MigrationError, match=r"0002_seed\.sql changed after it was applied"):
        runner.up()
    assert any("0002_seed.sql is modified" in p for p in runner.problems())
    assert [s.status for s in runner.status()] == ["applied", "modified", "pending"]


def test_failed_statement_reports_file_line_statement_and_rerun_skips_done_part(
    runner: MigrationRunner, mig_dir: Path, admin_client: Client
) -> None:
    bad = write(
        mig_dir,
        "0003_two.sql",
        "INSERT INTO {{ database }}.t VALUES (10);\n\nSELEC broken FROM nowhere;\n",
    )
    with pytest.raises(MigrationError) as info:
        runner.up()
    message = str(info.value)
    assert f"{bad}:3: statement 2 failed: SELEC broken FROM nowhere" in message
    assert "ClickHouse:" in message
    assert [s.status for s in runner.status()] == ["applied", "applied", "failed"]
    assert count(admin_client, runner.database) == 3  # 1, 2 and the first statement's 10

    write(mig_dir, "0003_two.sql", "INSERT INTO {{ database }}.t VALUES (10);\n\nSELECT 1;\n")
    assert [s.version for s in runner.up()] == [3]
    assert count(admin_client, runner.database) == 3  # statement 1 was not run twice
    assert runner.problems() == []


def test_concurrent_up_is_refused_while_lock_is_held(
    runner: MigrationRunner, admin_client: Client
) -> None:
    admin_client.command(
        f"CREATE TABLE `{runner.database}`.{LOCK_TABLE} (x UInt8) ENGINE = Log COMMENT 'pid 42'"
    )
    with pytest.raises(MigrationError, match=r"holds the migration lock \(pid 42\)"):
        runner.up()
    assert [s.status for s in runner.status()] == ["pending", "pending"]
    assert runner.unlock() is True
    assert len(runner.up()) == 2
    assert runner.lock_holder() is None  # released after a successful run


def test_missing_file_for_applied_version_is_reported(
    runner: MigrationRunner, mig_dir: Path
) -> None:
    runner.up()
    (mig_dir / "0002_seed.sql").unlink()
    assert runner.problems() == [
        "0002_seed.sql is missing: applied but its file is not in migrations/"
    ]


def test_new_numbers_the_next_file(tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    assert new_migration(d, "Create Items").name == "0001_create_items.sql"
    assert new_migration(d, "more").name == "0002_more.sql"
    with pytest.raises(MigrationError):
        new_migration(d, "bad;name")


REPO = Path(__file__).resolve().parent.parent
HITS = """\
CREATE TABLE IF NOT EXISTS {{ database }}.hits {{ on_cluster }}
(item_id String, n UInt64)
ENGINE = SummingMergeTree(n) ORDER BY item_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.hits_mv {{ on_cluster }}
TO {{ database }}.hits
AS SELECT item_id, count() AS n FROM {{ database }}.events GROUP BY item_id;
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(REPO, tmp_path, ("sql", "materialized_views", "migrations"))
    return tmp_path


#: the number `redpoll migrate new` gives the next migration of the repository's project
NEXT = max(m.version for m in discover(REPO / "migrations")) + 1


def test_the_repository_files_and_migrations_do_not_drift() -> None:
    applied = [m.version for m in discover(REPO / "migrations")]
    assert drift(REPO, applied).lines() == []


def test_generated_migration_holds_the_new_objects_only(
    project: Path, admin_client: Client, ch_target: Target
) -> None:
    migrations = project / "migrations"
    before = {p.name: p.read_bytes() for p in migrations.iterdir()}
    assert new_from_files(project) is None  # everything has a migration
    (project / "materialized_views" / "hits.sql").write_text(HITS)
    path = new_from_files(project)
    assert path is not None and path.name == f"{NEXT:04d}_hits.sql"
    assert {p.name: p.read_bytes() for p in migrations.iterdir() if p != path} == before
    statements = render_statements(discover(migrations)[-1], template_variables("db", ""))
    heads = [next(x for x in s.sql.splitlines() if x and x[:2] != "--") for s in statements]
    assert [h.strip() for h in heads] == [
        "CREATE TABLE IF NOT EXISTS db.hits",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS db.hits_mv",
    ]
    assert new_from_files(project) is None  # pending counts: not generated twice
    runner = MigrationRunner(admin_client, migrations, ch_target.database)
    assert [s.version for s in runner.up()][-1] == NEXT
    tables = admin_client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE 'hits%'",
        parameters={"db": ch_target.database},
    ).result_columns[0]
    assert sorted(tables) == ["hits", "hits_mv"]


def test_drift_is_reported_by_name_both_ways(project: Path) -> None:
    (project / "materialized_views" / "hits.sql").write_text(HITS)
    applied = [m.version for m in discover(project / "migrations")]
    (project / "materialized_views" / "trending_daily.sql").unlink()
    assert drift(project, applied).lines() == [
        "hits is defined in materialized_views/hits.sql but no applied migration creates it",
        "hits_mv is defined in materialized_views/hits.sql but no applied migration creates it",
        "trending_daily is created by 0007_trending_daily.sql but no file of sql/ or "
        "materialized_views/ defines it",
        "trending_daily_mv is created by 0007_trending_daily.sql but no file of sql/ or "
        "materialized_views/ defines it",
    ]
    write(
        project / "migrations",
        f"{NEXT:04d}_drop.sql",
        "DROP VIEW IF EXISTS {{ database }}.trending_daily_mv;\n"
        "DROP TABLE IF EXISTS {{ database }}.trending_daily;\n",
    )
    assert (
        created_objects(discover(project / "migrations"))
        .keys()
        .isdisjoint({"trending_daily", "trending_daily_mv"})
    )
    assert len(drift(project, applied).not_in_files) == 2  # NEXT is not applied
    assert drift(project, [*applied, NEXT]).not_in_files == []
