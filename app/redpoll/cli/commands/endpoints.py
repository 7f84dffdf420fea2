"""`redpoll endpoints list | check | render | test`.

The catalog (tables and columns that endpoints may read) comes from the project's store,
through the running server when it holds the embedded data directory (`open_backend`).
`check` exits 1 and prints `file:line: message` for every broken file. `test` runs the
fixtures in `endpoints/tests/<name>.yaml`: a list of cases with `params` and either
`expected_rows` (the JSON `data`; optional `columns` and `tolerance`) or
`expected_status` (docs/endpoints.md). With an `endpoints/tests/seed/` folder, the cases
run in a scratch store loaded from it (`open_scratch_backend`); otherwise, or with
`--against-store`, through the project's backend: in this process, or as an HTTP call
with `read_token`. Either way each case goes through `Backend.run_endpoint`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from redpoll.cli._backend import Backend, open_backend, open_scratch_backend
from redpoll.cli._context import load, project_option
from redpoll.endpoints.compiler import render as render_endpoint
from redpoll.endpoints.loader import iter_endpoint_files, load_endpoint
from redpoll.endpoints.model import Catalog, Endpoint, LoadError
from redpoll.errors import ConfigError

__all__ = ("endpoints",)

_CATALOG_SQL = (
    "SELECT t.name AS table, c.name AS column FROM system.tables AS t "
    "LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
    "WHERE t.database = currentDatabase()"
)


def _catalog(backend: Backend, database: str) -> Catalog:
    data = json.loads(backend.sql(_CATALOG_SQL, "json"))
    tables: dict[str, set[str]] = {}
    for row in data["data"]:
        table, column = row["table"], row["column"]
        tables.setdefault(table, set())
        if column:
            tables[table].add(column)
    return Catalog(database or "default", {k: frozenset(v) for k, v in tables.items()})


def _load_all(directory: Path, catalog: Catalog) -> tuple[dict[str, Endpoint], list[LoadError]]:
    good: dict[str, Endpoint] = {}
    bad: list[LoadError] = []
    for path in iter_endpoint_files(directory):
        result = load_endpoint(path, catalog)
        if isinstance(result, LoadError):
            bad.append(result)
        else:
            good[result.name] = result
    return good, bad


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--param expects k=v, got {pair!r}")
        if key in params:
            old = params[key]
            params[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            params[key] = value
    return params


@click.group()
def endpoints() -> None:
    """Inspect, validate and test the endpoint files in endpoints/."""


@endpoints.command("list")
@project_option
def list_endpoints(project_dir: str | None) -> None:
    """List endpoints with their parameters."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll endpoints list") as backend:
        catalog = _catalog(backend, settings.database)
    good, bad = _load_all(settings.project_dir / "endpoints", catalog)
    for ep in good.values():
        params = ", ".join(
            f"{p.name}:{p.type}"
            + ("!" if p.required else "")
            + (f"={p.default}" if p.default is not None else "")
            for p in ep.params
        )
        click.echo(f"{ep.name}({params})  {ep.meta.description}".rstrip())
    for err in bad:
        click.echo(f"BROKEN {err}", err=True)


