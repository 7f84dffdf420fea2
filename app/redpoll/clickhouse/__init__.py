"""The only package that talks to ClickHouse (ADR 0001)."""
