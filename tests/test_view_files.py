"""A view is one file: what `redpoll.materialized` derives from materialized_views/*.sql,
and that nothing in app/ writes a view's SQL or the events columns a second time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from redpoll.errors import ConfigError
from redpoll.ingest.writer import check_view
from redpoll.materialized import load_views, schema_files, table_columns
from redpoll.testing import copy_project

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app" / "redpoll"

CHAINED = """\
CREATE TABLE IF NOT EXISTS {{ database }}.pair_totals {{ on_cluster }}
(item_id String, orders Int64)
ENGINE = SummingMergeTree(orders) ORDER BY item_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.pair_totals_mv {{ on_cluster }}
TO {{ database }}.pair_totals
AS SELECT item_id, orders FROM {{ database }}.basket_pairs WHERE other_item_id = '';
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(REPO, tmp_path, ("sql", "materialized_views"))
    return tmp_path


def test_repository_views_own_their_tables_and_read_their_sources() -> None:
    views = load_views(REPO)
    assert {v.name: v.tables for v in views.views} == {
        "basket_pairs": ("basket_items", "basket_pairs"),
        "buyer_pairs": ("buyer_items", "buyer_pairs"),
        "events_by_time": ("events_by_time",),
        "items_latest": ("items_latest",),
        "session_history": ("session_history",),
        "trending": ("trending",),
        "trending_daily": ("trending_daily",),
        "user_history": ("user_history", "user_item_stats"),
    }
    assert views.get("items_latest").sources == {"items"}
    assert views.get("trending").sources == {"events"}
    assert {v.name for v in views.fed_by({"events"})} == set(views.names) - {"items_latest"}
    for view in views.views:
        assert view.recompute is not None, f"{view.name}: no recompute block"
        statements = view.backfill_statements("db")
        assert statements[: len(view.tables)] == [
            f"TRUNCATE TABLE IF EXISTS db.{t}" for t in view.tables
        ]
        assert all(s.startswith("INSERT INTO db.") for s in statements[len(view.tables) :])


def test_constants_are_written_once_and_the_block_is_no_ddl() -> None:
    basket = load_views(REPO).get("basket_pairs")
    assert basket.constants["max_basket_items"] == "50"
    assert any("uniqExact(item_id) <= 50)" in s for s in basket.recompute_statements("db"))
    assert [o.kind for o in basket.objects] == ["table", "materialized view"] * 2
    assert all("recompute" not in o.text for o in basket.objects)


def test_buyer_pairs_views_share_their_constants() -> None:
    """bucket_days and max_group_items are written in both views of buyer_pairs (each
    groups the block itself); they must agree, and the recompute block uses them."""
    buyer = load_views(REPO).get("buyer_pairs")
    views = [o for o in buyer.objects if o.kind == "materialized view"]
    assert [o.name for o in views] == ["buyer_items_mv", "buyer_pairs_mv"]
    assert views[0].constants == views[1].constants == buyer.constants
    cap, days = int(buyer.constants["max_group_items"]), int(buyer.constants["bucket_days"])
    text = " ".join(buyer.recompute_statements("db"))
    assert f"86400 * {days})" in text and f"LIMIT {cap + 1} BY" in text
    assert f"HAVING count() <= {cap})" in text
    header = buyer.path.read_text().split("CREATE TABLE")[0]
    header = " ".join(line.lstrip("-").strip() for line in header.splitlines())
    assert f"more than {cap} distinct items" in header and f"86400 * {days})" in header


def test_every_view_file_states_its_bound_per_event() -> None:
    """Every default view's file says how much work one event costs."""
    for view in load_views(REPO).views:
        header = view.path.read_text().split("CREATE TABLE")[0]
        assert "Bound per event" in header, f"{view.path.name}: no `Bound per event`"


def test_optional_views_are_not_default() -> None:
    """materialized_views/optional/ is opt-in: not loaded, not migrated, not repaired."""
    optional = sorted(p.name for p in (REPO / "materialized_views" / "optional").glob("*.sql"))
    assert optional == ["co_purchase.sql"]
    assert "co_purchase" not in load_views(REPO).names


