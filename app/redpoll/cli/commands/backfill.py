"""`redpoll backfill VIEW`: recompute a materialized view's tables from `events`."""

from __future__ import annotations

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.ingest.writer import VIEWS

__all__ = ("backfill",)


@click.command()
@project_option
@click.argument("view", type=click.Choice(sorted(VIEWS)))
def backfill(project_dir: str | None, view: str) -> None:
    """Recompute VIEW from `events` (after adding a view to a store that has data).

    The view's target tables are rebuilt from the deduplicated events, so nothing is
    counted twice; inserts wait meanwhile (through a running server, too).
    """
    settings = load(project_dir)
    with open_backend(settings, f"redpoll backfill {view}") as backend:
        result = backend.backfill(view)
    click.echo(f"{view} rebuilt from events in {result['seconds']:.1f} s")
