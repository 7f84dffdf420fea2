"""The tokens a server accepts, in memory: one hash lookup per request.

Sources: the `redpoll_tokens` table (`tokens/table.py`), tokens given in settings (hashed
on load, for automation), the local CLI's per-start token and, with `jwt_signing_key`,
JWTs. Changes made through this process apply on the next request; changes made by
another process (another server, the CLI on a stopped server's store) are read every
`token_refresh_s`, and an unknown token triggers a re-read at most once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from redpoll.errors import ParameterError, RedpollError, Unauthorized
from redpoll.tokens.jwt import decode_jwt, looks_like_jwt
from redpoll.tokens.scopes import Principal, Scope
from redpoll.tokens.table import TokenRecord, TokenTable, hash_token

__all__ = ("TokenRegistry",)

log = logging.getLogger("redpoll.tokens")
#: an unknown token re-reads the table at most this often (seconds)
MISS_RELOAD_S = 1.0


class TokenRegistry:
    """Authenticates token values; creates, refreshes and revokes stored tokens."""

    def __init__(
        self,
        table: TokenTable,
        *,
        fixed: Iterable[tuple[str, Principal]] = (),
        jwt_key: str = "",
        refresh_s: float = 2.0,
    ) -> None:
        self.table = table
        self.jwt_key = jwt_key
        self.refresh_s = refresh_s
        #: hash -> principal, for tokens that are not in the table (settings, local CLI)
        self._fixed = {hash_token(value): p for value, p in fixed if value}
        self._records: dict[str, TokenRecord] = {}
        self._by_hash: dict[str, Principal] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading ---------------------------------------------------------------------
    def authenticate(self, value: str) -> Principal:
        """The principal `value` stands for; `Unauthorized` (403) if none. An unknown
        token may re-read the table (`from_memory`): blocking, keep it off the event loop."""
        found = self.from_memory(value)
        if found is None:
            self.reload()
            found = self._by_hash.get(hash_token(value))
            if found is None:
                raise Unauthorized("invalid token")
        return found

    def from_memory(self, value: str) -> Principal | None:
        """`authenticate(value)` as far as memory can tell: the principal, `Unauthorized`
        for an empty, invalid or unknown token, or None when only a re-read of the table
        can tell (an unknown token, the last re-read over `MISS_RELOAD_S` ago)."""
        if not value:
            raise Unauthorized(
                "a token is required: send `Authorization: Bearer <token>` or `?token=`"
            )
        digest = hash_token(value)
        found = self._fixed.get(digest) or self._by_hash.get(digest)
        if found is not None:
            return found
        if looks_like_jwt(value):
            return decode_jwt(value, self.jwt_key)
        if time.monotonic() - self._loaded_at > MISS_RELOAD_S:
            return None
        raise Unauthorized("invalid token")

    def records(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def fixed_names(self) -> set[str]:
        return {p.name for p in self._fixed.values()}

    def has_admin(self) -> bool:
        """An ADMIN token exists (in the table or settings; the local CLI's does not count)."""
        stored = any(p.is_admin for p in self._by_hash.values())
        return stored or any(p.is_admin and p.kind == "settings" for p in self._fixed.values())

    def reload(self) -> None:
        self._keep(self.table.load())

    def _keep(self, records: dict[str, TokenRecord]) -> None:
        with self._lock:
            self._records = records
            self._by_hash = {r.token_hash: r.principal() for r in records.values()}
            self._loaded_at = time.monotonic()

    # --- changing --------------------------------------------------------------------
    def create(self, name: str, scopes: list[Scope], rps: int | None = None) -> str:
        self._check_not_fixed(name)
        written = self.table.create(name, scopes, rps)
        self._keep(written.records)  # read by `create` already: no second read
        return written.value

    def refresh(self, name: str) -> str:
        self._check_not_fixed(name)
        written = self.table.refresh(name)
        self._keep(written.records)
        return written.value

    def revoke(self, name: str) -> None:
        self._check_not_fixed(name)
        self._keep(self.table.revoke(name).records)

    def _check_not_fixed(self, name: str) -> None:
        if name in self.fixed_names():
            raise ParameterError(f"'{name}' comes from settings: change the setting and restart")

    # --- background refresh ----------------------------------------------------------
    def start(self) -> None:
        """Re-read the table every `refresh_s` in a daemon thread until `stop`."""
        self.reload()
        if self.refresh_s > 0:
            self._thread = threading.Thread(target=self._run, name="token-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.reload()
            except (RedpollError, Exception) as exc:  # keep serving the last good set
                log.warning("could not re-read tokens: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
