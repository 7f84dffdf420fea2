"""End to end: `redpoll init` -> `migrate up` -> `serve`, and CLI commands while the server
holds the embedded store (they go through its admin API) or while another CLI holds it
(they fail fast, naming the holder)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redpoll.clickhouse.lock import StoreLock
from redpoll.testing import run_cli, run_server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proj") / "shop"
    result = run_cli(root.parent, "init", str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_init_scaffold_migrates_and_serves(project: Path) -> None:
    for folder in ["sql", "materialized_views", "endpoints", "migrations"]:
        assert (project / folder).is_dir()
    assert (project / "redpoll.toml").is_file()

    check = run_cli(project, "migrate", "check")
    assert check.returncode == 1 and "0001_pageviews.sql is pending" in check.stderr

    with run_server(project) as server, server.client() as http:
        assert http.get("/v0/health").json() == {"status": "ok"}
        not_ready = http.get("/v0/ready")
        assert not_ready.status_code == 503
        assert "0001_pageviews.sql is pending" in not_ready.json()["migrations"]["problems"][0]

        # While the server holds the embedded store, the CLI goes through it.
        up = run_cli(project, "migrate", "up")
        assert up.returncode == 0, up.stderr
        assert "through the running server" in up.stderr
        assert "2 migration(s) applied" in up.stdout  # pageviews and the service logs

        status = run_cli(project, "migrate", "status")
        assert status.returncode == 0, status.stderr
        assert "0001_pageviews" in status.stdout and "applied" in status.stdout
        assert "0002_service_logs" in status.stdout

        ready = http.get("/v0/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.headers["x-request-id"]

        inserted = run_cli(project, "sql", "INSERT INTO pageviews VALUES (now(), 'u1', '/home')")
        assert inserted.returncode == 0, inserted.stderr
        out = run_cli(
            project,
            "sql",
            "SELECT path, count() AS n FROM pageviews GROUP BY path",
            "--format",
            "csv",
        )
        assert out.stdout.splitlines() == ['"path","n"', '"/home",1']

    # Server gone: the CLI opens the store itself.
    assert run_cli(project, "migrate", "check").returncode == 0


def test_cli_fails_fast_when_another_command_holds_the_store(project: Path) -> None:
    lock = StoreLock(project / ".redpoll")
    lock.acquire("redpoll load events big.csv")
    try:
        started = time.monotonic()
        result = run_cli(project, "migrate", "status", timeout=30)
        elapsed = time.monotonic() - started
    finally:
        lock.release()
    assert result.returncode == 1
    assert f"in use by pid {os.getpid()} (redpoll load events big.csv)" in result.stderr
    assert elapsed < 15


def test_sigterm_shuts_down_gracefully_and_releases_the_store(project: Path) -> None:
    with run_server(project) as server:
        server.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises SIGTERM after a clean shutdown (exit status 143, like most servers).
        assert server.process.wait(20) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()
    assert not StoreLock(project / ".redpoll").is_held_elsewhere()
    assert not (project / ".redpoll" / "server.json").exists()


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "redpoll", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("redpoll, version")


def test_a_clickhouse_error_is_one_line_locally_and_through_the_server(project: Path) -> None:
    """`redpoll sql` with bad SQL: the error classified by clickhouse/errors.py, one line,
    whether the statement runs in this process or on the server's admin API."""
    for through_server in (False, True):
        with run_server(project) if through_server else contextlib.nullcontext():
            out = run_cli(project, "sql", "SELEC 1")
            assert out.returncode == 1
            lines = [line for line in out.stderr.splitlines() if not line.startswith("(through")]
            assert len(lines) == 1 and lines[0].startswith("error: syntax error at position")
