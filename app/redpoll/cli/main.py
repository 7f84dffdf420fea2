"""The `redpoll` entry point: assembles the command group, nothing else."""

from __future__ import annotations

import sys
from typing import Any

import click

from redpoll import __version__
from redpoll.api.errors import translate_database_error
from redpoll.cli.commands.backfill import backfill
from redpoll.cli.commands.core import init, serve, sql
from redpoll.cli.commands.demo import demo
from redpoll.cli.commands.endpoints import endpoints
from redpoll.cli.commands.evaluate import evaluate_command
from redpoll.cli.commands.ingest import ingest
from redpoll.cli.commands.load import load_command
from redpoll.cli.commands.migrate import migrate
from redpoll.clickhouse.client import DatabaseError
from redpoll.errors import RedpollError

__all__ = ("cli", "main")


class _Group(click.Group):
    """Prints `error: <message>` for user-facing errors instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatabaseError as exc:
            click.echo(f"error: {translate_database_error(exc).message}", err=True)
            sys.exit(1)
        except RedpollError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="redpoll")
def cli() -> None:
    """Redpoll: SQL-first real-time recommendations and analytics on ClickHouse."""


for command in (
    init,
    demo,
    migrate,
    serve,
    sql,
    load_command,
    backfill,
    endpoints,
    ingest,
    evaluate_command,
):
    cli.add_command(command)


def main() -> None:
    cli()
