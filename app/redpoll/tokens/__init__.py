"""Who may call what: scoped static tokens (stored hashed) and signed JWTs (docs/security.md)."""
