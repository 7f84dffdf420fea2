"""HTTP surface: one controller module per surface (ADR 0007: /v0 is the Tinybird-compatible
surface, native additions live under /redpoll/v1)."""
