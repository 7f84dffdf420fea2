"""`redpoll endpoints list|check|render|test` as subprocesses, locally and through a
running server; hot reload in dev mode (file watcher) and in production (SIGHUP)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from redpoll.testing import run_cli, run_server
from tests.support.api import FIXTURE_ENDPOINTS, PRODUCTS_DDL, PRODUCTS_ROWS

MIGRATION = (
    PRODUCTS_DDL.replace("CREATE TABLE products", "CREATE TABLE {{ database }}.products")
    + ";\n"
    + PRODUCTS_ROWS.replace("INSERT INTO products", "INSERT INTO {{ database }}.products")
    + ";\n"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for folder in ("sql", "materialized_views", "migrations"):
        (root / folder).mkdir(parents=True)
    shutil.copytree(FIXTURE_ENDPOINTS, root / "endpoints")
    (root / "migrations" / "0001_products.sql").write_text(MIGRATION)
    assert run_cli(root, "migrate", "up").returncode == 0
    return root


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_cli_locally_then_through_the_server(project: Path) -> None:
    for through_server in (False, True):
        with run_server(project) if through_server else contextlib.nullcontext():
            listed = run_cli(project, "endpoints", "list")
            assert listed.returncode == 0, listed.stderr
            assert "product_lookup" in listed.stdout and "top_products" in listed.stdout
            check = run_cli(project, "endpoints", "check")
            assert check.returncode == 0, check.stderr
            rendered = run_cli(project, "endpoints", "render", "product_lookup", "--param", "id=2")
            assert rendered.returncode == 0, rendered.stderr
            assert "{p_id:UInt64}" in rendered.stdout and "2" in rendered.stdout
            tested = run_cli(project, "endpoints", "test")
            assert tested.returncode == 0, tested.stdout + tested.stderr
            assert "5 passed" in tested.stdout or "5/5" in tested.stdout, tested.stdout


def test_check_fails_with_file_and_line(project: Path) -> None:
    bad = project / "endpoints" / "broken.sql"
    bad.write_text("-- description: broken\nSELECT *\nFROM no_such_table\n")
    check = run_cli(project, "endpoints", "check")
    assert check.returncode == 1
    assert f"{bad}:" in check.stdout + check.stderr
    assert "no_such_table" in check.stdout + check.stderr


def test_dev_mode_reloads_files_and_keeps_last_good_version(project: Path) -> None:
    new = project / "endpoints" / "cheap.sql"
    with run_server(project, env={"REDPOLL_DEV": "1"}) as server, server.client() as http:
        assert http.get("/v0/pipes/cheap.json").status_code == 404
        new.write_text("SELECT id FROM products WHERE price < {{ Float64(max_price, 15) }}\n")
        assert wait_for(lambda: http.get("/v0/pipes/cheap.json").status_code == 200)
        assert http.get("/v0/pipes/cheap.json").json()["data"] == [{"id": "1"}]
        new.write_text("SELECT id FROM nowhere_at_all\n")  # broken edit
        time.sleep(2)
        assert http.get("/v0/pipes/cheap.json").json()["data"] == [{"id": "1"}]


def test_sighup_reloads_in_production_mode(project: Path) -> None:
    new = project / "endpoints" / "dear.sql"
    with run_server(project) as server, server.client() as http:
        new.write_text("SELECT id FROM products WHERE price > 25\n")
        time.sleep(1)
        assert http.get("/v0/pipes/dear.json").status_code == 404  # no watcher in production
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: http.get("/v0/pipes/dear.json").status_code == 200)
        assert http.get("/v0/pipes/dear.json").json()["data"] == [{"id": "3"}]
