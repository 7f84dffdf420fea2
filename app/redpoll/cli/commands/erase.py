"""`redpoll erase user|item ID`: forget a user or an item, exactly (ADR 0021)."""

from __future__ import annotations

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option

__all__ = ("erase",)


@click.group()
def erase() -> None:
    """Remove a user's or an item's rows and their share of every view."""


def _run(project_dir: str | None, key: str, value: str) -> None:
    settings = load(project_dir)
    with open_backend(settings, f"redpoll erase {key}") as backend:
        result = backend.erase(key, value)
    removed = result.get("removed", {})
    detail = ", ".join(f"{table} {rows}" for table, rows in sorted(removed.items())) or "nothing"
    click.echo(f"erased {key} {value}: rows removed: {detail}")


_YES = click.confirmation_option(
    "--yes", prompt="This removes the rows for good. Continue?", help="Do not ask to confirm."
)


@erase.command()
@project_option
@_YES
@click.argument("user_id")
def user(project_dir: str | None, user_id: str) -> None:
    """Remove USER_ID's events (their user_id) and what they added to every view.

    Every data source with a `user_id` column loses the user's rows; each one's views
    (history, co-purchase, trending, ...) are rebuilt from what remains while inserts
    wait, so ingest may go on (through a running server, too). Also removed: the user's
    quarantined lines and logged endpoint calls (`pipe_stats`) that carried USER_ID as
    a parameter. Logged to `datasources_ops_log`. Events sent after it are stored.
    """
    _run(project_dir, "user_id", user_id)


@erase.command()
@project_option
@_YES
@click.argument("item_id")
def item(project_dir: str | None, item_id: str) -> None:
    """Remove ITEM_ID (an item withdrawn from sale) from the events and the catalog.

    Every data source with an `item_id` column (`events`, `items`) loses the item's
    rows; their views (co-purchase pairs, trending, items_latest, ...) are rebuilt from
    what remains while inserts wait. Logged to `datasources_ops_log`.
    """
    _run(project_dir, "item_id", item_id)
