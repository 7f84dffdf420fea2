"""`redpoll backfill VIEW... | --all`: recompute materialized views from their sources."""

from __future__ import annotations

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.errors import ConfigError
from redpoll.materialized import load_views

__all__ = ("backfill",)


@click.command()
@project_option
@click.option("--all", "all_views", is_flag=True, help="Rebuild every view of the project.")
@click.argument("views", nargs=-1)
def backfill(project_dir: str | None, all_views: bool, views: tuple[str, ...]) -> None:
    """Recompute VIEWS (files of materialized_views/, without .sql) from their sources.

    Use it after adding a view to a store that has data, or to repair one. Each view's
    tables are truncated and refilled by its file's recompute block, from the
    deduplicated events (or the table it reads, e.g. `items`), so nothing is counted
    twice; several views run in dependency order (a view after the views it reads).
    Inserts wait meanwhile (through a running server, too).
    """
    settings = load(project_dir)
    known = load_views(settings.project_dir)
    if all_views == bool(views):
        raise ConfigError(
            "name the views to rebuild or pass --all; views in materialized_views/: "
            + (", ".join(known.names) or "none")
        )
    try:
        ordered = [v.name for v in (known.views if all_views else known.ordered(views))]
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="VIEWS") from exc
    with open_backend(settings, f"redpoll backfill {' '.join(ordered)}") as backend:
        for view in ordered:
            result = backend.backfill(view)
            click.echo(f"{view} rebuilt in {result['seconds']:.1f} s")
