"""Process-wide logging for `redpoll serve` (and other long-running commands).

`configure_logging(level, fmt)` puts one handler on the root logger:

- `json` (the `log_format` default): one JSON object per line, with `time` (UTC, ISO
  8601), `level`, `logger`, `message`, `request_id` (null outside a request) and, when
  there is one, `exception` (the formatted traceback);
- `text`: `time level logger [request_id]: message` for a terminal.

`REQUEST_ID` is a context variable: the API sets it for the duration of each request
(api/metrics.py `observe_requests`), so every record logged while a request runs, in
the event loop or in a worker thread it started (anyio copies the context), carries
the request's `x-request-id`, uvicorn's access line included.

Foundation layer (docs/architecture.md): knows nothing of Redpoll. The token redaction
filter lives in the API (api/security.py); the caller passes its `redact` function so
that tracebacks, which no logging filter sees, are redacted too.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Callable
from typing import IO, Any

__all__ = ("FORMATS", "REQUEST_ID", "JsonFormatter", "TextFormatter", "configure_logging")

FORMATS = ("json", "text")

#: the id of the request being handled (its `x-request-id`), None outside requests
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "redpoll_request_id", default=None
)


def _identity(text: str) -> str:
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `redact` is applied to the message and traceback."""

    def __init__(self, redact: Callable[[str], str] = _identity) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._redact(record.getMessage()),
            "request_id": REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self._redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger [request_id]: message` (the id only inside a request)."""

    def __init__(self, redact: Callable[[str], str] = _identity) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        rid = REQUEST_ID.get()
        record.rid = f" [{rid}]" if rid else ""
        return self._redact(super().format(record))


def configure_logging(
    level: str,
    fmt: str = "json",
    *,
    redact: Callable[[str], str] = _identity,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one writing `fmt` lines to `stream`
    (stderr); set the root level. Python warnings go through logging too (one JSON line
    each). Returns the handler (its filters are the caller's to add)."""
    if fmt not in FORMATS:
        raise ValueError(f"log_format must be one of {FORMATS}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return handler
