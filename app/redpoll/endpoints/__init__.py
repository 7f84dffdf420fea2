"""Endpoints: templated `.sql` files published as typed, safe HTTP APIs.

`model` (data), `template` (sandbox and typed functions), `compiler` (compile, check,
render), `loader` (files and header), `registry` (live snapshot), `executor` (run a
rendered endpoint on a client). See docs/endpoints.md.
"""
