"""`redpoll migrate status | up | new | check | unlock`."""

from __future__ import annotations

import json
import sys

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.migrations.generate import drift, new_from_files
from redpoll.migrations.runner import new_migration

__all__ = ("migrate",)


@click.group()
def migrate() -> None:
    """Apply and inspect versioned migrations in migrations/."""


@migrate.command()
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(project_dir: str | None, as_json: bool) -> None:
    """Show each migration: applied, pending, failed, modified or missing."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll migrate status") as backend:
        states = backend.migrate_status()
    if as_json:
        click.echo(json.dumps(states, indent=2))
        return
    if not states:
        click.echo("no migrations in migrations/")
    for s in states:
        when = f"  {s['applied_at']}" if s["applied_at"] else ""
        click.echo(f"{s['version']:04d}_{s['name']:<32} {s['status']:<9}{when}")
        if s["error"] and s["status"] != "applied":
            click.echo(f"      {s['error']}")


@migrate.command()
@project_option
@click.option("--to", type=int, default=None, help="Stop after this version.")
def up(project_dir: str | None, to: int | None) -> None:
    """Apply pending migrations in order (idempotent; refuses if an applied file changed)."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll migrate up") as backend:
        result = backend.migrate_up(to)
    count = len(result["applied"])
    click.echo(f"{count} migration(s) applied" if count else "nothing to apply: up to date")


@migrate.command()
@project_option
def check(project_dir: str | None) -> None:
    """Exit 1 when any migration is pending, failed, modified or missing, or when the
    files of sql/ and materialized_views/ and the applied migrations differ: an object
    defined in a file that no applied migration creates, or the reverse (for CI)."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll migrate check") as backend:
        states = backend.migrate_status()
    bad = [s for s in states if s["status"] != "applied"]
    for s in bad:
        detail = f": {s['error']}" if s["error"] else ""
        click.echo(f"{s['version']:04d}_{s['name']}.sql is {s['status']}{detail}", err=True)
    applied = [s["version"] for s in states if s["status"] in {"applied", "modified"}]
    drifted = drift(settings.project_dir, applied).lines()
    for line in drifted:
        click.echo(line, err=True)
    if drifted:
        click.echo("run `redpoll migrate new --from-views`, then `redpoll migrate up`", err=True)
    if bad or drifted:
        sys.exit(1)
    click.echo(f"ok: {len(states)} migration(s) applied, none pending, no drift from the files")


@migrate.command()
@project_option
@click.option(
    "--from-views",
    is_flag=True,
    help="Fill it with the tables and views of sql/ and materialized_views/ that no "
    "migration creates yet (NAME defaults to their files' names).",
)
@click.argument("name", required=False)
def new(project_dir: str | None, from_views: bool, name: str | None) -> None:
    """Create the next numbered migration file (empty, or generated with --from-views)."""
    settings = load(project_dir)
    if from_views:
        path = new_from_files(settings.project_dir, name)
        if path is None:
            click.echo("nothing to generate: every table and view of the files has a migration")
            return
    elif name is None:
        raise click.UsageError("give the migration a NAME (or use --from-views)")
    else:
        path = new_migration(settings.project_dir / "migrations", name)
    click.echo(str(path))


@migrate.command()
@project_option
def unlock(project_dir: str | None) -> None:
    """Remove the migration lock left by a runner that died."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll migrate unlock") as backend:
        removed = backend.migrate_unlock()
    click.echo("lock removed" if removed else "no lock was held")
