"""UCI Online Retail (CC BY 4.0; Chen, Sain & Guo 2012) as Redpoll events and items.

One invoice line becomes one event: `event_id` = `<InvoiceNo>:<line number in the file>`
(stable across replays), `user_id` = CustomerID (empty for guest checkouts), `order_id` =
InvoiceNo, `item_id` = StockCode, `ts` = InvoiceDate taken as UTC, `quantity`, `price` =
UnitPrice; invoices starting with `C` (cancellations) become `return` events, all
others `purchase`. The catalog takes the latest Description and UnitPrice per StockCode;
the data set has no category, so `category` is the last word of the description (e.g.
"HOLDER", "LANTERN"), a coarse product type good enough for filters and diversity caps.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ("category_of", "read_events", "read_items")

_EPOCH = dt.datetime(1970, 1, 1)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def _ts_ms(text: str) -> int:
    return (dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S") - _EPOCH) // dt.timedelta(
        milliseconds=1
    )


def category_of(description: str) -> str:
    words = [w for w in description.strip().upper().split() if w.isalpha()]
    return words[-1] if words else "OTHER"


def read_events(path: Path, limit: int | None = None, sort: bool = True) -> list[dict[str, Any]]:
    """All invoice lines as event dicts (`ts` in epoch ms), in time order when `sort`."""
    events = list(_iter_events(path, limit))
    if sort:
        events.sort(key=lambda e: e["ts"])  # stable: file order within one timestamp
    return events


def _iter_events(path: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    with _open(path) as handle:
        for line_no, row in enumerate(csv.DictReader(handle), start=1):
            invoice = row["InvoiceNo"]
            customer = row["CustomerID"]
            yield {
                "event_id": f"{invoice}:{line_no}",
                "ts": _ts_ms(row["InvoiceDate"]),
                "user_id": customer.split(".")[0] if customer else "",
                "order_id": invoice,
                "item_id": row["StockCode"],
                "event_type": "return" if invoice.startswith("C") else "purchase",
                "quantity": int(row["Quantity"]),
                "price": float(row["UnitPrice"]),
            }
            if limit and line_no >= limit:
                return


def read_items(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """One catalog row per StockCode: its latest description and price."""
    latest: dict[str, dict[str, Any]] = {}
    with _open(path) as handle:
        for line_no, row in enumerate(csv.DictReader(handle), start=1):
            ts = _ts_ms(row["InvoiceDate"])
            code = row["StockCode"]
            description = row["Description"].strip()
            if not description:
                continue
            current = latest.get(code)
            if current is None or ts >= current["updated_at"]:
                latest[code] = {
                    "item_id": code,
                    "title": description,
                    "category": category_of(description),
                    "brand": "",
                    "price": float(row["UnitPrice"]),
                    "available": True,
                    "updated_at": ts,
                }
            if limit and line_no >= limit:
                break
    return list(latest.values())
