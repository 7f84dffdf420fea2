"""`redpoll endpoints test` on the repo's endpoints and seed (endpoints/tests/seed/): the
fixtures' expected rows hold in a scratch store, a wrong one fails naming its case, and
`--against-store` still runs against the configured store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from redpoll.testing import run_cli

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("sql", "materialized_views", "endpoints", "migrations")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, root / folder)
    return root


def test_fixtures_pass_on_the_seed_then_a_wrong_row_fails(project: Path) -> None:
    result = run_cli(project, "endpoints", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout + result.stderr
    assert "scratch store seeded from" in result.stderr
    passed, total = result.stdout.strip().splitlines()[-1].split()[0].split("/")
    assert passed == total and int(total) >= 30, result.stdout
    for name in ("also_bought", "for_user", "popular", "recently_viewed", "trending"):
        assert f"ok   {name}: " in result.stdout, name

    fixture = project / "endpoints" / "tests" / "popular.yaml"
    text = fixture.read_text()
    right = '{item_id: A1, title: RED MUG, category: kitchen, price: 5, purchases: "3"'
    assert right in text
    fixture.write_text(text.replace(right, right.replace('"3"', '"4"'), 1))
    result = run_cli(project, "endpoints", "test", "popular")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL popular: best-sellers of the last 30 days: row 1:" in result.stderr
    assert "'purchases': '3'" in result.stderr and "'purchases': '4'" in result.stderr


def test_against_store_uses_the_configured_store(project: Path) -> None:
    assert run_cli(project, "migrate", "up").returncode == 0
    # the configured store is empty: status checks pass, seeded expectations do not
    result = run_cli(project, "endpoints", "test", "popular", "--against-store")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "scratch store" not in result.stderr
    assert "ok   popular: look-back longer than the 90-day TTL" in result.stdout
    assert "FAIL popular: best-sellers of the last 30 days: 0 rows, expected 5" in result.stderr
