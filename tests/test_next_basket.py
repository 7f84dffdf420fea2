"""The next-basket evaluation through a real embedded store (`redpoll evaluate --task
next-basket`): for_user is asked for every tested user, the store never holds the test
basket, and the command writes its files. Metrics, baselines and the protocol on their
own: tests/unit/test_next_basket_metrics.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from redpoll.cli.main import cli
from redpoll.evaluation.next_basket import NextBasketConfig, run_next_basket
from redpoll.testing import copy_project
from tests.support.online_retail import write_csv
from tests.support.paths import REPO_ROOT

_T0 = 1_293_840_000_000  # 2011-01-01 00:00 UTC, ms


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(REPO_ROOT, tmp_path / "project", ("sql", "migrations", "endpoints"))
    return tmp_path / "project"


def _shop() -> list[tuple[str, str, int, list[str]]]:
    """(user, order, minute, items). Day 1: guests buy 15 filler items (A..), so trend and
    popularity have something to offer. Then three customers buy fillers twice; the
    last basket of u1 and u2 is brand-new items nobody bought before (Z.., sorting after
    every filler), u3's last basket repeats its first one."""
    fillers = [f"A{n:02d}" for n in range(15)]
    rows: list[tuple[str, str, int, list[str]]] = [
        ("", f"G{n}", 9 * 60, fillers[n : n + 3]) for n in range(0, 15, 3)
    ]
    for u, user in enumerate(("u1", "u2", "u3")):
        start = 24 * 60 + 120 * u
        mine = fillers[3 * u : 3 * u + 4]
        rows.append((user, f"{user}-1", start, mine))
        rows.append((user, f"{user}-2", start + 30, fillers[3 * u + 1 : 3 * u + 5]))
        last = mine if user == "u3" else [f"Z{u}{j}" for j in range(3)]
        rows.append((user, f"{user}-3", start + 90, last))
    return rows


def _events(rows: list[tuple[str, str, int, list[str]]]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{order}:{n}",
            "ts": _T0 + minute * 60_000,
            "user_id": user,
            "order_id": order,
            "item_id": item,
            "event_type": "purchase",
            "quantity": 1,
            "price": 1.0,
        }
        for user, order, minute, items in rows
        for n, item in enumerate(items)
    ]


def _catalog(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = sorted({e["item_id"] for e in events})
    return [
        {
            "item_id": i,
            "title": f"ITEM {i}",
            "category": "ITEM",
            "brand": "",
            "price": 1.0,
            "available": True,
            "updated_at": _T0,
        }
        for i in ids
    ]


def test_for_user_is_asked_before_each_test_basket_is_in_the_store(
    project: Path, tmp_path: Path
) -> None:
    events = _events(_shop())
    config = NextBasketConfig(project_dir=project, k=10, work_dir=tmp_path)
    result = run_next_basket(events, _catalog(events), config)
    assert result.counts["users_tested"] == 3
    assert result.counts["for_user_calls"] == 3
    assert result.counts["for_user_short_answers"] == 0
    # the events of the last test basket's minute and after are never ingested
    assert result.counts["events_ingested"] == len(events) - 4
    assert result.params["for_user"]["exclude_purchased"] == "false"
    # u1's and u2's test baskets are items nobody had bought: nothing can find them,
    # unless it saw the future (then for_user's trend would rank them first)
    for method in ("G-TopFreq", "P-TopFreq", "TIFUKNN", "for_user"):
        row = result.get(method)
        assert row["users"] == 3, method
        assert row["users_explore"] == 2 and row["users_repeat"] == 1, method
        assert row["recall_explore"] == 0.0, method
    # u3 buys its first basket again: P-TopFreq's four items of the user come first
    assert result.get("P-TopFreq")["recall_repeat"] == pytest.approx(1.0)
    lift = result.lift()
    assert lift is not None and set(lift) == {"recall", "ndcg"}


def _when(minute: int) -> str:
    return f"2011-01-{1 + minute // 1440:02d} {minute % 1440 // 60:02d}:{minute % 60:02d}:00"


def test_evaluate_next_basket_command(project: Path, tmp_path: Path) -> None:
    rows = [
        [order, item, f"ITEM {item}", 1, _when(minute), 1.0, user, "UK"]
        for user, order, minute, items in _shop()
        for item in items
    ]
    dataset = write_csv(tmp_path / "shop.csv", rows)
    out = tmp_path / "out"
    base = [
        "evaluate",
        "--project",
        str(project),
        "--dataset",
        str(dataset),
        "--task",
        "next-basket",
    ]
    runner = CliRunner()
    # load everything at once; a parameter for_user does not declare is left out
    result = runner.invoke(
        cli,
        [
            *base,
            "--ingest",
            "once",
            "-f",
            "no_such_param=1",
            "-t",
            "neighbours=5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| **for_user** | 3 |" in result.output
    assert "left out (for_user does not declare them): no_such_param" in result.output
    saved = json.loads((out / "next_basket.json").read_text())
    assert saved["params"]["for_user_params_ignored"] == ["no_such_param"]
    assert saved["params"]["tifuknn"]["neighbours"] == 5
    assert saved["counts"]["events_ingested"] == 15 + 11 + 11 + 12  # every line
    assert (out / "next_basket.md").read_text().startswith("| method |")
    # or refused, when the caller says so
    result = runner.invoke(
        cli, [*base, "--strict-params", "-f", "no_such_param=1", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "for_user does not declare no_such_param" in result.output
    # baselines only: no store
    result = runner.invoke(cli, [*base, "--baselines-only", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "for_user" not in (out / "next_basket.md").read_text()
