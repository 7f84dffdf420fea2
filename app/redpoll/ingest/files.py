"""Read CSV, NDJSON and Parquet files (optionally gzip-compressed) as chunks of NDJSON.

`redpoll load` sends every chunk through the same path as `POST /v0/events`, so file
loads get the same validation, quarantine and dedup. CSV empty fields mean "missing"
(the column's default applies). Parquet is read with pyarrow, which chDB already needs.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from redpoll.errors import ConfigError

__all__ = ("FORMATS", "detect_format", "read_chunks")

FORMATS = ("csv", "ndjson", "parquet")
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
    path: Path, fmt: str, rows_per_chunk: int = 20_000
) -> Iterator[tuple[bytes, int, int]]:
    """Yield `(ndjson chunk, rows in it, bytes of the file consumed so far)`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if fmt == "parquet":
        yield from _parquet_chunks(path, rows_per_chunk)
        return
    with open(path, "rb") as raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        if fmt == "ndjson":
            yield from _ndjson_chunks(stream, raw, rows_per_chunk)
        elif fmt == "csv":
            yield from _csv_chunks(stream, raw, rows_per_chunk)
        else:
            raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _ndjson_chunks(
    stream: IO[bytes], raw: IO[bytes], size: int
) -> Iterator[tuple[bytes, int, int]]:
    lines: list[bytes] = []
    for line in stream:
        if line.strip():
            lines.append(line.rstrip(b"\r\n"))
        if len(lines) >= size:
            yield b"\n".join(lines), len(lines), raw.tell()
            lines = []
    if lines:
        yield b"\n".join(lines), len(lines), raw.tell()


def _csv_chunks(stream: IO[bytes], raw: IO[bytes], size: int) -> Iterator[tuple[bytes, int, int]]:
    reader = csv.DictReader(
        io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    )
    rows: list[bytes] = []
    for record in reader:
        rows.append(_encode({k: v for k, v in record.items() if k and v not in ("", None)}))
        if len(rows) >= size:
            yield b"\n".join(rows), len(rows), raw.tell()
            rows = []
    if rows:
        yield b"\n".join(rows), len(rows), raw.tell()


def _parquet_chunks(path: Path, size: int) -> Iterator[tuple[bytes, int, int]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    total_rows = max(parquet.metadata.num_rows, 1)
    file_size = path.stat().st_size
    done = 0
    for batch in parquet.iter_batches(batch_size=size):
        records: list[dict[str, Any]] = batch.to_pylist()
        done += len(records)
        chunk = b"\n".join(_encode(r) for r in records)
        yield chunk, len(records), int(file_size * done / total_rows)
