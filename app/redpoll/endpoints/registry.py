"""The set of live endpoints: an immutable snapshot swapped atomically on reload.

Readers take `registry.snapshot` once per request and never see a half-built state. A
reload compiles every file; a file that fails keeps its last good version serving (if it
had one) and its error is reported in `snapshot.errors`. Reloads are triggered by
`reload()` (admin call, SIGHUP) or, in dev mode, by a polling watcher thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from redpoll.endpoints.loader import iter_endpoint_files, load_endpoint
from redpoll.endpoints.model import Catalog, Endpoint, LoadError
from redpoll.errors import EndpointNotFound

__all__ = ("Registry", "Snapshot")

log = logging.getLogger("redpoll.endpoints")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Endpoints by name, plus the files that failed on the last reload."""

    endpoints: Mapping[str, Endpoint]
    errors: tuple[LoadError, ...] = ()
    version: int = 0

    def get(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise EndpointNotFound(f"The pipe '{name}' does not exist") from None


class Registry:
    """Holds the current `Snapshot` of one endpoints directory."""

    def __init__(self, directory: Path, catalog: Callable[[], Catalog] | Catalog) -> None:
        self.directory = Path(directory)
        self._catalog = catalog
        self._lock = threading.Lock()
        self._snapshot = Snapshot(MappingProxyType({}))
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen: dict[Path, int] = {}

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def catalog(self) -> Catalog:
        return self._catalog() if callable(self._catalog) else self._catalog

    def reload(self) -> Snapshot:
        """Recompile all files and swap in the new snapshot; returns it."""
        with self._lock:
            previous = self._snapshot.endpoints
            catalog = self.catalog()
            endpoints: dict[str, Endpoint] = {}
            errors: list[LoadError] = []
            seen: dict[Path, int] = {}
            for path in iter_endpoint_files(self.directory):
                seen[path] = _mtime(path)
                result = load_endpoint(path, catalog)
                if isinstance(result, LoadError):
                    errors.append(result)
                    log.error("endpoint not (re)loaded: %s", result)
                    if path.stem in previous:
                        endpoints[path.stem] = previous[path.stem]
                else:
                    endpoints[result.name] = result
            self._seen = seen
            self._snapshot = Snapshot(
                MappingProxyType(endpoints), tuple(errors), self._snapshot.version + 1
            )
            return self._snapshot

    def changed(self) -> bool:
        """True when a file was added, removed or modified since the last reload."""
        current = {p: _mtime(p) for p in iter_endpoint_files(self.directory)}
        return current != self._seen

    def watch(self, interval: float = 0.5) -> None:
        """Dev mode: poll file mtimes in a daemon thread and reload on change."""
        if self._watcher is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    if self.changed():
                        self.reload()
                except Exception:  # keep watching; the error is logged
                    log.exception("endpoint reload failed")

        self._watcher = threading.Thread(target=loop, name="redpoll-endpoint-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def wait_for_version(registry: Registry, version: int, timeout: float = 5.0) -> bool:
    """Test helper: wait until the registry reached `version`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.snapshot.version >= version:
            return True
        time.sleep(0.02)
    return False