def test_a_view_added_as_a_file_is_known_without_code(project: Path) -> None:
    """What the writer rebuilds and `backfill` accepts is read from the folder."""
    (project / "materialized_views" / "pair_totals.sql").write_text(CHAINED)
    views = load_views(project)
    assert check_view("pair_totals", views) == "pair_totals"
    names = list(views.names)
    assert names.index("pair_totals") > names.index("basket_pairs")  # reads its table
    assert [v.name for v in views.ordered(["pair_totals", "basket_pairs"])] == [
        "basket_pairs",
        "pair_totals",
    ]
    assert "pair_totals" in {v.name for v in views.fed_by({"events"})}  # chained: repaired
    (derived,) = views.get("pair_totals").recompute_statements("db")
    assert derived.startswith("INSERT INTO db.pair_totals (item_id, orders)\nSELECT")
    assert "FROM db.basket_pairs" in derived
    with pytest.raises(ConfigError, match="unknown view 'nope'; views in"):
        views.get("nope")


def test_files_that_cannot_be_views_are_refused(project: Path) -> None:
    folder = project / "materialized_views"
    (folder / "copy.sql").write_text(
        (folder / "trending.sql").read_text().replace("trending_mv", "other_mv")
    )
    with pytest.raises(ConfigError, match="table trending is also created by"):
        load_views(project)
    (folder / "copy.sql").write_text(
        "CREATE TABLE {{ database }}.h (x UInt64) ENGINE = MergeTree ORDER BY x;\n"
        "CREATE MATERIALIZED VIEW {{ database }}.h_mv TO {{ database }}.h AS\n"
        "SELECT count() AS x FROM {{ database }}.events WHERE batch > (SELECT max(x) FROM h);\n"
    )
    with pytest.raises(ConfigError, match="h_mv reads h: add a `-- recompute:`"):
        load_views(project).get("copy").recompute_statements("db")
    (folder / "copy.sql").write_text("-- recompute:\n--   SELECT 1;\n")
    with pytest.raises(ConfigError, match="without `-- end recompute`"):
        load_views(project)
    (folder / "copy.sql").write_text("ALTER TABLE {{ database }}.events DELETE WHERE 1;\n")
    with pytest.raises(ConfigError, match="only CREATE TABLE and CREATE"):
        load_views(project)


def test_views_reading_each_other_in_a_cycle_are_refused(project: Path) -> None:
    folder = project / "materialized_views"
    for a, b in (("a", "b"), ("b", "a")):
        (folder / f"{a}.sql").write_text(
            f"CREATE TABLE {{{{ database }}}}.{a}_t (x UInt64) ENGINE = Memory;\n"
            f"CREATE MATERIALIZED VIEW {{{{ database }}}}.{a}_mv TO {{{{ database }}}}.{a}_t"
            f" AS SELECT x FROM {{{{ database }}}}.{b}_t;\n"
        )
    with pytest.raises(ConfigError, match="in a cycle: a, b"):
        load_views(project)


def test_the_landing_schema_is_read_from_sql_events() -> None:
    columns = table_columns(REPO / "sql" / "events.sql", "events_landing")
    assert columns[0] == ("event_id", "String") and columns[-1] == ("batch", "UInt64")


def _string_groups(path: Path) -> list[set[str]]:
    """The string constants of each list/tuple/set literal of a Python file
    (nested literals included in their outermost one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    groups = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            groups.append(
                {
                    n.value
                    for n in ast.walk(node)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                }
            )
    return groups


def test_no_file_in_app_holds_the_events_column_list() -> None:
    """sql/events.sql is the one definition; the writer reads the created table."""
    names = {name for name, _ in table_columns(REPO / "sql" / "events.sql", "events_landing")}
    for path in sorted(APP.rglob("*.py")):
        for group in _string_groups(path):
            shared = names & group
            assert len(shared) < len(names) // 2, f"{path}: lists events columns {shared}"
    for path in sorted(APP.rglob("*.sql")):
        text = path.read_text(encoding="utf-8")
        assert "rec_id" not in text, f"{path}: an events table definition"


def test_no_view_sql_outside_its_file() -> None:
    """No statement of app/ inserts into a view's table: recompute lives in the file."""
    tables = {t for f in schema_files(REPO) for t in f.tables}
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.split())
                if "INSERT INTO" in text:
                    hits = {t for t in tables if f".{t} " in text or f".{t}(" in text}
                    assert not hits - {"event_ids"}, f"{path}: {text[:80]}"
