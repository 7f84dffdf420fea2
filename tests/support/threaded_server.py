"""A Redpoll app served by uvicorn in a thread on a free port, over a store the test
owns: for clients that need a real HTTP server (the Tinybird SDK, `url=` imports)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from redpoll.app import create_app
from redpoll.settings import Settings
from redpoll.store import Store
from redpoll.testing import free_port


@contextlib.contextmanager
def serve_in_thread(settings: Settings, store: Store, *, ready_s: float = 30.0) -> Iterator[str]:
    """Yield the server's base URL once `/v0/health` answers 200; on exit stop the server
    and close the store's read pools (the store itself stays the caller's)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, store=store), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if httpx.get(url + "/v0/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {url} did not answer within {ready_s:g} s")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(20)
        store.close_read_pools()
