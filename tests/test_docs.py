"""Generated docs must match the code: run `make docs` after changing a command or setting."""

from __future__ import annotations

from pathlib import Path

from redpoll.cli.docgen import cli_markdown, configuration_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == cli_markdown(), "docs/cli.md is stale: run make docs"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == configuration_markdown(), (
        "docs/configuration.md is stale: run make docs"
    )
