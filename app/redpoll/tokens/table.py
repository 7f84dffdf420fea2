"""Static tokens in ClickHouse (`_redpoll_tokens`), hashed: the value is shown once.

A token value is 256 random bits (`rp_` + base64url, so secret scanners can spot it);
only its SHA-256 is stored. A fast hash is right for random secrets (a slow password hash
guards guessable passwords); lookups are by hash, so no plain value ever sits on disk.

Rows are versioned (ReplacingMergeTree, last write wins per name): creating, refreshing and
revoking insert a row, so no mutation is needed and every server sharing the database
sees the same tokens. Reads take the latest version per name with argMax.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from redpoll.cluster.ddl import replicated_on_every_node
from redpoll.errors import NotFound, ParameterError, RedpollError
from redpoll.tokens.scopes import Principal, Scope, check_token_name, parse_scope

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.store import Store

__all__ = (
    "TABLE",
    "TOKEN_PREFIX",
    "TokenExists",
    "TokenRecord",
    "TokenTable",
    "Written",
    "hash_token",
    "new_token_value",
)

TABLE = "_redpoll_tokens"
TOKEN_PREFIX = "rp_"


def new_token_value() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class TokenExists(RedpollError):
    status = 409


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """A stored token: everything but its value."""

    name: str
    token_hash: str
    scopes: tuple[Scope, ...]
    rps: int | None
    created_at: dt.datetime
    origin: str = "api"

    def principal(self) -> Principal:
        return Principal(self.name, self.scopes, kind="token", rps=self.rps)

    def describe(self) -> dict[str, Any]:
        """What the Tokens API and `redpoll token list` show (never the hash)."""
        return {
            "name": self.name,
            "scopes": [{"type": s.type, "resource": s.resource} for s in self.scopes],
            "scope": [str(s) for s in self.scopes],
            "limits": {"rps": self.rps} if self.rps else {},
            "created_at": self.created_at.isoformat(),
            "origin": self.origin,
        }


@dataclasses.dataclass(frozen=True)
class Written:
    """The table right after a change made through `TokenTable`: every live token by name
    (what `load` returns now, read once, before the write, under the lock), and the new
    value (create, refresh; empty for revoke). Callers keep these instead of reading the
    table a second time."""

    records: dict[str, TokenRecord]
    value: str = ""


class TokenTable:
    """Create, list, refresh and revoke tokens in `<database>.redpoll_tokens`."""

    def __init__(
        self, client: Client, database: str, lock: threading.RLock, on_cluster: str = ""
    ) -> None:
        self.client = client
        self.database = database
        self.lock = lock
        self.table = f"`{database}`.{TABLE}"
        self.on_cluster = on_cluster

    @classmethod
    def for_store(cls, store: Store) -> TokenTable:
        """The token table of `store`'s database, on its admin client, created if missing."""
        cluster = store.settings.cluster
        table = cls(
            store.admin,
            store.target.database,
            store.admin_lock,
            f"ON CLUSTER `{cluster}`" if cluster else "",
        )
        table.ensure()
        return table

    def create_sql(self) -> str:
        """The table's DDL. On a cluster (`on_cluster`) it is replicated to every node
        (app/redpoll/cluster/ddl.py), so a token created through one API replica works
        on all of them."""
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self.table} {self.on_cluster} ("
            " name String, token_hash String, scopes Array(String), rps UInt32,"
            " created_at DateTime64(3, 'UTC'), revoked UInt8, version UInt64"
            ") ENGINE = ReplacingMergeTree(version) ORDER BY name"
        )
        if self.on_cluster:
            sql = replicated_on_every_node(sql, self.database, TABLE)
        return sql

    def ensure(self) -> None:
        with self.lock:
            self.client.command(self.create_sql())

    def load(self) -> dict[str, TokenRecord]:
        """Every live token by name (the latest version of each, unless revoked)."""
        with self.lock:
            rows = self.client.query(
                "SELECT name, argMax(token_hash, version), argMax(scopes, version),"
                " argMax(rps, version), argMax(created_at, version),"
                f" argMax(revoked, version) AS r FROM {self.table} GROUP BY name HAVING r = 0"
            ).result_rows
        return {
            name: TokenRecord(
                name,
                token_hash,
                tuple(parse_scope(s) for s in scopes),
                int(rps) or None,
                created.replace(tzinfo=dt.UTC) if created.tzinfo is None else created,
            )
            for name, token_hash, scopes, rps, created, _ in rows
        }

    def create(self, name: str, scopes: list[Scope], rps: int | None = None) -> Written:
        """A new token (its value is shown once); 409 if the name is taken."""
        check_token_name(name)
        if not scopes:
            raise ParameterError("a token needs at least one scope")
        if any(s.fixed_params for s in scopes):
            raise ParameterError("fixed_params exist only in JWTs")
        if rps is not None and rps < 1:
            raise ParameterError("rps must be a positive integer")
        with self.lock:
            records = self.load()
            if name in records:
                raise TokenExists(f"a token named '{name}' exists; refresh or delete it")
            value = new_token_value()
            records[name] = self._write(name, hash_token(value), scopes, rps or 0, 0)
        return Written(records, value)

    def refresh(self, name: str) -> Written:
        """Replace a token's value (same name and scopes); the old value stops working."""
        with self.lock:
            records = self.load()
            record = _get(records, name)
            value = new_token_value()
            records[name] = self._write(
                name, hash_token(value), list(record.scopes), record.rps or 0, 0
            )
        return Written(records, value)

    def revoke(self, name: str) -> Written:
        with self.lock:
            records = self.load()
            record = _get(records, name)
            self._write(name, record.token_hash, list(record.scopes), 0, 1)
            del records[name]
        return Written(records)

    def _write(
        self, name: str, token_hash: str, scopes: list[Scope], rps: int, revoked: int
    ) -> TokenRecord:
        """Insert one version of `name`; return it as `load` will read it back (the
        created_at column holds milliseconds)."""
        now = dt.datetime.now(dt.UTC)
        created = now.replace(microsecond=now.microsecond // 1000 * 1000)
        texts = [str(s) for s in scopes]
        self.client.insert(
            TABLE,
            [[name, token_hash, texts, rps, created, revoked, time.time_ns()]],
            column_names=[
                "name",
                "token_hash",
                "scopes",
                "rps",
                "created_at",
                "revoked",
                "version",
            ],
            database=self.database,
        )
        return TokenRecord(
            name, token_hash, tuple(parse_scope(s) for s in texts), rps or None, created
        )


def _get(records: dict[str, TokenRecord], name: str) -> TokenRecord:
    record = records.get(name)
    if record is None:
        raise NotFound(f"no token named '{name[:128]}'")
    return record
