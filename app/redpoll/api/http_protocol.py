"""uvicorn's httptools protocol with a header-read deadline and a header size cap.

uvicorn has neither: a fresh connection gets no timer at all, the
keep-alive timer is cancelled on the first byte of the next request, and httptools
buffers headers without bound. So 500 half-sent-header connections stay open forever,
and 2 MB of headers are parsed. This subclass adds, per connection:

- a deadline of `header_timeout_s` for the request line and headers, counted from the
  connection (nothing sent yet) or from the first byte of a request; a connection that
  misses it is closed (with 408 when part of a request had arrived);
- a cap of `max_header_bytes` on request line plus headers: 431, then close.

`make_protocol(settings)` returns the class to pass as `uvicorn.Config(http=...)`.
Without httptools, `redpoll serve` falls back to h11 with `h11_max_incomplete_event_size`
(oversized headers get 400 there, and no header deadline; see docs/cli.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from redpoll.api.errors import DOCS_URL
from redpoll.api.security import NO_STORE, SECURITY_HEADERS

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = ("HardenedHttpToolsProtocol", "make_protocol")

# What `b"GET " + url + b" HTTP/1.1\r\n"` and each `name: value\r\n` add around the
# parsed pieces, so the size check at `on_headers_complete` matches the bytes on the wire.
_REQUEST_LINE_OVERHEAD = len(b"  HTTP/1.1\r\n")
_HEADER_OVERHEAD = len(b": \r\n")
# How long a refused connection keeps draining input before it is closed (see `_refuse`).
_LINGER_S = 2.0


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that bounds how long and how large a request head may be."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_pending = True  # waiting for the request line + headers of a request
        self._head_bytes = 0  # bytes received while that head is incomplete
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False  # the connection is being closed: ignore further input

    # --- connection events --------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms no timer for a fresh connection: one that never sends would stay.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._headers_pending:
            # A chunk may also carry body bytes after the head's end; the head then
            # completes inside `super().data_received`, which resets the count, so only
            # a head still incomplete after more than `max_header_bytes` is refused.
            self._head_bytes += len(data)
            self._arm_head_timer()
        super().data_received(data)
        if (
            self._headers_pending
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(431, f"request line and headers exceed {self.max_header_bytes} bytes")

    # --- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        self._head_bytes = 0
        self._cancel_head_timer()
        size = len(self.parser.get_method()) + len(self.url) + _REQUEST_LINE_OVERHEAD
        size += sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers)
        if size <= self.max_header_bytes:
            super().on_headers_complete()
            return
        # The head completed before the byte count above tripped (e.g. all in one chunk):
        # answer 431 through the normal cycle (it keeps pipelining order) and close,
        # instead of handing the request to the app.
        app, self.app = self.app, _too_large_app(self.max_header_bytes)
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._headers_pending = True
        self._head_bytes = 0

    # --- enforcement --------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None and self._headers_pending and not self._refused:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._headers_pending:
            return
        if self._head_bytes:
            self._refuse(408, f"request headers not received within {self.header_timeout_s:g} s")
        else:
            self._refuse(None, "")  # nothing sent: just close, as for an idle keep-alive

    def _refuse(self, status: int | None, message: str) -> None:
        """Stop reading this connection; answer `status` unless a response is under way."""
        self._refused = True
        self._cancel_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head went wrong while an earlier request is still answered:
            # writing now would interleave with that response. Close after it instead.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if status is None:
            self.transport.close()
            return
        self.logger.debug("closing %s: %s", self.client, message)
        self.transport.write(_raw_response(status, message, self.server_state.default_headers))
        if status == 431 and self.transport.can_write_eof():
            # Lingering close: closing with unread input makes the kernel send RST, and a
            # client still sending its (huge) head would lose the 431. Half-close, drop
            # what still arrives (`_refused`), close for good after a short grace.
            self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message, "documentation": DOCS_URL}).encode()


def _raw_response(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = _error_body(message)
    parts = [STATUS_LINE[status]]
    # written here, not by the app: its `before_send` hooks (api/security.py) never run
    for name, value in [*default_headers, *SECURITY_HEADERS, NO_STORE]:
        parts += [name, b": ", value, b"\r\n"]
    parts += [
        b"content-type: application/json\r\n",
        b"content-length: ",
        str(len(body)).encode(),
        b"\r\nconnection: close\r\n\r\n",
        body,
    ]
    return b"".join(parts)


def _too_large_app(limit: int) -> Any:
    body = _error_body(f"request line and headers exceed {limit} bytes")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 431,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    *SECURITY_HEADERS,
                    NO_STORE,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def make_protocol(settings: Settings) -> type[HardenedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bound to these settings."""
    return type(
        "RedpollHttpProtocol",
        (HardenedHttpToolsProtocol,),
        {
            "header_timeout_s": float(settings.header_timeout_s),
            "max_header_bytes": int(settings.max_header_bytes),
        },
    )
