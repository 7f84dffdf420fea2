"""Dependencies point down only (docs/architecture.md, docs/adr/0015-layers-and-wiring.md).

Every module under app/redpoll belongs to one layer; it may import its own layer and the
layers below, never one above. Every import counts: at the top, inside a function (lazy)
and under `TYPE_CHECKING` (a type names its caller as surely as a call does).

    foundation  redpoll, redpoll.errors, redpoll.settings,    anyone may import these
                redpoll.logging_setup
    clickhouse  redpoll.clickhouse                            clients, locks, error codes
    store       redpoll.store, redpoll.migrations, redpoll.materialized, redpoll.datasets
    services    redpoll.ingest, redpoll.kafka, redpoll.endpoints, redpoll.evaluation,
                redpoll.tokens
    api         redpoll.api                                   HTTP adapters of services
    app         redpoll.app                                   wires the API (lifespan)
    cli         redpoll.cli, redpoll.__main__                 parses arguments, calls a Backend
    testing     redpoll.testing, redpoll.testing_kafka,       helpers for test suites
                redpoll.pytest_plugin

The app and the CLI reach ClickHouse only through the store; of `redpoll.clickhouse`
they may import `redpoll.clickhouse.errors` alone (how a ClickHouse error reads).
Services receive their clients (from the `Store`): only `redpoll.clickhouse`, the store and
the testing layer open a connection (`connect`, or `clickhouse_connect` itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "app" / "redpoll"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("redpoll", "redpoll.errors", "redpoll.settings", "redpoll.logging_setup")),
    ("clickhouse", ("redpoll.clickhouse",)),
    (
        "store",
        (
            "redpoll.store",
            "redpoll.migrations",
            "redpoll.materialized",
            "redpoll.datasets",
            "redpoll.cluster",  # keys and DDL; the router is a service (below)
        ),
    ),
    (
        "services",
        (
            "redpoll.ingest",
            "redpoll.cluster.routing",
            "redpoll.kafka",
            "redpoll.endpoints",
            "redpoll.evaluation",
            "redpoll.embeddings",  # `redpoll train`'s job: reads and writes through a Runner
            "redpoll.tokens",
        ),
    ),
    ("api", ("redpoll.api", "redpoll.console")),
    ("app", ("redpoll.app",)),
    ("cli", ("redpoll.cli", "redpoll.__main__")),
    ("testing", ("redpoll.testing", "redpoll.testing_kafka", "redpoll.pytest_plugin")),
)
#: layers that must go through the store for ClickHouse, and the one module they may use
THROUGH_STORE = ("app", "cli")
CLICKHOUSE_ALLOWED = ("redpoll.clickhouse.errors",)


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix matching `module` (-1: none)."""
    best, best_len = -1, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "redpoll" and module != "redpoll":
                continue  # the package itself, not everything under it
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every `redpoll` import in the file, wherever it appears."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "redpoll"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] == "redpoll":
                found.append((node.lineno, module))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "scaffold" not in p.parts)


def test_every_module_has_a_layer() -> None:
    unplaced = [module_name(p) for p in modules() if layer_of(module_name(p)) < 0]
    assert not unplaced, f"add these modules to a layer in LAYERS: {unplaced}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    me = module_name(path)
    mine = layer_of(me)
    wrong = []
    for line, target in imports(path):
        theirs = layer_of(target)
        if theirs > mine:
            wrong.append(f"{path.name}:{line} imports {target} ({LAYERS[theirs][0]})")
        elif (
            LAYERS[mine][0] in THROUGH_STORE
            and LAYERS[theirs][0] == "clickhouse"
            and target not in CLICKHOUSE_ALLOWED
        ):
            wrong.append(f"{path.name}:{line} imports {target}: go through redpoll.store")
    assert not wrong, f"{me} is in layer {LAYERS[mine][0]!r}: " + "; ".join(wrong)


#: modules that may open a ClickHouse connection; every other one is given its clients
MAY_CONNECT = ("redpoll.clickhouse", "redpoll.store", *LAYERS[-1][1])
CLIENT_MODULE = "redpoll.clickhouse.client"


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes inside an `if TYPE_CHECKING:` body (type names, not calls)."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                inside.update(ast.walk(statement))
    return inside


