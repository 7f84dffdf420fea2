"""The declared settings table and how a `Settings` value is built.

Precedence, highest first (ADR 0002): explicit overrides (CLI flags) > `REDPOLL_*`
environment variables > `redpoll.toml` in the project directory > defaults. Every setting
has a default, unknown keys in `redpoll.toml` are rejected, and values are converted to
the declared type with an error that names the source.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redpoll.errors import ConfigError

__all__ = (
    "SETTINGS",
    "Setting",
    "Settings",
    "load_settings",
    "setting_default",
    "setting_value",
)

ENV_PREFIX = "REDPOLL_"
#: values of the `ack` setting (ingest/service.py)
ACK_MODES = ("visible", "durable")
TOML_NAME = "redpoll.toml"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configurable value: its name (lower case, as in `redpoll.toml`), type and help."""

    name: str
    type: type
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("project_dir", str, ".", "Project folder holding sql/, endpoints/, migrations/..."),
    Setting(
        "clickhouse_url",
        str,
        "",
        "ClickHouse to use. Empty: embedded chDB at <project>/.redpoll/data. "
        "`chdb:///abs/path` or `http(s)://user:pass@host:8123/db` for a server.",
    ),
    Setting("database", str, "", "Database for all objects. Empty: from the URL, else `default`."),
    Setting("cluster", str, "", "Cluster name for `ON CLUSTER` in migrations ({{ on_cluster }})."),
    Setting(
        "cluster_shard_urls",
        str,
        "",
        "Cluster mode's event writers (docs/cluster.md): comma-separated ClickHouse URLs, "
        "one writer replica per shard in `remote_servers` order; each writes "
        "`<database>_shard` unless the URL names a database (`?database=x`; for "
        "`chdb:///path?database=x`, the store's own path). Set it on exactly one process. "
        "Empty: a single node.",
    ),
    Setting("host", str, "127.0.0.1", "Address `redpoll serve` binds to."),
    Setting("port", int, 8000, "Port `redpoll serve` listens on."),
    Setting("dev", bool, False, "Development mode: reload endpoint files when they change."),
    # --- access (docs/security.md) ------------------------------------------------
    Setting(
        "auth",
        bool,
        True,
        "Require a token on every route but /v0/health and /v0/ready. `off`: everything "
        "is open (local demos only; logged loudly at start).",
    ),
    Setting(
        "admin_token",
        str,
        "",
        "An extra ADMIN token for automation (hashed on load). Tokens are otherwise "
        "created with `redpoll token create` or POST /v0/tokens.",
    ),
    Setting("read_token", str, "", "An extra PIPES:READ token for automation (hashed on load)."),
    Setting(
        "append_token",
        str,
        "",
        "An extra DATASOURCES:APPEND token for automation (hashed on load).",
    ),
    Setting(
        "jwt_signing_key",
        str,
        "",
        "HS256 key that signs JWTs (Tinybird's format). Empty: JWTs are refused.",
    ),
    Setting(
        "token",
        str,
        "",
        "Token CLI commands send to a server (the role tokens above win for their surface).",
    ),
    Setting(
        "server_url",
        str,
        "",
        "A running Redpoll server CLI commands talk to (with `token`) instead of the "
        "project's store.",
    ),
    Setting(
        "token_refresh_s",
        float,
        2.0,
        "Tokens created or revoked by another process are seen within this many seconds "
        "(this server's own changes apply at once).",
    ),
    Setting(
        "cors_origins",
        str,
        "*",
        "Origins browsers may call the API from, comma-separated (`*`: any; tokens, not "
        "cookies, authenticate). Empty: no cross-origin calls.",
    ),
    Setting(
        "rate_limit_rps",
        int,
        1000,
        "Requests per second per token (a token's or JWT's `limits.rps` overrides). "
        "Over it: 429. 0: no limit.",
    ),
    Setting(
        "rate_limit_ip_rps",
        int,
        1000,
        "Requests per second per client address, with or without a token. Over it: 429. "
        "0: no limit.",
    ),
    Setting(
        "q_seconds_per_minute",
        float,
        60.0,
        "Query seconds a token's `q=` calls may spend per minute; then 429 until the "
        "minute ends. 0: no budget.",
    ),
    Setting(
        "q_rows_per_minute",
        int,
        2_000_000_000,
        "Rows a token's `q=` and `/v0/sql` queries may read per minute, as ClickHouse "
        "reports them in JSON answers (other formats: only `query_max_rows_to_read` per "
        "query); then 429 until the minute ends. 0: no budget.",
    ),
    Setting(
        "ack",
        str,
        "durable",
        "When `POST /v0/events` without `wait=true` answers 202: `durable`, once the rows "
        "are fsync'd to the write-ahead log, the INSERT following within `ack_gather_s` "
        "(landing data sources only; `wait=true` always waits for the INSERT); "
        "`visible`, after the INSERT (every view holds the rows).",
    ),
    Setting(
        "ack_max_backlog_rows",
        int,
        20_000,
        "With `ack = durable`: most acknowledged rows of a data source that may wait for "
        "their INSERT. A request arriving above it waits until the committer catches up "
        "(503 after `ack_backlog_wait_s`, nothing stored), so the views lag an "
        "acknowledgement by about two INSERTs of this size. 0: no bound.",
    ),
    Setting(
        "ack_gather_s",
        float,
        0.2,
        "With `ack = durable`: seconds the committer gathers acknowledged rows before "
        "their INSERT. Every INSERT into `events` has a fixed cost (~0.1-0.2 s of views), "
        "so a longer gather leaves more CPU to queries under steady ingest and adds as "
        "much to the acknowledged -> visible time.",
    ),
    Setting(
        "ack_backlog_wait_s",
        float,
        30.0,
        "With `ack = durable`: seconds a request may wait for the backlog to fall below "
        "`ack_max_backlog_rows` before it is answered 503 with Retry-After.",
    ),
    Setting("max_url_bytes", int, 8192, "Longest request target (path and query). Longer: 414."),
    Setting(
        "max_rows_per_request",
        int,
        1_000_000,
        "Most rows one POST /v0/events may carry. More: 413, nothing written.",
    ),
    Setting("read_pool_size", int, 4, "Read clients kept for query endpoints (one per thread)."),
    Setting("query_timeout_s", float, 10.0, "Default max_execution_time for endpoint queries."),
    Setting("max_result_rows", int, 100_000, "Default max_result_rows for endpoint queries."),
    Setting(
        "cache",
        bool,
        True,
        'Exact result cache of endpoint answers (docs/endpoints.md, "Result cache"): an '
        "answer is reused until a write reaches a table it reads. `off`: every call queries.",
    ),
    Setting(
        "cache_max_bytes",
        int,
        64 * 1024 * 1024,
        "Memory the result cache may hold (answers and their SQL); least recently used "
        "answers go first. 0: no cache.",
    ),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error."),
    Setting(
        "access_log",
        bool,
        False,
        "Log one line per HTTP request (uvicorn's access log). Off by default, as in "
        "gunicorn: every endpoint call and append is already a row of `pipe_stats` / "
        "`datasources_ops_log`, and the line cost about a third of the server's time per "
        "small request (README, ingest figures).",
    ),
    Setting(
        "log_format",
        str,
        "json",
        "`json`: one JSON object per log line (time, level, logger, message, request_id); "
        "`text`: plain lines for a terminal.",
    ),
    Setting(
        "stats_retention_days",
        int,
        30,
        "Days `pipe_stats` and `datasources_ops_log` keep rows (TTL).",
    ),
    Setting("kafka_brokers", str, "", "Kafka bootstrap servers (host:port,...). Empty: no Kafka."),
    # --- limits (docs/limits.md): what a client gets when it hits each ---------------
    Setting(
        "max_body_bytes",
        int,
        16 * 1024 * 1024,
        "Largest request body accepted, as sent (compressed or not). Larger: 413.",
    ),
    Setting(
        "max_inflated_bytes",
        int,
        128 * 1024 * 1024,
        "Largest body after undoing Content-Encoding (gzip/deflate bombs). Larger: 413.",
    ),
    Setting(
        "max_id_bytes",
        int,
        256,
        "Longest value (UTF-8 bytes) of an ingested String column named `*_id`. "
        "Longer: the row is quarantined.",
    ),
    Setting(
        "max_field_bytes",
        int,
        64 * 1024,
        "Longest value (UTF-8 bytes) of any other ingested String column. "
        "Longer: the row is quarantined.",
    ),
    Setting("max_q_bytes", int, 8192, "Longest `q=` accepted on pipes. Longer: 413."),
    Setting(
        "query_max_memory_bytes",
        int,
        1024 * 1024 * 1024,
        "max_memory_usage of every read query. Over it: 400 (memory limit).",
    ),
    Setting(
        "query_max_rows_to_read",
        int,
        500_000_000,
        "max_rows_to_read of every read query. Over it: 400 (too many rows read).",
    ),
    Setting(
        "query_max_bytes_to_read",
        int,
        20 * 1024 * 1024 * 1024,
        "max_bytes_to_read of every read query. Over it: 400 (too many bytes read).",
    ),
    Setting(
        "max_result_bytes",
        int,
        64 * 1024 * 1024,
        "max_result_bytes of every read query. Over it: 400 (result too large).",
    ),
    Setting(
        "heavy_query_concurrency",
        int,
        1,
        "Queries with `q=` that may run at once, on clients of their own; more wait, "
        "then get 429. Ordinary endpoint calls never wait for them.",
    ),
    Setting(
        "heavy_query_threads",
        int,
        1,
        "max_threads of a `q=` query (cores it may use), leaving the rest to ordinary calls.",
    ),
    Setting(
        "header_timeout_s",
        float,
        10.0,
        "Seconds a client has to send a request's headers; then the connection is closed.",
    ),
    Setting(
        "max_header_bytes",
        int,
        64 * 1024,
        "Largest request line plus headers. Larger: 431 and the connection is closed.",
    ),
    Setting(
        "max_connections",
        int,
        2048,
        "Open connections `redpoll serve` accepts at once; more are answered 503.",
    ),
    Setting(
        "datasource_refresh_s",
        float,
        5.0,
        "An unknown data source name re-reads the catalog at most this often (seconds); "
        "migrations run through the server refresh it at once.",
    ),
    Setting(
        "import_max_bytes",
        int,
        1 << 30,
        "Largest file `POST /v0/datasources` accepts, uploaded or fetched from `url=` "
        "(bytes, after HTTP decompression). Larger: 413.",
    ),
    Setting(
        "import_timeout_s",
        float,
        300.0,
        "Seconds a `url=` import may take to download its file. Longer: 408.",
    ),
    Setting(
        "import_private_urls",
        bool,
        False,
        "Allow `url=` imports from loopback, private and link-local addresses (off: a token "
        "that may append cannot make the server read its own network).",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting_default(name: str) -> Any:
    """The default of setting `name`, for code that runs without `Settings`."""
    return _BY_NAME[name].default


def setting_value(settings: Settings | None, name: str) -> Any:
    """Setting `name` from `settings`, or its default for code run without them (tests,
    scratch stores)."""
    return setting_default(name) if settings is None else getattr(settings, name)


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    """Coerce `raw` to the setting's type; bools accept 1/0/true/false/yes/no/on/off."""
    try:
        if setting.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if setting.type is int and isinstance(raw, bool):
            raise ValueError(f"not an integer: {raw!r}")
        return setting.type(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value for {setting.name}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with `load_settings`, never mutate it."""

    project_dir: Path
    clickhouse_url: str
    database: str
    cluster: str
    cluster_shard_urls: str
    host: str
    port: int
    dev: bool
    auth: bool
    admin_token: str
    read_token: str
    append_token: str
    jwt_signing_key: str
    token: str
    server_url: str
    token_refresh_s: float
    cors_origins: str
    rate_limit_rps: int
    rate_limit_ip_rps: int
    q_seconds_per_minute: float
    q_rows_per_minute: int
    ack: str
    ack_max_backlog_rows: int
    ack_backlog_wait_s: float
    ack_gather_s: float
    max_url_bytes: int
    max_rows_per_request: int
    read_pool_size: int
    query_timeout_s: float
    max_result_rows: int
    cache: bool
    cache_max_bytes: int
    log_level: str
    access_log: bool
    log_format: str
    stats_retention_days: int
    kafka_brokers: str
    max_body_bytes: int
    max_inflated_bytes: int
    max_id_bytes: int
    max_field_bytes: int
    max_q_bytes: int
    query_max_memory_bytes: int
    query_max_rows_to_read: int
    query_max_bytes_to_read: int
    max_result_bytes: int
    heavy_query_concurrency: int
    heavy_query_threads: int
    header_timeout_s: float
    max_header_bytes: int
    max_connections: int
    datasource_refresh_s: float
    import_max_bytes: int
    import_timeout_s: float
    import_private_urls: bool

    @property
    def state_dir(self) -> Path:
        """Where Redpoll keeps local state (embedded data, server lock file)."""
        return self.project_dir / ".redpoll"

    @property
    def effective_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.state_dir / 'data').as_posix()}"

    @property
    def is_embedded(self) -> bool:
        return self.effective_clickhouse_url.startswith("chdb://")


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from overrides, the environment, `redpoll.toml` and defaults.

    Args:
        overrides: values given explicitly (e.g. CLI flags); `None` values are ignored.
        environ: the environment to read (defaults to `os.environ`).

    Raises:
        ConfigError: an unknown key in `redpoll.toml`, or a value of the wrong type.
    """
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    project = given.get("project_dir") or environ.get(ENV_PREFIX + "PROJECT_DIR") or "."
    project_dir = Path(project).expanduser().resolve()
    toml_values = _read_toml(project_dir / TOML_NAME)

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in given:
            values[setting.name] = _convert(setting, given[setting.name], "option")
        elif setting.env_var in environ:
            values[setting.name] = _convert(setting, environ[setting.env_var], setting.env_var)
        elif setting.name in toml_values:
            values[setting.name] = _convert(setting, toml_values[setting.name], TOML_NAME)
        else:
            values[setting.name] = setting.default
    values["project_dir"] = project_dir
    if values["ack"] not in ACK_MODES:
        raise ConfigError(f"ack must be one of {', '.join(ACK_MODES)}, not {values['ack']!r}")
    return Settings(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    section = data.get("redpoll", data)
    unknown = set(section) - set(_BY_NAME) - {"project_dir"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    section.pop("project_dir", None)
    return dict(section)
