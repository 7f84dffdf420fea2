"""Times and sampling as every evaluation writes them (replay.py, next_basket.py,
repetition.py, similar_items.py): events carry epoch milliseconds, endpoints take `now`
as an ISO string, and samples are drawn by a hash that is the same on every run (the
built-in `hash` of a string changes per process)."""

from __future__ import annotations

import datetime as dt
import hashlib

__all__ = ("EPOCH", "iso", "month", "ms", "stable_hash")

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso(ts_ms: int) -> str:
    """Epoch ms as the `now` parameter of an endpoint."""
    return (EPOCH + dt.timedelta(milliseconds=ts_ms)).strftime("%Y-%m-%d %H:%M:%SZ")


def ms(when: dt.datetime) -> int:
    """A (naive = UTC) datetime as epoch ms, the unit of the data set's events."""
    return int((when.replace(tzinfo=dt.UTC) - EPOCH).total_seconds() * 1000)


def month(ts_ms: int) -> str:
    return (EPOCH + dt.timedelta(milliseconds=ts_ms)).strftime("%Y-%m")


def stable_hash(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
