"""Receive a data file for `POST /v0/datasources`: a multipart upload, a form, or a raw body.

The body is streamed to a file in a directory the caller owns, counting bytes: past
`limit` (setting `import_max_bytes`) the request fails with 413 and nothing is kept in
memory beyond one chunk. Multipart is parsed incrementally with `multipart` (the parser
Litestar itself uses): the first part with a file name (Tinybird's SDK sends the field
`csv` for every format) is the data; other parts are small form fields (`url`, `format`,
`mode`, at most 64 KiB in all). An `application/x-www-form-urlencoded` body is a form
(`url=...`, as Tinybird's SDK sends a URL import). Any other body is the file itself.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Any

from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from redpoll.errors import ParameterError, PayloadTooLarge

__all__ = ("MAX_FORM_BYTES", "Received", "read_small_body", "receive")

#: form fields (everything but the file) at most
MAX_FORM_BYTES = 64 * 1024


@dataclasses.dataclass
class Received:
    """What a request carried: the file (if any), its name and multipart field, the form."""

    path: Path | None = None
    filename: str = ""
    field: str = ""
    form: dict[str, str] = dataclasses.field(default_factory=dict)
    content_type: str = ""


async def receive(request: Any, limit: int, directory: Path) -> Received:
    """Read the request body into `directory/upload` (see the module docstring)."""
    content_type = request.headers.get("content-type", "")
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if kind == "multipart/form-data":
        return await _multipart(request, _boundary(params), limit, directory)
    if kind == "application/x-www-form-urlencoded":
        body = await read_small_body(request, MAX_FORM_BYTES, "the form")
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        return Received(form=form, content_type=kind)
    path = directory / "upload"
    size = 0
    with open(path, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)
    return Received(path if size else None, content_type=kind)


async def _multipart(request: Any, boundary: str, limit: int, directory: Path) -> Received:
    received = Received(content_type="multipart/form-data")
    size = form_size = 0
    segment: MultipartSegment | None = None
    sink: Any = None
    value = bytearray()
    try:
        with PushMultipartParser(boundary, max_segment_count=64) as parser:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment = part
                        if part.filename and received.path is None:
                            received.path = directory / "upload"
                            received.filename = part.filename
                            received.field = part.name
                            sink = open(received.path, "wb")  # noqa: SIM115 (closed below)
                    elif part:
                        if sink is not None:
                            sink.write(part)
                        elif segment is not None and not segment.filename:
                            form_size += len(part)
                            if form_size > MAX_FORM_BYTES:
                                raise ParameterError("the form fields are too large")
                            value.extend(part)
                    else:  # end of a part
                        if sink is not None:
                            sink.close()
                            sink = None
                        elif segment is not None and not segment.filename:
                            received.form[segment.name] = value.decode("utf-8", "replace")
                        value = bytearray()
                        segment = None
            parser.close()
    except ParserLimitReached:
        raise ParameterError("too many parts in the multipart body") from None
    except ParserError as exc:
        raise ParameterError(f"invalid multipart/form-data body ({exc})") from None
    finally:
        if sink is not None:
            sink.close()
    return received


async def read_small_body(request: Any, limit: int, what: str = "the body") -> bytes:
    """The whole body of a request that must be small (a form), read as it streams in so
    that a large one is refused (413) before it is all held in memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _boundary(params: str) -> str:
    for item in params.split(";"):
        key, _, value = item.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    raise ParameterError("multipart/form-data without a boundary")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than {limit} bytes (import_max_bytes)")
