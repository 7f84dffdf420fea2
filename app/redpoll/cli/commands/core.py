"""`redpoll init`, `redpoll serve` and `redpoll sql`."""

from __future__ import annotations

import logging
import shutil
import sys
from importlib import resources
from pathlib import Path

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.clickhouse.query import OUTPUT_FORMATS
from redpoll.errors import ConfigError

__all__ = ("init", "serve", "sql")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a new, working Redpoll project in DIRECTORY."""
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} exists and is not empty")
    scaffold = resources.files("redpoll") / "scaffold"
    with resources.as_file(scaffold) as source:
        shutil.copytree(
            source, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    click.echo(f"created {directory}\nnext: cd {directory} && redpoll migrate up && redpoll serve")


@click.command()
@project_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1, env REDPOLL_HOST).")
@click.option("--port", type=int, default=None, help="Port (default 8000, env REDPOLL_PORT).")
@click.option("--dev/--no-dev", default=None, help="Reload endpoint files on change.")
def serve(project_dir: str | None, host: str | None, port: int | None, dev: bool | None) -> None:
    """Run the HTTP API. SIGTERM or Ctrl-C shuts down gracefully."""
    import uvicorn

    from redpoll.app import create_app

    settings = load(project_dir, host=host, port=port, dev=dev)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(1)


@click.command()
@project_option
@click.argument("query")
@click.option("--format", "output", type=click.Choice(sorted(OUTPUT_FORMATS)), default="table")
def sql(project_dir: str | None, query: str, output: str) -> None:
    """Run QUERY against the project's ClickHouse and print the result."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll sql") as backend:
        sys.stdout.buffer.write(backend.sql(query, output))
    sys.stdout.flush()
