"""Tinybird-style JWTs: HS256, signed with the `jwt_signing_key` setting.

Payload: `name`, `exp` (required), `scopes` (`[{"type": "PIPES:READ", "resource":
"<endpoint>", "fixed_params": {...}}]`) and optional `limits` (`{"rps": N}`). PyJWT checks
the signature, the algorithm (HS256 only, so `alg: none` and RS/HS confusion fail) and
`exp`; this module checks the payload's shape. A JWT grants reading only
(`PIPES:READ`, `DATASOURCES:READ`), never ADMIN or APPEND: a leaked signing key exposes
reads, not writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from redpoll.errors import ConfigError, RedpollError, Unauthorized
from redpoll.tokens.scopes import DATASOURCES_READ, PIPES_READ, Principal, Scope, parse_scope

__all__ = ("MIN_KEY_BYTES", "check_signing_key", "decode_jwt", "looks_like_jwt")

#: RFC 7518 section 3.2: an HS256 key must have at least 256 bits.
MIN_KEY_BYTES = 32
JWT_SCOPE_TYPES = (PIPES_READ, DATASOURCES_READ)
_SCALAR = (str, int, float, bool)


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts with a JSON header: how a JWT differs from a static token."""
    return token.startswith("eyJ") and token.count(".") == 2


def check_signing_key(key: str) -> str:
    """The key, if long enough to sign with; a ConfigError naming the setting if not."""
    if key and len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigError(
            f"jwt_signing_key must be at least {MIN_KEY_BYTES} bytes "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return key


def decode_jwt(token: str, key: str) -> Principal:
    """The principal a JWT stands for; `Unauthorized` (403) for any defect."""
    if not key:
        raise Unauthorized("JWTs are not accepted: no jwt_signing_key is configured")
    try:
        payload = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": ["exp"]}, leeway=5
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the JWT has expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid JWT ({type(exc).__name__})") from None
    if not isinstance(payload, Mapping):
        raise Unauthorized("invalid JWT payload")
    name = payload.get("name")
    if not isinstance(name, str) or not name or len(name) > 256:
        raise Unauthorized("invalid JWT: `name` must be a non-empty string")
    scopes = payload.get("scopes")
    if not isinstance(scopes, list) or not scopes:
        raise Unauthorized("invalid JWT: `scopes` must be a non-empty list")
    return Principal(
        name=f"jwt:{name}",
        scopes=tuple(_scope(s) for s in scopes),
        kind="jwt",
        rps=_rps(payload.get("limits")),
    )


def _scope(raw: Any) -> Scope:
    if not isinstance(raw, Mapping):
        raise Unauthorized("invalid JWT: each scope must be an object")
    scope_type, resource = raw.get("type"), raw.get("resource")
    if scope_type not in JWT_SCOPE_TYPES:
        raise Unauthorized(f"invalid JWT: scope type must be one of {list(JWT_SCOPE_TYPES)}")
    if not isinstance(resource, str):
        raise Unauthorized("invalid JWT: each scope needs a `resource` (an endpoint name)")
    try:
        parsed = parse_scope(f"{scope_type}:{resource}")
    except RedpollError as exc:
        raise Unauthorized(f"invalid JWT: {exc.message}") from None
    fixed = raw.get("fixed_params")
    if fixed is None:
        return parsed
    if not isinstance(fixed, Mapping) or not all(
        isinstance(k, str) and _is_param_value(v) for k, v in fixed.items()
    ):
        raise Unauthorized("invalid JWT: `fixed_params` must map names to scalars or lists")
    return Scope(parsed.type, parsed.resource, dict(fixed))


def _is_param_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, _SCALAR) for v in value)
    return isinstance(value, _SCALAR)


def _rps(limits: Any) -> int | None:
    if limits is None:
        return None
    rps = limits.get("rps") if isinstance(limits, Mapping) else None
    if not isinstance(rps, int) or isinstance(rps, bool) or rps < 1:
        raise Unauthorized("invalid JWT: `limits.rps` must be a positive integer")
    return rps
