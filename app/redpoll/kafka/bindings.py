"""Kafka bindings: `kafka/<datasource>.toml` files, read and checked (ADR 0009).

A binding names the topic and consumer group feeding a data source, the batch size/time,
and extra librdkafka properties. Secret properties may only be written as `"${ENV_VAR}"`
references (expanded from the environment), so credentials are never committed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redpoll.errors import ConfigError

__all__ = ("BINDINGS_DIR", "ENGINES", "FORMATS", "KafkaBinding", "load_bindings")

BINDINGS_DIR = "kafka"
FORMATS = ("JSONEachRow",)
ENGINES = ("redpoll", "clickhouse")
#: librdkafka properties that must never be committed literally: use "${ENV_VAR}".
SECRET_PROPERTIES = frozenset(
    {
        "sasl.password",
        "sasl.username",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "ssl.certificate.pem",
    }
)
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclasses.dataclass(frozen=True)
class KafkaBinding:
    """`kafka/<datasource>.toml`: which topic feeds a data source, and how."""

    datasource: str
    topic: str
    group: str
    format: str = "JSONEachRow"
    engine: str = "redpoll"  # "clickhouse": the server's Kafka engine consumes (migration)
    batch_rows: int = 50_000
    batch_ms: int = 500
    auto_offset_reset: str = "earliest"
    #: extra librdkafka properties (security.protocol, sasl.mechanism, ...), env expanded
    properties: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    def consumer_config(self, brokers: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": brokers,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 5000,
            "log_level": 3,
            **self.properties,
        }


_KEYS = {
    "topic",
    "group",
    "format",
    "engine",
    "batch_rows",
    "batch_ms",
    "auto_offset_reset",
    "properties",
}


def load_bindings(
    project_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, KafkaBinding]:
    """Every `kafka/<datasource>.toml` of the project, validated, secrets from `environ`.

    Raises:
        ConfigError: unknown key, bad value, a literal secret, or a missing env variable.
    """
    environ = os.environ if environ is None else environ
    found: dict[str, KafkaBinding] = {}
    for path in sorted((project_dir / BINDINGS_DIR).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        found[path.stem] = _binding(path, data, environ)
    return found


def _binding(path: Path, data: dict[str, Any], environ: Mapping[str, str]) -> KafkaBinding:
    name = path.stem
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    if not isinstance(data.get("topic"), str) or not data["topic"]:
        raise ConfigError(f"{path}: `topic` (a string) is required")
    fmt = data.get("format", "JSONEachRow")
    if fmt not in FORMATS:
        raise ConfigError(f"{path}: format {fmt!r} is not supported; use one of {FORMATS}")
    engine = data.get("engine", "redpoll")
    if engine not in ENGINES:
        raise ConfigError(f"{path}: engine {engine!r}: use one of {ENGINES}")
    properties: dict[str, str] = {}
    for key, value in dict(data.get("properties", {})).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        ref = _ENV_REF.match(text)
        if ref:
            if ref[1] not in environ:
                raise ConfigError(
                    f"{path}: property {key!r} needs environment variable "
                    f"{ref[1]}, which is not set"
                )
            text = environ[ref[1]]
        elif key in SECRET_PROPERTIES:
            raise ConfigError(
                f"{path}: property {key!r} is a secret: write "
                f'"${{SOME_ENV_VAR}}" and set it in the environment'
            )
        properties[key] = text
    try:
        batch_rows = int(data.get("batch_rows", 50_000))
        batch_ms = int(data.get("batch_ms", 500))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if batch_rows < 1 or batch_ms < 1:
        raise ConfigError(f"{path}: batch_rows and batch_ms must be positive")
    return KafkaBinding(
        datasource=name,
        topic=data["topic"],
        group=str(data.get("group") or f"redpoll-{name}"),
        format=fmt,
        engine=engine,
        batch_rows=batch_rows,
        batch_ms=batch_ms,
        auto_offset_reset=str(data.get("auto_offset_reset", "earliest")),
        properties=properties,
        path=path,
    )
