"""Small data sets in the UCI Online Retail CSV layout, the file `redpoll evaluate` and
`redpoll train --evaluate` read (app/redpoll/datasets/online_retail.py), for tests that
write their own shop."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]


def write_csv(path: Path, rows: Iterable[Sequence[object]]) -> Path:
    """`rows` (in HEADER order) under the header line, at `path`."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path
