"""`redpoll load DATASOURCE FILE`: bulk-load through the events validation path.

The file is checked before anything opens the store: a missing or unreadable FILE is the
one line `error: cannot read FILE: <reason>` (exit 1), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.errors import ConfigError
from redpoll.ingest.files import FORMATS, detect_format, read_chunks

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

__all__ = ("load_command",)

_Chunk = tuple[bytes, int, int]


@click.command("load")
@project_option
@click.argument("datasource")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="File format (default: from the extension; .gz is decompressed).",
)
@click.option("--chunk-rows", type=int, default=20_000, show_default=True)
def load_command(
    project_dir: str | None, datasource: str, file: Path, fmt: str | None, chunk_rows: int
) -> None:
    """Load FILE (CSV, NDJSON or Parquet; gzip ok) into DATASOURCE with validation."""
    settings = load(project_dir)
    size = _readable_size(file)
    fmt = fmt or detect_format(file)
    ok = quarantined = 0
    progress: ProgressBar[int] = click.progressbar(
        length=size, label=f"loading {file.name}", file=click.get_text_stream("stderr")
    )
    with (
        open_backend(settings, f"redpoll load {datasource} {file.name}") as backend,
        progress as bar,
    ):
        position = 0
        line = 1 if fmt == "csv" else 0  # quarantine lines count from the file's top
        # half the body limit: a server with the same settings never answers 413
        chunks = read_chunks(file, fmt, chunk_rows, max_chunk_bytes=settings.max_body_bytes // 2)
        for chunk, rows, consumed in _reading(file, chunks):
            result = backend.ingest(datasource, chunk, line_offset=line)
            line += rows
            ok += result["successful_rows"]
            quarantined += result["quarantined_rows"]
            bar.update(consumed - position)
            position = consumed
    click.echo(
        f"{ok} rows loaded into {datasource}, {quarantined} quarantined"
        + (f" (see {datasource}_quarantine)" if quarantined else "")
    )


def _readable_size(file: Path) -> int:
    """FILE's size, once it is known to open for reading; else a one-line error."""
    try:
        with open(file, "rb"):
            return file.stat().st_size
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None


def _reading(file: Path, chunks: Iterator[_Chunk]) -> Iterator[_Chunk]:
    """`chunks`, with a read error half-way (a file removed, a bad gzip) as one line."""
    try:
        yield from chunks
    except (OSError, EOFError) as exc:
        raise ConfigError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
