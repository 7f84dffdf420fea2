"""Run endpoint queries in two lanes, so heavy callers cannot starve ordinary ones.

*Ordinary* calls (an endpoint with its parameters) and *heavy* calls (anything with a
caller-written `q=`) each get their own pool of read clients and their own worker-thread
limiter: a flood of heavy queries queues behind its own small pool and is answered 429
after a short wait, while ordinary calls keep their clients and threads. Heavy clients
also run with fewer threads (`heavy_query_threads`), so ordinary calls keep a core.

Every call has a deadline: the query's `max_execution_time` plus a small grace. ClickHouse
checks its time limit only between blocks, so a query stuck inside one huge block can
overrun it; at the deadline the caller is answered 408 at once and the query is killed
(`KILL QUERY` by its `log_comment` tag, which `executor.prepare` sets). The abandoned
worker thread ends when ClickHouse gives up, and its client is replaced (`ClientPool`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from redpoll.clickhouse.client import PoolExhausted
from redpoll.endpoints.executor import execute
from redpoll.errors import QueryTimeout, TooBusy

if TYPE_CHECKING:
    from redpoll.clickhouse.client import ClientPool
    from redpoll.endpoints.executor import Query

__all__ = ("Lane", "QueryLanes")

#: Seconds past `max_execution_time` before the caller gets 408 and the query is killed.
DEADLINE_GRACE_S = 0.5
#: How long a heavy call waits for a free heavy client before it is answered 429.
HEAVY_QUEUE_S = 2.0

Killer = Callable[[str], None]
T = TypeVar("T")


class Lane:
    """One pool of read clients, the threads that use them and a queueing policy."""

    def __init__(
        self, name: str, pool: ClientPool, killer: Killer, queue_s: float | None = None
    ) -> None:
        """Args:
        queue_s: longest wait for a free client before 429; None waits up to the deadline.
        """
        self.name = name
        self.pool = pool
        self._kill = killer
        self._queue_s = queue_s
        self._slots = anyio.CapacityLimiter(pool.size)
        # abandoned threads (past their deadline) may still hold a client for a moment;
        # they need threads of their own so new calls are not starved of threads
        self._threads = anyio.CapacityLimiter(pool.size * 4)

    async def run(self, prepare: Callable[[], Query], timeout: float) -> bytes:
        """Build the query with `prepare()` (off the event loop: parsing a `q` can take a
        while) and run it with `timeout` seconds of ClickHouse time; return its bytes.

        Raises:
            TooBusy: no client came free in time (429).
            QueryTimeout: the deadline passed; the query was killed (408).
            DatabaseError: ClickHouse refused the query.
        """
        deadline = anyio.current_time() + timeout + DEADLINE_GRACE_S
        await self._acquire(timeout)
        try:
            call = _Call(prepare)
            with anyio.move_on_at(deadline):
                return await anyio.to_thread.run_sync(
                    self._blocking,
                    call,
                    deadline - anyio.current_time(),
                    abandon_on_cancel=True,
                    limiter=self._threads,
                )
            call.abandoned.set()
            if call.marker:
                await anyio.to_thread.run_sync(self._kill_quietly, call.marker)
            raise QueryTimeout(f"the query exceeded its time limit of {timeout:g} s")
        finally:
            self._slots.release()

    async def call(self, fn: Callable[[], T], timeout: float) -> T:
        """Run `fn` in a worker thread while holding one of this lane's slots, queueing as
        `run` does: the result cache renders a miss this way (endpoints/cache.py), so a
        flood of `q=` calls is refused before sqlglot parses any of them."""
        await self._acquire(timeout)
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._threads)
        finally:
            self._slots.release()

    async def _acquire(self, timeout: float) -> None:
        """Take a slot, queueing at most the lane's queue time (else `timeout`); the
        caller releases it.

        Raises:
            TooBusy: no slot came free in time (429).
        """
        wait = self._queue_s if self._queue_s is not None else timeout
        with anyio.move_on_after(wait) as queued:
            await self._slots.acquire()
        if queued.cancelled_caught:
            raise TooBusy(f"too many {self.name} queries at once; retry shortly")

    def _blocking(self, call: _Call, budget_s: float) -> bytes:
        query = call.prepare()
        call.marker = query.marker
        try:
            with self.pool.borrow(timeout=budget_s) as client:
                if call.abandoned.is_set():  # the caller was answered 408 meanwhile
                    raise QueryTimeout("abandoned")
                return execute(client, query)
        except PoolExhausted:
            raise TooBusy(f"no free {self.name} client; retry shortly") from None

    def _kill_quietly(self, marker: str) -> None:
        with contextlib.suppress(Exception):
            self._kill(marker)


class _Call:
    """One call's state shared between the event loop and its worker thread."""

    def __init__(self, prepare: Callable[[], Query]) -> None:
        self.prepare = prepare
        self.marker = ""
        self.abandoned = threading.Event()


class QueryLanes:
    """The ordinary and the heavy lane of one server."""

    def __init__(self, ordinary: Lane, heavy: Lane) -> None:
        self.ordinary = ordinary
        self.heavy = heavy

    def lane(self, heavy: bool) -> Lane:
        return self.heavy if heavy else self.ordinary
