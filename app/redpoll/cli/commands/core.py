"""`redpoll init`, `redpoll serve` and `redpoll sql`."""

from __future__ import annotations

import logging
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.errors import ConfigError
from redpoll.store import SQL_OUTPUTS

if TYPE_CHECKING:
    from redpoll.settings import Settings

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
    """Run the HTTP API. SIGTERM or Ctrl-C shuts down gracefully.

    Exits 1 with one `error: ...` line when it cannot start, e.g. when another process
    (another `redpoll serve`, `redpoll load`, ...) holds the project's embedded store.
    After a graceful shutdown it exits 143 on SIGTERM, 130 on Ctrl-C.

    A request's line and headers must arrive within `header_timeout_s` (else the
    connection is closed) and fit in `max_header_bytes` (else 431); beyond
    `max_connections` open connections, requests get 503 (docs/configuration.md).
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from redpoll.api.security import install_log_redaction, redact
    from redpoll.app import create_app
    from redpoll.logging_setup import FORMATS, configure_logging
    from redpoll.store import Store

    settings = load(project_dir, host=host, port=port, dev=dev)
    # one root handler for every logger, uvicorn's included (`log_config=None` below):
    # JSON lines by default (`log_format`), each with the request id (logging_setup.py)
    if settings.log_format not in FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(FORMATS)}")
    configure_logging(settings.log_level, settings.log_format, redact=redact)
    # Open the store (and take the embedded data-dir lock) before uvicorn starts: a busy
    # store raises StoreBusy here, which cli/main.py prints as one line; raised inside
    # the app's lifespan it would be a traceback and uvicorn's exit 3.
    store = Store.open(settings, "redpoll serve", read_clients=settings.read_pool_size)
    try:
        app = create_app(settings, store=store, owns_store=True)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.access_log,
            log_config=None,  # uvicorn's loggers propagate to the root handler above
            lifespan="on",
            timeout_graceful_shutdown=10,
            timeout_keep_alive=5,
            limit_concurrency=settings.max_connections,
            **_http_protocol(settings),
        )
        # after uvicorn.Config, which configures uvicorn's loggers: tokens sent as
        # `?token=` would otherwise be printed in every access-log line
        install_log_redaction()
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit as exc:
            # uvicorn exits 3 when startup fails (port in use, a startup hook failed);
            # it has logged why. Redpoll's documented code for any failure is 1.
            if exc.code == STARTUP_FAILURE:
                sys.exit(1)
            raise
        except KeyboardInterrupt:
            # uvicorn re-raises Ctrl-C after its graceful shutdown; click would print
            # "Aborted!" and exit 1. A stop is not an error: the shell's code for SIGINT.
            sys.exit(130)
        if not server.started:
            sys.exit(1)
    finally:
        # The app's lifespan closes the store on a clean shutdown (uvicorn may re-raise
        # SIGTERM right after it, so it must not wait for this line); this covers a
        # startup that failed before or inside the lifespan. A second close is a no-op.
        store.close()


def _http_protocol(settings: Settings) -> dict[str, Any]:
    """uvicorn options bounding request heads.

    With httptools (uvicorn[standard], a dependency): our protocol adds a header deadline
    and a 431 size cap (api/http_protocol.py). Without it uvicorn runs h11, which can
    only cap the head's size (answered 400) and has no header deadline.
    """
    try:
        from redpoll.api.http_protocol import make_protocol
    except ImportError:  # httptools missing
        logging.getLogger("redpoll").warning(
            "httptools is not installed: using h11, without a header read timeout"
        )
        return {"http": "h11", "h11_max_incomplete_event_size": settings.max_header_bytes}
    return {"http": make_protocol(settings)}


@click.command()
@project_option
@click.argument("query")
@click.option("--format", "output", type=click.Choice(sorted(SQL_OUTPUTS)), default="table")
def sql(project_dir: str | None, query: str, output: str) -> None:
    """Run QUERY against the project's ClickHouse and print the result."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll sql") as backend:
        sys.stdout.buffer.write(backend.sql(query, output))
    sys.stdout.flush()