def connections(path: Path, name: str | None = None) -> list[str]:
    """Every way the file could open a ClickHouse connection itself: importing or calling
    `connect` of `redpoll.clickhouse.client` (by any alias), or importing
    `clickhouse_connect` outside `TYPE_CHECKING`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = (name or module_name(path)).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    typing_only = _type_checking_only(tree)
    found: list[str] = []
    module_aliases: set[str] = set()  # names bound to redpoll.clickhouse.client
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == CLIENT_MODULE:
                    module_aliases.add(alias.asname or alias.name)
                if alias.name.split(".")[0] == "clickhouse_connect" and node not in typing_only:
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] == "clickhouse_connect" and node not in typing_only:
                found.append(f"{path.name}:{node.lineno} imports {module}")
            for alias in node.names:
                if module == CLIENT_MODULE and alias.name == "connect":
                    found.append(f"{path.name}:{node.lineno} imports {CLIENT_MODULE}.connect")
                if module == "redpoll.clickhouse" and alias.name == "client":
                    module_aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "connect"
            and ast.unparse(node.value) in module_aliases
        ):
            found.append(f"{path.name}:{node.lineno} uses {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_only_the_store_layer_connects(path: Path) -> None:
    """Services, the API, the app and the CLI receive their clients (`Store.admin`,
    `Store.new_client`, the read pools) instead of connecting (docs/architecture.md)."""
    me = module_name(path)
    if any(me == allowed or me.startswith(allowed + ".") for allowed in MAY_CONNECT):
        return
    found = connections(path)
    assert not found, f"{me} connects itself (take a client from the Store): " + "; ".join(found)


def test_the_checker_sees_a_connection(tmp_path: Path) -> None:
    source = tmp_path / "service.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..clickhouse.client import connect as c\n"
        "import redpoll.clickhouse.client as cc\n"
        "from redpoll.clickhouse import client\n"
        "import clickhouse_connect\n"
        "if TYPE_CHECKING:\n"
        "    from clickhouse_connect.driver.client import Client\n"
        "def f():\n"
        "    return cc.connect(None), client.connect(None)\n"
    )
    found = connections(source, "redpoll.ingest.service")
    assert [line.split(" ", 1)[0] for line in found] == [
        "service.py:2",
        "service.py:5",
        "service.py:9",
        "service.py:9",
    ], found


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The test itself: a lazy import of a caller, inside a function, is found."""
    source = tmp_path / "query.py"
    source.write_text("def f():\n    from redpoll.store import Store\n    return Store\n")
    assert imports(source, "redpoll.clickhouse.query") == [(2, "redpoll.store")]
    assert layer_of("redpoll.store") > layer_of("redpoll.clickhouse.query")
    assert layer_of("redpoll.cli.commands.load") > layer_of("redpoll.app")
    assert layer_of("redpoll.settings") == 0 and layer_of("redpoll.errors") == 0


def test_both_backends_implement_the_whole_protocol() -> None:
    """A command may call any `Backend` method on whichever backend it got."""
    from redpoll.cli._backend import Backend, LocalBackend, RemoteBackend

    wanted = {name for name in vars(Backend) if not name.startswith("_")}
    assert {"sql", "ingest", "backfill", "run_endpoint", "migrate_status"} <= wanted
    for implementation in (LocalBackend, RemoteBackend):
        missing = {name for name in wanted if not callable(getattr(implementation, name, None))}
        assert not missing, f"{implementation.__name__} lacks {sorted(missing)}"


def test_commands_never_ask_which_backend_they_have() -> None:
    """No `isinstance`/`hasattr`/`getattr` on a backend in cli/commands (the protocol is
    the whole interface, docs/architecture.md)."""
    offending = []
    for path in sorted((PACKAGE / "cli" / "commands").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"isinstance", "hasattr", "getattr"}
                and "backend" in ast.unparse(node).lower()
            ):
                offending.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"store", "events", "client", "http"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "backend"
            ):
                offending.append(f"{path.name}:{node.lineno}: backend.{node.attr}")
    assert not offending, offending
