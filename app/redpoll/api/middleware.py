"""Every response carries an `x-request-id`: the caller's (if sent) or a new one.

Implemented as an app-level `before_send` hook rather than route middleware, so that
responses Litestar produces before routing (404, 405) carry it too.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Message, Scope

__all__ = ("add_request_id",)


def request_id(scope: Scope) -> str:
    """The request's id, created on first use and kept in the scope state."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"")
        state["request_id"] = incoming.decode("latin-1")[:128] if incoming else uuid.uuid4().hex
    rid: str = state["request_id"]
    return rid


async def add_request_id(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", []))
        headers.append((b"x-request-id", request_id(scope).encode("latin-1")))
        message["headers"] = headers
