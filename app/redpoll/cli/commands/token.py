"""`redpoll token create|list|refresh|revoke`: static tokens, as the Tokens API manages them.

Through a running server (or `server_url` with an ADMIN `token`) the change applies on
its next request; on a stopped embedded store it is written to the store directly.
"""

from __future__ import annotations

import json
from typing import Any

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option

__all__ = ("token",)


@click.group()
def token() -> None:
    """Create, list, rotate and revoke static tokens (scopes: docs/security.md)."""


def _show_value(created: dict[str, Any], json_output: bool) -> None:
    if json_output:
        click.echo(json.dumps(created))
        return
    click.echo(f"{created['token']}")
    click.echo(
        f"token '{created['name']}' ({', '.join(map(str, created.get('scope', [])))}); "
        "the value above is shown only now",
        err=True,
    )


@token.command("create")
@project_option
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="ADMIN, PIPES:READ[:<endpoint>], DATASOURCES:APPEND[:<data source>] or "
    "DATASOURCES:READ[:<data source>]; repeatable.",
)
@click.option("--rps", type=click.IntRange(min=1), default=None, help="Requests/s allowed.")
@click.option("--json", "json_output", is_flag=True, help="Print the answer as JSON.")
@click.argument("name")
def create(
    project_dir: str | None, scopes: tuple[str, ...], rps: int | None, json_output: bool, name: str
) -> None:
    """Create token NAME and print its value (once: only its hash is stored)."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll token create") as backend:
        _show_value(backend.token_create(name, list(scopes), rps), json_output)


@token.command("list")
@project_option
@click.option("--json", "json_output", is_flag=True, help="Print the answer as JSON.")
def list_tokens(project_dir: str | None, json_output: bool) -> None:
    """Every token's name, scopes and limits (never a value)."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll token list") as backend:
        listed = backend.token_list()
    if json_output:
        click.echo(json.dumps(listed))
        return
    for item in listed:
        rps = item.get("limits", {}).get("rps")
        extra = f"  rps={rps}" if rps else ""
        click.echo(f"{item['name']}\t{' '.join(item['scope'])}{extra}\t({item['origin']})")


@token.command("refresh")
@project_option
@click.option("--json", "json_output", is_flag=True, help="Print the answer as JSON.")
@click.argument("name")
def refresh(project_dir: str | None, json_output: bool, name: str) -> None:
    """Give token NAME a new value (printed once); the old value stops working."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll token refresh") as backend:
        _show_value(backend.token_refresh(name), json_output)


@token.command("revoke")
@project_option
@click.argument("name")
def revoke(project_dir: str | None, name: str) -> None:
    """Delete token NAME: it fails from the next request."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll token revoke") as backend:
        backend.token_revoke(name)
    click.echo(f"token '{name}' revoked")
