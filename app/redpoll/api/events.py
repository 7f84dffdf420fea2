"""`POST /v0/events?name=<datasource>`: Tinybird-compatible Events API.

Body: NDJSON, one JSON object, or a JSON array; `Content-Encoding: gzip` (or deflate)
accepted; any Content-Type. Answers `{"successful_rows": N, "quarantined_rows": M}`: 200
with `wait=true` once the rows are visible in the views (ADR 0008); otherwise 202, by
default (`ack = "durable"`) once the rows are in the write-ahead log, before the INSERT
(ingest/wal.py, ADR 0022), with `ack = "visible"` after the INSERT. Extra Tinybird query
parameters (`format`, `mode`, `from`, ...) are ignored.

Limits (settings in `settings.py`, docs/ingestion.md), each a JSON error:
- a body larger than `max_body_bytes` as sent: 413. The handler reads the body itself
  (`_read_body`) with the limit of this app's settings: a `request_max_body_size` on the
  decorator would be one value for every app built from this class.
- a body that inflates beyond `max_inflated_bytes`: 413. Decompression is streamed with
  `zlib.decompressobj(...).decompress(data, max_length)`, so a gzip/deflate bomb costs at
  most the limit in memory, never its full inflated size.
- more rows (NDJSON lines, array items) than `max_rows_per_request`: 413, counted before
  validation (`IngestService.ingest`); nothing is written.
- `line_offset` (Redpoll extension, quarantine line numbers relative to a file) must be an
  integer from 0 to `MAX_FIRST_LINE - 1`: else 400.
Decompression and validation run in a worker thread, off the event loop; an all-valid
body is validated column by column (the fast path of `ingest/validate.py`), any other by
the general path, with the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from litestar import Controller, Litestar, Request, Response, post
from litestar.datastructures import State
from litestar.params import FromQuery

from redpoll.api.auth import append_guard
from redpoll.api.state import app_state
from redpoll.clickhouse.client import DatabaseError
from redpoll.errors import ConfigError, ParameterError, PayloadTooLarge, RedpollError
from redpoll.ingest.service import MAX_FIRST_LINE, IngestResult, IngestService

if TYPE_CHECKING:
    from redpoll.settings import Settings

log = logging.getLogger("redpoll.api.events")

__all__ = ("EventsController", "decode_body", "ingest_lifespan", "parse_line_offset")

_INFLATE_STEP = 1 << 20  # output bytes per decompress() call
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_LINE_OFFSET = re.compile(r"\+?[0-9]{1,20}")
#: requests validated and logged at once (as many as anyio's default thread limit): with
#: `ack = durable` they wait on the log's shared fsync, so more threads mean larger groups
INGEST_THREADS = 40


def parse_line_offset(value: str) -> int:
    """`line_offset` as an int from 0 to MAX_FIRST_LINE - 1, else a 400."""
    text = value.strip()
    if _LINE_OFFSET.fullmatch(text) and int(text) < MAX_FIRST_LINE:
        return int(text)
    raise ParameterError(f"line_offset must be an integer from 0 to {MAX_FIRST_LINE - 1}")


def _inflate(raw: bytes, wbits: int, limit: int) -> bytes:
    """Decompress `raw` (gzip members, or one zlib stream) to at most `limit` bytes."""
    out: list[bytes] = []
    size = 0
    data = raw
    while True:
        inflater = zlib.decompressobj(wbits)
        while True:
            chunk = inflater.decompress(data, _INFLATE_STEP)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the body inflates to more than {limit} bytes (max_inflated_bytes)"
                )
            out.append(chunk)
            data = inflater.unconsumed_tail
            if inflater.eof or (not chunk and not data):
                break
        if not inflater.eof:
            raise zlib.error("truncated stream")
        data = inflater.unused_data
        if wbits != _GZIP_WBITS or not data.strip(b"\x00"):
            break  # another gzip member may follow (as gzip.decompress reads them)
    return b"".join(out)


def decode_body(raw: bytes, encoding: str, limit: int = 1 << 62) -> bytes:
    """Undo `Content-Encoding` (gzip or deflate) up to `limit` inflated bytes; reject
    anything else (400) and larger results (413)."""
    encoding = encoding.strip().lower()
    try:
        if encoding in {"", "identity"}:
            return raw
        if encoding in {"gzip", "x-gzip"}:
            return _inflate(raw, _GZIP_WBITS, limit)
        if encoding == "deflate":
            return _inflate(raw, zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise ConfigError(f"body is not valid {encoding}: {exc}") from None
    raise ConfigError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body as sent, or a 413 as soon as it is known to exceed `limit` bytes."""
    too_large = PayloadTooLarge(f"the body is larger than {limit} bytes (max_body_bytes)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _ingest(
    service: IngestService,
    name: str,
    raw: bytes,
    encoding: str,
    settings: Settings,
    first_line: int,
    wait: bool,
) -> IngestResult:
    body = decode_body(raw, encoding, settings.max_inflated_bytes)
    try:
        return service.ingest(
            name,
            body,
            first_line=first_line,
            max_rows=settings.max_rows_per_request,
            wait=wait,
        )
    except DatabaseError as exc:
        # rows were validated before the INSERT: a ClickHouse error here (a view failing,
        # the server gone) is ours, never the caller's, and nothing of it was stored
        log.error("ingest into %s failed: %s", name, exc)
        raise RedpollError(f"the insert into {name} failed", status=500) from None


class EventsController(Controller):
    path = "/v0/events"
    guards = [append_guard]

    # the body limit is this app's `max_body_bytes`, enforced by `_read_body`
    @post("", status_code=202, request_max_body_size=None)
    async def append(
        self,
        request: Request[Any, Any, Any],
        state: State,
        name: FromQuery[str | None] = None,
        wait: FromQuery[str] = "false",
        line_offset: FromQuery[str] = "0",
    ) -> Response[dict[str, int]]:
        """Append rows to a data source."""
        if not name:
            raise ParameterError("missing required parameter 'name' (the data source)")
        first_line = parse_line_offset(line_offset) + 1
        wiring = app_state(state)
        settings = wiring.settings
        raw = await _read_body(request, settings.max_body_bytes)
        encoding = request.headers.get("content-encoding", "")
        waits = wait.lower() in {"true", "1"}
        # the executor's own threads, not anyio's: `anyio.to_thread` enters a cancel scope
        # and a capacity limiter per call, a third of the event loop's time for a
        # one-event request (README, ingest figures)
        result = await asyncio.get_running_loop().run_in_executor(
            wiring.ingest_threads,
            functools.partial(
                _ingest, wiring.ingest, name, raw, encoding, settings, first_line, waits
            ),
        )
        return Response(result.as_dict(), status_code=200 if waits else 202)


@contextlib.asynccontextmanager
async def ingest_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The ingestion service (after the store): opened with its writers (crash repair
    first); on shutdown it finishes queued inserts, then closes its clients."""
    wiring = app_state(app.state)
    # this app's settings carry its limits (a test may share one store between apps)
    service = IngestService.for_store(wiring.store, wiring.settings)
    threads = ThreadPoolExecutor(INGEST_THREADS, thread_name_prefix="ingest")
    try:
        service.open_writers()
        wiring.ingest = service
        wiring.ingest_threads = threads
        yield
    finally:
        threads.shutdown(wait=True)
        service.close()
