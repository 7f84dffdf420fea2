"""The `redpoll` command line (ADR 0006 for how commands share an embedded store)."""
