"""Scopes, Tinybird's model: `ADMIN`, `PIPES:READ[:<endpoint>]`,
`DATASOURCES:APPEND[:<data source>]`, `DATASOURCES:READ[:<data source>]`.

A `Principal` is whoever a request authenticated as (a static token, a JWT, the local CLI
or, with auth off, anyone) with the scopes it holds. Pure values: no I/O here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from redpoll.errors import ParameterError

__all__ = (
    "ADMIN",
    "DATASOURCES_APPEND",
    "DATASOURCES_READ",
    "PIPES_READ",
    "SCOPE_TYPES",
    "Principal",
    "Scope",
    "check_token_name",
    "parse_scope",
)

ADMIN = "ADMIN"
PIPES_READ = "PIPES:READ"
DATASOURCES_APPEND = "DATASOURCES:APPEND"
DATASOURCES_READ = "DATASOURCES:READ"
SCOPE_TYPES = (ADMIN, PIPES_READ, DATASOURCES_APPEND, DATASOURCES_READ)

_RESOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@dataclasses.dataclass(frozen=True)
class Scope:
    """One grant: a type, optionally narrowed to one resource (endpoint or data source).

    `fixed_params` (JWTs only) are endpoint parameters the caller cannot override.
    """

    type: str
    resource: str | None = None
    fixed_params: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.type}:{self.resource}" if self.resource else self.type

    def covers(self, scope_type: str, resource: str | None) -> bool:
        """True if this grant allows `scope_type` on `resource` (None: on any one)."""
        if self.type == ADMIN:
            return True
        if self.type != scope_type:
            return False
        return self.resource is None or resource is None or self.resource == resource


def parse_scope(text: str) -> Scope:
    """`PIPES:READ:top_items` -> Scope; a clear 400 for anything else."""
    text = text.strip()
    if text == ADMIN:
        return Scope(ADMIN)
    for scope_type in SCOPE_TYPES[1:]:
        if text == scope_type:
            return Scope(scope_type)
        if text.startswith(scope_type + ":"):
            resource = text[len(scope_type) + 1 :]
            if not _RESOURCE.fullmatch(resource):
                raise ParameterError(f"invalid resource name in scope '{text[:200]}'")
            return Scope(scope_type, resource)
    raise ParameterError(
        f"unknown scope '{text[:200]}': use ADMIN, PIPES:READ[:<endpoint>], "
        "DATASOURCES:APPEND[:<data source>] or DATASOURCES:READ[:<data source>]"
    )


def check_token_name(name: str) -> str:
    """Token names: 1-128 of letters, digits, `_`, `.`, `-` (they appear in URLs)."""
    if not _TOKEN_NAME.fullmatch(name):
        raise ParameterError(
            "a token name is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )
    return name


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request is: a name (rate limits are kept per name), its scopes and limits.

    `kind` says where it came from: `token` (created through the API or CLI), `settings`
    (a token given in settings), `jwt`, `local` (the CLI on this machine, through the
    server's lock file) or `open` (auth is off).
    """

    name: str
    scopes: tuple[Scope, ...]
    kind: str = "token"
    #: requests per second this principal may make (None: the `rate_limit_rps` setting)
    rps: int | None = None

    @property
    def is_admin(self) -> bool:
        return any(s.type == ADMIN for s in self.scopes)

    def grant(self, scope_type: str, resource: str | None = None) -> Scope | None:
        """The scope that allows `scope_type` on `resource`; the narrowest one when several
        do (its `fixed_params` then apply). None: not allowed."""
        matching = [s for s in self.scopes if s.covers(scope_type, resource)]
        if not matching:
            return None
        return min(matching, key=lambda s: (s.type == ADMIN, s.resource is None))

    def resources(self, scope_type: str, names: Iterable[str]) -> list[str]:
        """The subset of `names` this principal may use with `scope_type`."""
        return [n for n in names if self.grant(scope_type, n) is not None]
