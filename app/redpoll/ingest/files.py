"""Read CSV, NDJSON and Parquet files (optionally gzip-compressed) as chunks of NDJSON.

`redpoll load` sends every chunk through the same path as `POST /v0/events`, so file
loads get the same validation, quarantine and dedup. CSV empty fields mean "missing"
(the column's default applies); every CSV value is a JSON string (the columns' converters
accept numeric strings for numbers, `convert.py`); a byte order mark is ignored. Parquet
is read with pyarrow, which chDB already needs.

A chunk ends at `rows_per_chunk` rows or before it would pass `max_chunk_bytes` (a row
larger than that is a chunk of its own), so chunks sent to a running server stay below
its `max_body_bytes` (default: half of that setting's default).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import msgspec

from redpoll.errors import ConfigError
from redpoll.settings import setting_default

__all__ = ("FORMATS", "MAX_CHUNK_BYTES", "detect_format", "read_chunks")

FORMATS = ("csv", "ndjson", "parquet")
#: Default chunk size cap: half the default `max_body_bytes` of a server.
MAX_CHUNK_BYTES: int = setting_default("max_body_bytes") // 2
_encode = msgspec.json.Encoder().encode


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    mapping = {
        ".csv": "csv",
        ".ndjson": "ndjson",
        ".jsonl": "ndjson",
        ".json": "ndjson",
        ".parquet": "parquet",
    }
    if ext not in mapping:
        raise ConfigError(f"{path}: cannot tell the format from the name; use --format")
    return mapping[ext]


def read_chunks(
    path: Path, fmt: str, rows_per_chunk: int = 20_000, max_chunk_bytes: int = MAX_CHUNK_BYTES
) -> Iterator[tuple[bytes, int, int]]:
    """Yield `(ndjson chunk, rows in it, bytes of the file consumed so far)`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if fmt == "parquet":
        yield from _parquet_chunks(path, rows_per_chunk, max_chunk_bytes)
        return
    with open(path, "rb") as raw:
        stream: IO[bytes] = (
            cast("IO[bytes]", gzip.GzipFile(fileobj=raw)) if path.suffix == ".gz" else raw
        )
        if fmt == "ndjson":
            lines = (line.rstrip(b"\r\n") for line in stream if line.strip())
        elif fmt == "csv":
            reader = csv.DictReader(
                io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
            )
            lines = (
                _encode({k: v for k, v in record.items() if k and v not in ("", None)})
                for record in reader
            )
        else:
            raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        for chunk, rows in _chunked(lines, rows_per_chunk, max_chunk_bytes):
            yield chunk, rows, raw.tell()


def _chunked(lines: Iterator[bytes], max_rows: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Join NDJSON lines into chunks of at most `max_rows` rows and `max_bytes` bytes."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and (len(chunk) >= max_rows or size + len(line) + 1 > max_bytes):
            yield b"\n".join(chunk), len(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        yield b"\n".join(chunk), len(chunk)


def _parquet_chunks(path: Path, size: int, max_bytes: int) -> Iterator[tuple[bytes, int, int]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    total_rows = max(parquet.metadata.num_rows, 1)
    file_size = path.stat().st_size
    done = 0
    for batch in parquet.iter_batches(batch_size=size):
        records: list[dict[str, Any]] = batch.to_pylist()
        for chunk, rows in _chunked((_encode(r) for r in records), size, max_bytes):
            done += rows
            yield chunk, rows, int(file_size * done / total_rows)
