"""Event rows as the `events` data source takes them, for tests that build a history."""

from __future__ import annotations

from typing import Any


def purchase(user: str, order: str, item: str, ts: float) -> dict[str, Any]:
    """One line of an order: one unit at 1.0, `ts` in epoch seconds; its `event_id`
    (`order:item`) is unique per line, so a resend is deduplicated."""
    return {
        "event_id": f"{order}:{item}",
        "ts": ts,
        "user_id": user,
        "order_id": order,
        "item_id": item,
        "event_type": "purchase",
        "quantity": 1,
        "price": 1.0,
    }
