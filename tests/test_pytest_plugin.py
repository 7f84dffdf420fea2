"""The `redpoll` pytest plugin as a project's own test suite uses it: installed with the
package, no import or conftest needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

USER_TESTS = """
def test_a_fresh_store_answers(redpoll_store):
    with redpoll_store.read_pool.borrow() as client:
        assert client.query("SELECT 1").result_rows == [(1,)]


def test_database_is_fresh_and_isolated(redpoll_admin, redpoll_target):
    redpoll_admin.command("CREATE TABLE t (x UInt8) ENGINE = Memory")
    tables = redpoll_admin.query(
        "SELECT name FROM system.tables WHERE database = {db:String}",
        parameters={"db": redpoll_target.database},
    ).result_rows
    assert tables == [("t",)]


def test_a_served_project(redpoll_server, redpoll_admin_sql):
    basket = [
        {"user_id": "u", "order_id": "o1", "item_id": item, "event_type": "purchase"}
        for item in ("a", "b")
    ]
    catalog = [{"item_id": item, "title": f"item {item}"} for item in ("a", "b")]
    with redpoll_server.client() as http:
        for name, rows in (("items", catalog), ("events", basket)):
            r = http.post(f"/v0/events?name={name}&wait=true", json=rows)
            assert r.status_code == 200, r.text
        also = http.get("/v0/pipes/also_bought.json?item_id=a").json()["data"]
    assert [row["item_id"] for row in also] == ["b"]
    assert redpoll_admin_sql.query("SELECT count() FROM events").result_rows == [(2,)]
"""


@pytest.mark.slow
def test_plugin_fixtures_work_in_a_users_suite(pytester: pytest.Pytester) -> None:
    for part in ("sql", "materialized_views", "endpoints", "migrations"):
        shutil.copytree(REPO_ROOT / part, pytester.path / part)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
