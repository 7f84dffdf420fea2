"""Who may spend what: requests per second per token and per client address, and
per-token budgets of `q=` / `/v0/sql` query time and rows read per minute
(docs/security.md).

Counting is the `limits` library's fixed windows in process memory: each server process
counts its own requests (behind a load balancer with N processes a client gets up to N
times the limit; docs/security.md). Answers carry `X-RateLimit-Limit`, `-Remaining` and
`-Reset` (seconds until the window resets, an integer); a refusal is 429 with
`Retry-After`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from redpoll.errors import RedpollError
from redpoll.tokens.scopes import Principal

if TYPE_CHECKING:
    from litestar.types import Message, Scope

__all__ = ("RATE_LIMIT_KEY", "RateLimited", "RateLimits", "WindowState", "add_rate_limit_headers")

#: the local CLI and everyone when auth is off are not counted per token
UNLIMITED_KINDS = ("local", "open")
#: where a request's window state waits (scope["state"]) for `add_rate_limit_headers`
RATE_LIMIT_KEY = "rate_limit"


class RateLimited(RedpollError):
    """Too many requests (or too much query time) in the current window."""

    status = 429

    def __init__(self, message: str, state: WindowState) -> None:
        super().__init__(message)
        self.retry_after = max(1, state.reset)
        self.headers = state.headers()


@dataclasses.dataclass(frozen=True)
class WindowState:
    limit: int
    remaining: int
    #: whole seconds until the window resets
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimits:
    """Per-token and per-address request rates, and per-token `q=` budgets."""

    def __init__(
        self,
        token_rps: int,
        ip_rps: int,
        q_seconds_per_minute: float,
        q_rows_per_minute: int = 0,
    ) -> None:
        self.token_rps = token_rps
        self.ip_rps = ip_rps
        self.q_ms_per_minute = int(q_seconds_per_minute * 1000)
        self.q_rows_per_minute = q_rows_per_minute
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    def _hit(self, item: RateLimitItem, key: str, cost: int = 1) -> tuple[bool, WindowState]:
        allowed = self._limiter.hit(item, key, cost=cost)
        stats = self._limiter.get_window_stats(item, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return allowed, WindowState(item.amount, max(0, stats.remaining), reset)

    def hit_address(self, address: str) -> WindowState | None:
        """Count one request from `address`; RateLimited when over `rate_limit_ip_rps`."""
        if self.ip_rps <= 0:
            return None
        allowed, state = self._hit(RateLimitItemPerSecond(self.ip_rps), "ip:" + address)
        if not allowed:
            raise RateLimited(f"rate limit: {self.ip_rps} requests/s per client address", state)
        return state

    def hit_principal(self, principal: Principal) -> WindowState | None:
        """Count one request by `principal` against its `rps` (or `rate_limit_rps`)."""
        rps = principal.rps or self.token_rps
        if rps <= 0 or principal.kind in UNLIMITED_KINDS:
            return None
        allowed, state = self._hit(RateLimitItemPerSecond(rps), "token:" + principal.name)
        if not allowed:
            raise RateLimited(f"rate limit: {rps} requests/s for this token", state)
        return state

    def check_q_budget(self, principal: Principal) -> None:
        """RateLimited when `principal` has spent its `q=` query time or rows read this
        minute."""
        if principal.kind in UNLIMITED_KINDS:
            return
        for budget, amount, what in (
            ("q:", self.q_ms_per_minute, f"{self.q_ms_per_minute / 1000:g} s of q= queries"),
            ("q_rows:", self.q_rows_per_minute, f"{self.q_rows_per_minute} rows read by q="),
        ):
            if amount <= 0:
                continue
            item = RateLimitItemPerMinute(amount)
            if not self._limiter.test(item, budget + principal.name):
                stats = self._limiter.get_window_stats(item, budget + principal.name)
                reset = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(
                    f"query budget: {what} per minute for this token is spent",
                    WindowState(item.amount, 0, reset),
                )

    def spend_q_time(self, principal: Principal, seconds: float) -> None:
        """Charge `seconds` of `q=` query time to `principal`'s budget (up to what is left)."""
        self._spend("q:", self.q_ms_per_minute, principal, max(1, int(seconds * 1000)))

    def spend_q_rows(self, principal: Principal, rows: int) -> None:
        """Charge `rows` read by a `q=` / `/v0/sql` query (up to what is left)."""
        if rows > 0:
            self._spend("q_rows:", self.q_rows_per_minute, principal, rows)

    def _spend(self, budget: str, amount: int, principal: Principal, cost: int) -> None:
        if amount <= 0 or principal.kind in UNLIMITED_KINDS:
            return
        item = RateLimitItemPerMinute(amount)
        key = budget + principal.name
        if not self._limiter.hit(item, key, cost=min(cost, amount)):
            left = self._limiter.get_window_stats(item, key).remaining
            if left > 0:
                self._limiter.hit(item, key, cost=left)


async def add_rate_limit_headers(message: Message, scope: Scope) -> None:
    """`X-RateLimit-*` on answers to counted requests (a `before_send` hook, app.py)."""
    if message["type"] != "http.response.start":
        return
    state = scope.get("state", {}).get(RATE_LIMIT_KEY)
    if isinstance(state, WindowState):
        headers = list(message.get("headers", []))
        names = {name.lower() for name, _ in headers}
        for name, value in state.headers().items():
            if name.lower().encode() not in names:
                headers.append((name.lower().encode(), value.encode()))
        message["headers"] = headers
