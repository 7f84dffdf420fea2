"""`log_format=json` (the default) against a real `redpoll serve`: every line of the server
log is one JSON object (uvicorn's access and error lines too), tokens are redacted
(api/security.py `RedactSecrets`), and each request's lines carry its `x-request-id`
(logging_setup.py `REQUEST_ID`, set by api/metrics.py `observe_requests`)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from redpoll.testing import run_cli, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jsonlogs") / "shop"
    result = run_cli(root.parent, "init", str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_every_line_is_json_with_request_ids_and_no_tokens(project: Path) -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    env = {
        "REDPOLL_ADMIN_TOKEN": token,
        "REDPOLL_LOG_LEVEL": "info",
        "REDPOLL_LOG_FORMAT": "json",
        "REDPOLL_ACCESS_LOG": "true",
    }
    sent_ids: list[str] = []
    answered_ids: list[str] = []
    with run_server(project, env=env) as server, server.client(authenticated=False) as http:
        calls: list[tuple[str, str, dict[str, str], bytes | None]] = [
            ("GET", f"/v0/health?token={token}", {}, None),
            ("GET", "/v0/pipes", {"Authorization": f"Bearer {token}"}, None),
            ("GET", f"/v0/pipes/no_such_pipe.json?token={token}", {}, None),
            ("GET", "/redpoll/v1/admin/migrations", {"Authorization": f"bearer {token}"}, None),
            ("POST", f"/v0/events?name=events&TOKEN={token}", {}, b'{"event_id": "e1"}\n'),
            ("GET", "/v0/metrics", {"Authorization": f"Bearer {token}"}, None),
            ("GET", "/v0/metrics", {"Authorization": "Bearer wrong-" + token}, None),
            ("GET", f"/no/such/route?token={token}", {}, None),
        ]
        for n, (method, target, headers, body) in enumerate(calls):
            rid = f"req-{n}-{secrets.token_hex(4)}"
            sent_ids.append(rid)
            response = http.request(
                method, target, headers={**headers, "x-request-id": rid}, content=body
            )
            assert response.headers["x-request-id"] == rid
            assert token not in response.text
        # without an incoming id the server makes one; the log shows that one
        response = http.get("/v0/health", params={"token": token})
        answered_ids.append(response.headers["x-request-id"])
        assert http.get("/v0/metrics", headers={"Authorization": f"Bearer {token}"}).is_success
    log = server.log()

    assert token not in log, [line for line in log.splitlines() if token in line][:3]
    entries: list[dict[str, Any]] = []
    for line in log.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line: one JSON object
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message", "request_id"} <= set(entry), line
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.access", "uvicorn.error", "redpoll"} <= loggers, loggers
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    by_id = {e["request_id"]: e["message"] for e in access}
    for rid, (method, target, _, _) in zip(sent_ids, calls, strict=True):
        assert rid in by_id, (rid, target[:40])
        assert f"{method} {target.split('?')[0]}" in by_id[rid]
    assert answered_ids[0] in by_id and "token=[redacted]" in by_id[answered_ids[0]]
    # lines outside requests (startup, shutdown) have no id
    assert any(e["request_id"] is None for e in entries)
    assert all(e["level"] in {"debug", "info", "warning", "error", "critical"} for e in entries)
