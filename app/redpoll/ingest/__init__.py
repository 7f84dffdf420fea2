"""Ingestion: validation, quarantine, group commit and the exact real-time writer (ADR 0008)."""
