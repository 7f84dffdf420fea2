"""Tokens never reach the server log or a response body, against a real `redpoll serve`
(api/security.py `RedactSecrets`, installed by cli/commands/core.py `serve`; the query
string cut from error bodies by api/errors.py). Also: the 431 that api/http_protocol.py
writes itself carries the security headers."""

from __future__ import annotations

import logging
import secrets
import socket
from pathlib import Path

import pytest

from redpoll.api.security import RedactSecrets
from redpoll.testing import run_cli, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redaction") / "shop"
    result = run_cli(root.parent, "init", str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_tokens_stay_out_of_the_log_and_the_bodies(project: Path) -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    env = {
        "REDPOLL_ADMIN_TOKEN": token,
        "REDPOLL_LOG_LEVEL": "info",
        "REDPOLL_AUTH": "true",
        "REDPOLL_ACCESS_LOG": "true",
    }
    requests: list[tuple[str, str, bytes | None]] = [
        ("GET", f"/v0/health?token={token}", None),
        ("GET", f"/v0/pipes/no_such_pipe.json?token={token}", None),
        ("GET", f"/v0/pipes/openapi.json?TOKEN={token}", None),
        ("POST", f"/v0/events?name=events&token={token}&wait=true", b'{"event_id": "e1"}\n'),
        ("POST", f"/v0/events?name=no_such_source&token={token}", b"{}"),
        ("GET", f"/redpoll/v1/admin/migrations?token={token}", None),
        ("POST", f"/redpoll/v1/admin/backfill?token={token}", b'{"bogus": 1}'),
        ("GET", f"/schema/openapi.json?token={token}", None),
        ("GET", f"/no/such/route?token={token}", None),
        ("DELETE", f"/v0/health?token={token}", None),
        ("GET", f"/v0/health?token={token}&pad=" + "a" * 9000, None),  # 414
    ]
    bodies: list[str] = []
    statuses: list[int] = []
    with run_server(project, env=env) as server, server.client() as http:
        for method, target, body in requests:
            response = http.request(method, target, content=body)
            statuses.append(response.status_code)
            bodies.append(response.text)
        with_header = http.get(
            "/redpoll/v1/admin/migrations", headers={"Authorization": f"Bearer {token}"}
        )
        assert with_header.status_code == 200, with_header.text
        bodies.append(with_header.text)
    log = server.log()

    assert 200 in statuses and 414 in statuses and 400 in statuses, statuses
    for (method, target, _), text in zip(requests, bodies, strict=False):
        assert token not in text, (method, target[:60], text[:300])
    assert token not in log, [line for line in log.splitlines() if token in line][:5]
    # the access log did print these requests, with the token redacted
    assert "/v0/health?token=[redacted]" in log, log[-2000:]
    assert "TOKEN=[redacted]" in log


def test_the_431_written_by_the_protocol_carries_the_security_headers(project: Path) -> None:
    env = {"REDPOLL_MAX_HEADER_BYTES": "4096", "REDPOLL_LOG_LEVEL": "warning"}
    with run_server(project, env=env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        head = b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 8192
        head += b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    lowered = answer.lower()
    for header in (
        b"x-content-type-options: nosniff",
        b"x-frame-options: deny",
        b"referrer-policy: no-referrer",
        b"content-security-policy: default-src 'none'; frame-ancestors 'none'",
        b"cross-origin-resource-policy: cross-origin",
        b"cache-control: no-store",
    ):
        assert header in lowered, (header, answer[:600])


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        (
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4", "GET", "/v0/x?a=1&token=SeCrEt&b=2", "1.1", 200),
            'GET /v0/x?a=1&token=[redacted]&b=2 HTTP/1.1" 200',
        ),
        ("call /v0/x?Token=SeCrEt", (), "call /v0/x?Token=[redacted]"),
        (
            "header %(h)s",
            ({"h": "Authorization: Bearer SeCrEt"},),
            "Authorization: Bearer [redacted]",
        ),
        ("authorization: bearer SeCrEt, next", None, "authorization: bearer [redacted], next"),
    ],
)
def test_the_filter_rewrites_message_and_arguments(
    msg: str, args: tuple[object, ...] | None, expected: str
) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)
    assert RedactSecrets().filter(record)
    text = record.getMessage()
    assert "SeCrEt" not in text
    assert expected in text
