"""The web console at `/ui` (docs/console.md, docs/adr/0018-console-server-rendered-with-htmx.md):
page shells, guarded HTML fragments and the vendored static files."""

from __future__ import annotations

from typing import Any

from redpoll.console.fragments import ConsoleFragments
from redpoll.console.pages import ConsolePages, static_router

__all__ = ("CONSOLE_HANDLERS",)

#: what app.py adds to its route handlers
CONSOLE_HANDLERS: tuple[Any, ...] = (ConsolePages, ConsoleFragments, static_router)
