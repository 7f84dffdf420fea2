"""`redpoll token ...` and CLI commands with scoped tokens, against a real server.

Tokens are created through the running server (the CLI reaches it with the per-start
local token of its lock file), then `redpoll load`, `redpoll endpoints test`,
`redpoll migrate up` and `redpoll sql` run with one scoped token each (`REDPOLL_TOKEN`):
each works where its scope allows and gets the server's 403 message where it does not.
A server named by `REDPOLL_SERVER_URL` is reached from anywhere; revocation applies on
the next request; tokens created on a stopped store are hashed there and work after a
restart; the first start without any ADMIN token prints one, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from redpoll.testing import RunningServer, copy_project, run_cli, run_server
from tests.support.cli_project import purchases_project, write_events
from tests.support.paths import REPO_ROOT


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return purchases_project(tmp_path)


def create(project: Path, name: str, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    made = run_cli(project, "token", "create", name, *args, "--json")
    assert made.returncode == 0, made.stderr
    value: str = json.loads(made.stdout)["token"]
    return value


def last_error(run: object) -> str:
    line: str = run.stderr.strip().splitlines()[-1]  # type: ignore[attr-defined]
    return line


def status(server: RunningServer, path: str, token: str) -> int:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}).status_code


def test_cli_commands_with_scoped_tokens(project: Path, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson")
    with run_server(project) as server:
        loader = create(project, "loader", "DATASOURCES:APPEND:events")
        reader = create(project, "reader", "PIPES:READ:purchases")

        as_loader = {"REDPOLL_TOKEN": loader}
        as_reader = {"REDPOLL_TOKEN": reader}
        loaded = run_cli(project, "load", "events", str(events), env=as_loader)
        assert loaded.returncode == 0, loaded.stderr
        assert "5 rows loaded into events, 0 quarantined" in loaded.stdout

        refused = run_cli(project, "load", "items", str(events), env=as_loader)
        assert refused.returncode == 1
        assert last_error(refused) == "error: this token lacks the scope DATASOURCES:APPEND:items"

        tested = run_cli(project, "endpoints", "test", "--against-store", env=as_reader)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "1/1 passed" in tested.stdout
        for command in (("migrate", "up"), ("sql", "SELECT 1"), ("token", "list")):
            denied = run_cli(project, *command, env=as_reader)
            assert denied.returncode == 1, command
            assert last_error(denied) == "error: this token lacks the scope ADMIN", command

        # any server, from any directory: REDPOLL_SERVER_URL with a token
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        remote = {"REDPOLL_SERVER_URL": server.url, "REDPOLL_TOKEN": loader}
        far = run_cli(elsewhere, "load", "events", str(events), env=remote)
        assert far.returncode == 0, far.stderr
        assert "through the server at" in far.stderr
        assert "5 rows loaded into events" in far.stdout

        listed = run_cli(project, "token", "list", "--json")
        names = {t["name"]: t["scope"] for t in json.loads(listed.stdout)}
        assert names["loader"] == ["DATASOURCES:APPEND:events"]
        assert loader not in listed.stdout and reader not in listed.stdout

        assert status(server, "/v0/pipes/purchases.json", reader) == 200
        revoked = run_cli(project, "token", "revoke", "reader")
        assert revoked.returncode == 0, revoked.stderr
        assert status(server, "/v0/pipes/purchases.json", reader) == 403

        old = loader
        rotated = run_cli(project, "token", "refresh", "loader", "--json")
        loader = json.loads(rotated.stdout)["token"]
        assert run_cli(project, "load", "events", str(events), env=as_loader).returncode == 1
        assert status(server, "/v0/tokens", old) == 403

    # no server: the store is written directly, hashed; a restart accepts the token
    offline = create(project, "offline", "PIPES:READ")
    with run_server(project) as server:
        assert status(server, "/v0/pipes/purchases.json", offline) == 200
        assert status(server, "/v0/pipes/purchases.json", loader) == 403  # no PIPES:READ


def test_first_start_prints_an_admin_token_once(project: Path) -> None:
    no_admin = {"REDPOLL_ADMIN_TOKEN": ""}
    with run_server(project, env=no_admin) as server:
        log = server.log()
        assert "Created the first ADMIN token 'admin'" in log
        value = log.split("store it safely:")[1].split()[0]
        assert status(server, "/v0/tokens", value) == 200
        assert httpx.get(server.url + "/v0/tokens").status_code == 403
    with run_server(project, env=no_admin) as server:
        assert "Created the first ADMIN token" not in server.log()
        assert status(server, "/v0/tokens", value) == 200


def test_auth_off_is_loud_and_open(project: Path) -> None:
    with run_server(project, env={"REDPOLL_AUTH": "off"}) as server:
        assert httpx.get(server.url + "/v0/tokens").status_code == 200
        assert "AUTH IS OFF" in server.log()


def test_demo_prints_a_working_scoped_token(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    copy_project(REPO_ROOT, root, ("sql", "materialized_views", "migrations", "endpoints"))
    sample = REPO_ROOT / "data" / "sample"
    first = run_cli(root, "demo", "--no-serve", "--sample", str(sample), timeout=300)
    assert first.returncode == 0, first.stderr
    token = first.stdout.split("export TOKEN=")[1].split()[0]
    assert 'curl -H "Authorization: Bearer $TOKEN"' in first.stdout
    again = run_cli(root, "demo", "--no-serve", "--sample", str(sample), timeout=300)
    rotated = again.stdout.split("export TOKEN=")[1].split()[0]
    assert rotated != token  # only hashes are stored: a second run rotates the value
    with run_server(root) as server:
        assert status(server, "/v0/pipes/popular.json", rotated) == 200
        assert status(server, "/v0/pipes/popular.json", token) == 403
        assert status(server, "/v0/tokens", rotated) == 403
