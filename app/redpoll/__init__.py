"""Redpoll: SQL-first real-time recommendations and analytics on ClickHouse."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ("__version__",)
