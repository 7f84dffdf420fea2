"""Shared CLI plumbing: the `--project` option and turning errors into `error: ...` exits."""

from __future__ import annotations

from typing import Any

import click

from redpoll.settings import Settings, load_settings

__all__ = ("load", "project_option")

project_option = click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Project directory (env REDPOLL_PROJECT_DIR, default: current directory).",
)


def load(project_dir: str | None, **overrides: Any) -> Settings:
    """Settings for a command: its flags over env over redpoll.toml over defaults."""
    return load_settings({"project_dir": project_dir, **overrides})
