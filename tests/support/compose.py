"""Reading compose files as compose does (variable interpolation, environment and port
syntaxes) for tests/unit/test_compose.py and tests/unit/test_compose_cluster.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Environment variable names that hold secrets.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|SIGNING_KEY|API_KEY", re.IGNORECASE)
#: `${NAME:?message}`: compose stops with `message` when NAME is unset or empty.
REQUIRED_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")
#: `${NAME:-}`: optional, empty when unset.
OPTIONAL_EMPTY_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):-\}")


INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    """A `${NAME?message}` / `${NAME:?message}` reference whose variable is missing."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation of one string (no nesting, which the file does not
    use): https://docs.docker.com/reference/compose-file/interpolation/"""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op is None:
            return current or ""
        if op.endswith("-"):
            return arg if empty else current or ""
        if op.endswith("?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return current or ""
        return "" if empty else arg  # "+": the alternative when set

    return INTERPOLATION.sub(replace, value)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    """The compose document `node` with every string value interpolated from `env`."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    return node


def strings(node: Any) -> list[str]:
    """Every string value of a parsed YAML document (not its keys)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    return []


def service_env(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, list or mapping syntax, as a mapping (None: no value, i.e.
    passed through from the environment compose runs in, or left unset)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in raw)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in raw.items()}


def published_host_ips(ports: list[Any]) -> list[str]:
    """The host address of each published port ('' when it binds every interface)."""
    addresses = []
    for entry in ports:
        if isinstance(entry, dict):  # long syntax
            addresses.append(str(entry.get("host_ip", "")))
            continue
        spec = str(entry).rsplit("/", 1)[0]  # drop /tcp, /udp
        if spec.startswith("["):  # [::1]:8000:8000
            addresses.append(spec[1 : spec.index("]")])
            continue
        parts = spec.split(":")
        addresses.append(parts[0] if len(parts) == 3 else "")
    return addresses
