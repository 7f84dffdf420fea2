"""Test modules stand alone: shared helpers live in tests/support/ (or in the `redpoll`
pytest plugin), never in another test module or a conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in imported_modules(path):
            leaf = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (leaf.startswith("test_") or leaf == "conftest"):
                offenders.append(f"{path.relative_to(TESTS)} imports {module}")
    assert not offenders, offenders
