"""`POST /v0/events?name=<datasource>`: Tinybird-compatible Events API.

Body: NDJSON, one JSON object, or a JSON array; `Content-Encoding: gzip` accepted; any
Content-Type. Answers `{"successful_rows": N, "quarantined_rows": M}` once the rows are
durable and visible in the views: 200 with `wait=true`, 202 otherwise (ADR 0008).
Extra Tinybird query parameters (`format`, `mode`, `from`, ...) are ignored.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from litestar import Controller, Litestar, Request, Response, post
from litestar.datastructures import State
from litestar.params import FromQuery, RawBody

from redpoll.api.auth import append_guard
from redpoll.errors import ConfigError, ParameterError
from redpoll.ingest.service import IngestService

__all__ = ("EventsController",)

MAX_BODY_BYTES = 64 * 1024 * 1024


def decode_body(raw: bytes, encoding: str) -> bytes:
    """Undo `Content-Encoding` (gzip or deflate); reject anything else."""
    encoding = encoding.strip().lower()
    try:
        if encoding in {"", "identity"}:
            return raw
        if encoding in {"gzip", "x-gzip"}:
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"body is not valid {encoding}: {exc}") from exc
    raise ConfigError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")


class EventsController(Controller):
    path = "/v0/events"
    guards = [append_guard]

    @post("", sync_to_thread=True, status_code=202, request_max_body_size=MAX_BODY_BYTES)
    def append(
        self,
        request: Request[Any, Any, Any],
        state: State,
        body: RawBody,
        name: FromQuery[str | None] = None,
        wait: FromQuery[str] = "false",
        line_offset: FromQuery[int] = 0,
    ) -> Response[dict[str, int]]:
        """Append rows to a data source."""
        if not name:
            raise ParameterError("missing required parameter 'name' (the data source)")
        data = decode_body(body, request.headers.get("content-encoding", ""))
        # line_offset (Redpoll extension): quarantine line numbers relative to a file
        result = state.ingest.ingest(name, data, first_line=line_offset + 1)
        status = 200 if wait.lower() in {"true", "1"} else 202
        return Response(result.as_dict(), status_code=status)


def start_ingest(app: Litestar) -> None:
    """Startup hook: the ingestion service on `app.state.ingest`."""
    store = app.state.store
    app.state.ingest = IngestService(store.target, store.settings.project_dir)
    app.state.ingest.open_writers()


def stop_ingest(app: Litestar) -> None:
    """Shutdown hook: finish queued inserts, then close the committers' clients."""
    service = getattr(app.state, "ingest", None)
    if service is not None:
        service.close()
