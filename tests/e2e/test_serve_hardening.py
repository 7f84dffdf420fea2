"""Header limits and the second server, against a real `redpoll serve` over raw sockets.

10: request heads are bounded in time (`header_timeout_s`) and size (`max_header_bytes`,
431) by api/http_protocol.py, without slowing ordinary callers or breaking keep-alive.
11: a second `redpoll serve` on the same project exits 1 with one `error: ...` line.
"""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redpoll.clickhouse.lock import StoreLock
from redpoll.testing import RunningServer, free_port, run_cli, run_server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16 * 1024
ENV = {
    "REDPOLL_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "REDPOLL_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "REDPOLL_LOG_LEVEL": "warning",
}
PARTIAL_HEAD = b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hardening") / "shop"
    result = run_cli(root.parent, "init", str(root))
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[RunningServer]:
    with run_server(project, env=ENV) as running:
        yield running


def _address(server: RunningServer) -> tuple[str, int]:
    return "127.0.0.1", int(server.url.rsplit(":", 1)[1])


def _read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_half_sent_heads_are_closed_while_health_stays_fast(server: RunningServer) -> None:
    addr = _address(server)
    opened: dict[socket.socket, float] = {}
    partial: set[socket.socket] = set()
    for i in range(200):
        sock = socket.create_connection(addr, timeout=5)
        opened[sock] = time.monotonic()
        if i % 10:  # 180 send part of a head; 20 send nothing at all
            sock.sendall(PARTIAL_HEAD)
            partial.add(sock)
        sock.setblocking(False)

    selector = selectors.DefaultSelector()
    for sock in opened:
        selector.register(sock, selectors.EVENT_READ)
    received: dict[socket.socket, bytes] = {sock: b"" for sock in opened}
    closed_after: dict[socket.socket, float] = {}
    health: list[float] = []
    deadline = time.monotonic() + HEADER_TIMEOUT_S + 8
    with httpx.Client(base_url=server.url, timeout=5) as http:
        while len(closed_after) < len(opened) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[sock] += chunk
                else:
                    closed_after[sock] = time.monotonic() - opened[sock]
                    selector.unregister(sock)
            started = time.perf_counter()
            assert http.get("/v0/health").status_code == 200
            health.append(time.perf_counter() - started)
    selector.close()
    for sock in opened:
        sock.close()

    assert len(closed_after) == len(opened), f"{len(opened) - len(closed_after)} still open"
    slack = 2.5
    assert max(closed_after.values()) <= HEADER_TIMEOUT_S + slack, sorted(closed_after.values())
    assert min(closed_after.values()) >= HEADER_TIMEOUT_S * 0.8  # not closed early
    for sock in partial:  # a partial head is told why; a silent connection is just closed
        assert received[sock].startswith(b"HTTP/1.1 408 "), received[sock][:80]
    assert all(received[sock] == b"" for sock in opened if sock not in partial)
    assert len(health) >= 10
    assert statistics.median(health) < 0.1 and max(health) < 2.0, health


def test_two_megabytes_of_headers_get_431(server: RunningServer) -> None:
    head = b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(2000)) + b"\r\n"
    assert len(head) > 2_000_000
    sock = socket.create_connection(_address(server), timeout=10)

    def send() -> None:  # the server may stop reading part way: never block the test
        with contextlib.suppress(OSError):
            sock.sendall(head)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = _read_until_closed(sock)
    sender.join(10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert httpx.get(server.url + "/v0/health", timeout=5).status_code == 200


def test_a_complete_head_over_the_cap_in_one_write_gets_431(server: RunningServer) -> None:
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(
        b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: "
        + b"c" * (MAX_HEADER_BYTES + 100)
        + b"\r\n\r\n"
    )
    answer = _read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_normal_heads_slow_heads_and_keep_alive_are_unaffected(server: RunningServer) -> None:
    host, port = _address(server)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    cookie = "session=" + "s" * 8000  # a large but ordinary head, under the cap
    conn.request("GET", "/v0/health", headers={"Cookie": cookie, "User-Agent": "test"})
    first = conn.getresponse()
    assert first.status == 200 and first.read() == b'{"status":"ok"}'
    sock = conn.sock
    for _ in range(3):  # keep-alive: the same socket answers again
        conn.request("GET", "/v0/health", headers={"Cookie": cookie})
        again = conn.getresponse()
        assert again.status == 200
        again.read()
        assert conn.sock is sock
    conn.close()

    # A head sent slowly, within the deadline, is served; so are two pipelined requests.
    raw = socket.create_connection((host, port), timeout=10)
    request = b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n"
    for i in range(0, len(request), 8):
        raw.sendall(request[i : i + 8])
        time.sleep(HEADER_TIMEOUT_S * 0.5 / (len(request) / 8))
    raw.sendall(request + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    answers = _read_until_closed(raw)
    raw.close()
    assert answers.count(b"HTTP/1.1 200 OK") == 3, answers


def test_a_stalled_head_after_a_keep_alive_request_is_closed(server: RunningServer) -> None:
    """The deadline also runs from the first byte of a later request on the connection."""
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(b"GET /v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):  # head and body may come in two segments
        chunk = sock.recv(65536)
        assert chunk, first
        first += chunk
    assert first.startswith(b"HTTP/1.1 200 OK"), first
    time.sleep(HEADER_TIMEOUT_S * 0.8)  # idle, under uvicorn's 5 s keep-alive timeout
    sock.sendall(PARTIAL_HEAD)
    started = time.monotonic()
    answer = _read_until_closed(sock)
    waited = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEADER_TIMEOUT_S * 0.8 <= waited <= HEADER_TIMEOUT_S + 2.5, waited


def test_a_second_serve_on_the_same_project_is_one_line_and_exit_1(
    project: Path, server: RunningServer
) -> None:
    second = run_cli(project, "serve", "--port", str(free_port()), env=ENV, timeout=60)
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("error: the embedded store in ")
    assert f"in use by pid {server.process.pid} (redpoll serve)" in lines[0]
    assert "Traceback" not in second.stderr + second.stdout
    # The first server is untouched and still publishes how to reach it.
    assert httpx.get(server.url + "/v0/health", timeout=5).status_code == 200
    assert (project / ".redpoll" / "server.json").is_file()


def test_serve_on_a_port_in_use_exits_1_and_releases_the_store(
    tmp_path: Path, server: RunningServer
) -> None:
    other = tmp_path / "other"
    assert run_cli(tmp_path, "init", str(other)).returncode == 0
    port = _address(server)[1]
    failed = run_cli(other, "serve", "--port", str(port), env=ENV, timeout=60)
    assert failed.returncode == 1, failed.stderr
    assert "address already in use" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not StoreLock(other / ".redpoll").is_held_elsewhere()
    assert not (other / ".redpoll" / "server.json").exists()
