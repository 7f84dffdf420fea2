"""Who holds the embedded chDB data directory (ADR 0006).

chDB lets ONE process open a data directory; a second one fails deep inside the engine.
Redpoll takes an exclusive, non-blocking `flock` on `<project>/.redpoll/store.lock` before
opening an embedded store and writes its pid and role there. The OS drops the lock when
the process dies, so a crashed holder never leaves a stale lock. A server also writes
`server.json` (address and a per-start local token, mode 0600) so CLI commands can go through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from redpoll.errors import StoreBusy

__all__ = ("ServerInfo", "StoreLock", "read_server_info")

LOCK_NAME = "store.lock"
SERVER_NAME = "server.json"


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """How to reach the `redpoll serve` process that holds the store."""

    pid: int
    url: str
    #: the server's per-start ADMIN token for CLI commands on this machine (file mode 0600)
    local_token: str


class StoreLock:
    """Exclusive ownership of a project's embedded store for this process."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self, role: str) -> None:
        """Take the lock or raise `StoreBusy` at once, naming the holder.

        Args:
            role: what this process is, e.g. `redpoll serve` or `redpoll migrate up`.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _parse(handle.read())
            handle.close()
            raise StoreBusy(_busy_message(self.state_dir, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "role": role, "since": time.time(), "argv": sys.argv})
        )
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                (self.state_dir / SERVER_NAME).unlink(missing_ok=True)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def publish_server(self, info: ServerInfo) -> None:
        """Tell CLI commands how to reach this server (only the lock holder may)."""
        path = self.state_dir / SERVER_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dataclasses.asdict(info), fh)

    def is_held_elsewhere(self) -> bool:
        """True when another live process holds the lock (checked without keeping it)."""
        if not self.path.exists():
            return False
        with open(self.path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


def read_server_info(state_dir: Path) -> ServerInfo | None:
    """The running server's address, if the store is held by a live `redpoll serve`."""
    if not StoreLock(state_dir).is_held_elsewhere():
        return None
    try:
        data = json.loads((state_dir / SERVER_NAME).read_text(encoding="utf-8"))
        return ServerInfo(int(data["pid"]), str(data["url"]), str(data["local_token"]))
    except (OSError, ValueError, KeyError):
        return None


def _parse(text: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(text)
        return data
    except ValueError:
        return {}


def _busy_message(state_dir: Path, holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')} ({holder.get('role', 'unknown command')})"
    return (
        f"the embedded store in {state_dir} is in use by {who}. chDB allows one process per "
        "data directory: wait for that command to finish, or stop it. While `redpoll serve` "
        "runs, CLI commands go through it automatically."
    )