@endpoints.command()
@project_option
def check(project_dir: str | None) -> None:
    """Validate every endpoint file; exit 1 with file:line errors if any is broken."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll endpoints check") as backend:
        catalog = _catalog(backend, settings.database)
    good, bad = _load_all(settings.project_dir / "endpoints", catalog)
    for err in bad:
        click.echo(str(err), err=True)
    click.echo(f"{len(good)} endpoint(s) ok, {len(bad)} broken")
    if bad:
        sys.exit(1)


@endpoints.command("render")
@project_option
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, help="A parameter as k=v (repeatable).")
def render_cmd(project_dir: str | None, name: str, pairs: tuple[str, ...]) -> None:
    """Print the SQL and bound parameter values NAME runs for the given parameters."""
    settings = load(project_dir)
    with open_backend(settings, "redpoll endpoints render") as backend:
        catalog = _catalog(backend, settings.database)
    result = load_endpoint(settings.project_dir / "endpoints" / f"{name}.sql", catalog)
    if isinstance(result, LoadError):
        raise ConfigError(str(result))
    rendered = render_endpoint(result, _parse_params(pairs))
    click.echo(rendered.sql)
    click.echo("-- parameters: " + json.dumps(dict(rendered.parameters), default=str))


@endpoints.command("test")
@project_option
@click.argument("names", nargs=-1)
@click.option(
    "--against-store",
    is_flag=True,
    help="Run against the configured store (or the running server) even when "
    "endpoints/tests/seed/ exists.",
)
def test_cmd(project_dir: str | None, names: tuple[str, ...], against_store: bool) -> None:
    """Run endpoints/tests/<name>.yaml fixtures.

    With an endpoints/tests/seed/ folder, they run in a throwaway store loaded from it;
    otherwise (or with --against-store) against the configured store.
    """
    import yaml

    settings = load(project_dir)
    folder = settings.project_dir / "endpoints" / "tests"
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if names:
        files = [f for f in files if f.stem in names]
    seed = folder / "seed"
    scratch = seed.is_dir() and not against_store
    failures = total = 0
    opened = (
        open_scratch_backend(settings, "redpoll endpoints test")
        if scratch
        else open_backend(settings, "redpoll endpoints test")
    )
    with opened as backend:
        if scratch:
            _load_seed(backend, seed)
        for path in files:
            try:
                cases = yaml.safe_load(path.read_text()) or []
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from exc
            for case in cases:
                total += 1
                label = f"{path.stem}: {case.get('name', total)}"
                status, data = backend.run_endpoint(path.stem, case.get("params") or {})
                problem = _compare(case, status, data)
                if problem:
                    failures += 1
                    click.echo(f"FAIL {label}: {problem}", err=True)
                else:
                    click.echo(f"ok   {label}")
    click.echo(f"{total - failures}/{total} passed")
    if failures:
        sys.exit(1)


def _load_seed(backend: Backend, seed: Path) -> None:
    """Ingest every seed/<datasource>.ndjson through the normal ingestion path."""
    files = sorted(seed.glob("*.ndjson"))
    for path in files:
        result = backend.ingest(path.stem, path.read_bytes())
        if result.get("quarantined_rows"):
            raise ConfigError(
                f"{path}: {result['quarantined_rows']} row(s) quarantined "
                f"(see the {path.stem}_quarantine table's errors)"
            )
    loaded = ", ".join(p.name for p in files) or "no .ndjson files"
    click.echo(f"(scratch store seeded from {seed}: {loaded})", err=True)


def _compare(case: dict[str, Any], status: int, data: Any) -> str:
    """Why the answer differs from the case ("" when it matches).

    `columns`: compare only these columns of each row. `tolerance`: numbers match when
    they differ by at most this much (default 0: exact).
    """
    expected_status = case.get("expected_status", 200)
    if status != expected_status:
        return f"status {status} != {expected_status} ({data})"
    if "expected_rows" not in case:
        return ""
    expected = case["expected_rows"]
    columns = case.get("columns")
    actual = data
    if columns and isinstance(data, list):
        actual = [{c: row.get(c) for c in columns} for row in data if isinstance(row, dict)]
    if not isinstance(actual, list) or len(actual) != len(expected):
        count = len(actual) if isinstance(actual, list) else "no"
        return f"{count} rows, expected {len(expected)}: got {actual}"
    tolerance = float(case.get("tolerance", 0))
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        if not _matches(got, want, tolerance):
            return f"row {index + 1}: got {got}, expected {want}"
    return ""


def _matches(got: Any, want: Any, tolerance: float) -> bool:
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(_matches(got[k], want[k], tolerance) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_matches(g, w, tolerance) for g, w in zip(got, want, strict=True))
        )
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers):
        if isinstance(want, bool) or isinstance(got, bool):
            return got == want
        return abs(got - want) <= tolerance
    return bool(got == want)
