"""Versioned, immutable migration files and the runner that applies them (ADR 0005)."""
