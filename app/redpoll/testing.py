"""Public test helpers: run a real `redpoll serve` subprocess on a free port.

Modelled on Litestar's `run_app` and datasette's `wait_until_responds`: pick a free port,
start the server, poll until it answers, and always stop it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = (
    "PROJECT_PARTS",
    "AdminSQL",
    "RunningServer",
    "copy_project",
    "free_port",
    "run_cli",
    "run_server",
)

#: What a project is made of (folders and its settings file).
PROJECT_PARTS = ("sql", "materialized_views", "endpoints", "migrations", "kafka", "redpoll.toml")


def copy_project(
    source: Path, dest: Path, parts: tuple[str, ...] = PROJECT_PARTS, *, exist_ok: bool = False
) -> Path:
    """Copy the `parts` of the project at `source` that exist into `dest`; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("__pycache__")
    for part in parts:
        path = source / part
        if path.is_dir():
            shutil.copytree(path, dest / part, dirs_exist_ok=exist_ok, ignore=skip)
        elif path.is_file():
            shutil.copy2(path, dest / part)
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    #: an ADMIN token the server accepts (`REDPOLL_ADMIN_TOKEN`), empty with auth off
    token: str = ""

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, *, authenticated: bool = True, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the server; it sends the ADMIN token unless told not to."""
        headers = {**(self.auth_headers if authenticated else {}), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """Simulate a crash: SIGKILL, no shutdown hooks."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> int:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def _env(project: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPOLL_")}
    env["REDPOLL_PROJECT_DIR"] = str(project)
    env.update(extra or {})
    return env


def run_cli(
    project: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m redpoll ARGS` for `project` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "redpoll", *args],
        env=_env(project, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def run_server(
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    ready_timeout: float = 60,
) -> Iterator[RunningServer]:
    """Start `redpoll serve` for `project`; yield once `/v0/health` answers 200.

    Unless `env` sets `REDPOLL_ADMIN_TOKEN` (or turns auth off), the server gets a random
    one, kept in `RunningServer.token`.
    """
    env = dict(env or {})
    if "REDPOLL_ADMIN_TOKEN" not in env and env.get("REDPOLL_AUTH", "on") != "off":
        env["REDPOLL_ADMIN_TOKEN"] = f"test-admin-{secrets.token_hex(8)}"
    port = port or free_port()
    log_path = project / f".serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "redpoll", "serve", "--port", str(port)],
            env=_env(project, env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(
        process, f"http://127.0.0.1:{port}", log_path, env.get("REDPOLL_ADMIN_TOKEN", "")
    )
    try:
        wait_until_responds(server, ready_timeout)
        yield server
    finally:
        server.stop()


def wait_until_responds(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redpoll serve exited early:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/v0/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"redpoll serve did not answer within {timeout}s:\n{server.log()}")


class AdminSQL:
    """A running server's admin API with the shape of a clickhouse-connect client
    (`query(sql).result_rows`), so checks written for a store (e.g. comparing each view
    with its recomputation) read a live server unchanged."""

    def __init__(self, url: str, token: str, timeout: float = 120) -> None:
        self.url = url
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"}

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of `sql` as JSON objects."""
        r = httpx.post(
            f"{self.url}/redpoll/v1/admin/sql",
            json={"query": sql, "format": "json"},
            headers=self._headers,
            timeout=self.timeout,
        )
        r.raise_for_status()
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    def query(self, sql: str) -> Any:
        return types.SimpleNamespace(result_rows=[tuple(row.values()) for row in self.rows(sql)])

    def backfill(self, view: str) -> None:
        r = httpx.post(
            f"{self.url}/redpoll/v1/admin/backfill",
            json={"view": view},
            headers=self._headers,
            timeout=self.timeout,
        )
        r.raise_for_status()
