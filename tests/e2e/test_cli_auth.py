"""`redpoll load` and `redpoll endpoints test` against a running server with auth on.

The server requires `read_token` on /v0/pipes and `append_token` on /v0/events. The CLI
goes through it (it holds the embedded store) and sends the tokens configured for the
project: the right ones succeed, a wrong configured one is refused (so the configured
token is what is sent, not only the server's admin token).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from redpoll.testing import run_cli, run_server
from tests.support.cli_project import purchases_project, write_events

TOKENS = {"REDPOLL_READ_TOKEN": "read-secret", "REDPOLL_APPEND_TOKEN": "append-secret"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return purchases_project(tmp_path)


def test_load_and_endpoints_test_send_the_configured_tokens(project: Path, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson")
    wrong = {**TOKENS, "REDPOLL_APPEND_TOKEN": "nope", "REDPOLL_READ_TOKEN": "nope"}
    with run_server(project, env=TOKENS) as server:
        # auth is on: without a token both surfaces refuse
        assert httpx.post(f"{server.url}/v0/events?name=events", content=b"{}").status_code == 403
        assert httpx.get(f"{server.url}/v0/pipes/purchases.json").status_code == 403

        refused = run_cli(project, "load", "events", str(events), env=wrong)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith("error: invalid token")

        loaded = run_cli(project, "load", "events", str(events), env=TOKENS)
        assert loaded.returncode == 0, loaded.stderr
        assert "through the running server" in loaded.stderr
        assert "5 rows loaded into events, 0 quarantined" in loaded.stdout

        tested = run_cli(project, "endpoints", "test", env=TOKENS)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "1/1 passed" in tested.stdout

        denied = run_cli(project, "endpoints", "test", env=wrong)
        assert denied.returncode == 1
        assert "status 403" in denied.stderr

    # the same fixture, in this process once the server has stopped: the same answer
    local = run_cli(project, "endpoints", "test", env=TOKENS)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "through the running server" not in local.stderr
    assert "1/1 passed" in local.stdout
