"""Repetition control, measured (`redpoll evaluate --task repetition`) on small data.

* the Python count of "shown >= k times in the last h hours with no click since",
  against hand-computed cases (window edges, a click resetting it);
* the request plan: r requests a day in the days before each test invoice, never
  before the previous one;
* the replay on a synthetic shop, through a real embedded store: with the control off
  some recommendations were already shown >= 3 times without a click (the shop is small
  and the user's ranking stable), with it on none is;
* the command writes the table.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from redpoll.cli.main import cli
from redpoll.evaluation.repetition import (
    ExposureLog,
    RepetitionConfig,
    evaluate_repetition,
    plan_requests,
    unclicked_impressions,
)
from redpoll.testing import copy_project
from tests.support.events import purchase
from tests.support.online_retail import write_csv
from tests.support.paths import REPO_ROOT

H = 3_600_000  # one hour in ms


def test_unclicked_impressions_by_hand() -> None:
    now = 100 * H
    shown = [now - 25 * H, now - 24 * H, now - 18 * H, now - 12 * H, now - 6 * H]
    # the window is (now - 24 h, now]: the impressions 25 h and exactly 24 h ago are out
    assert unclicked_impressions(shown, [], now, 24) == 3
    # a click 12 h ago: only the impression after it counts; one at the same time as
    # the click does not (for_user.sql compares "impression > last click")
    assert unclicked_impressions(shown, [now - 12 * H], now, 24) == 1
    assert unclicked_impressions(shown, [now - 13 * H], now, 24) == 2
    # a click after now is not known yet; an impression after now neither
    assert unclicked_impressions([*shown, now + H], [now + 1], now, 24) == 3
    assert unclicked_impressions(shown, [], now, 48) == 5
    log = ExposureLog()
    for t in shown:
        log.shown("u", "i", t)
    log.clicked("u", "i", now - 6 * H - 1)
    assert log.unclicked("u", "i", now, 24) == 1
    assert log.unclicked("u", "other", now, 24) == 0
    assert log.unclicked("v", "i", now, 24) == 0


def _purchase(order: str, item: str, when: dt.datetime, user: str) -> dict[str, object]:
    """A purchase line as `read_events` gives it: `ts` in epoch ms."""
    ms = int((when - dt.datetime(1970, 1, 1)).total_seconds() * 1000)
    return {**purchase(user, order, item, 0), "ts": ms}


def test_plan_requests() -> None:
    day = dt.datetime(2011, 3, 1, 12)
    events = [
        _purchase("1", "a", day, "u"),
        _purchase("2", "b", day + dt.timedelta(days=5), "u"),
        _purchase("3", "c", day + dt.timedelta(days=5, hours=15), "u"),
        _purchase("4", "d", day + dt.timedelta(days=6), "guestless"),  # one invoice only
    ]
    config = RepetitionConfig(dataset=Path(), project_dir=Path(), start=day + dt.timedelta(days=1))
    plan = plan_requests(events, config)
    second = events[1]["ts"]
    third = events[2]["ts"]
    assert isinstance(second, int) and isinstance(third, int)
    # 4 a day for 2 days before invoice 2; before invoice 3 only after invoice 2 (15 h)
    assert [r.ts for r in plan if r.order_id == "2"] == sorted(
        second - j * 6 * H for j in range(1, 9)
    )
    assert [r.ts for r in plan if r.order_id == "3"] == [third - 12 * H, third - 6 * H]
    assert {r.user_id for r in plan} == {"u"}
    assert all(r.basket == frozenset({"b"}) for r in plan if r.order_id == "2")
    assert [r.ts for r in plan] == sorted(r.ts for r in plan)
    # the start cuts invoice 2 out
    later = RepetitionConfig(
        dataset=Path(), project_dir=Path(), start=day + dt.timedelta(days=5, hours=1)
    )
    assert {r.order_id for r in plan_requests(events, later)} == {"3"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(REPO_ROOT, tmp_path / "project", ("sql", "migrations", "endpoints"))
    return tmp_path / "project"


def _shop(path: Path) -> Path:
    """20 items sold to guests on day 1; three customers who buy two of their usual
    items every third day (so `for_user` keeps offering the same repeat items, of which
    the next basket holds only some)."""
    rows: list[list[object]] = []
    start = dt.datetime(2011, 3, 1, 9)
    for n in range(20):
        stamp = (start + dt.timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([str(100000 + n), f"A{n:02d}", f"GIFT ITEM {n}", 1, stamp, 1.0, "", "UK"])
    invoice = 200000
    for user in range(3):
        usual = [f"A{(user * 5 + j) % 20:02d}" for j in range(6)]
        for visit in range(5):
            when = start + dt.timedelta(days=1 + 3 * visit, hours=user)
            stamp = when.strftime("%Y-%m-%d %H:%M:%S")
            for item in (usual[visit % 6], usual[(visit + 3) % 6]):
                rows.append(
                    [str(invoice), item, f"GIFT {item}", 2, stamp, 1.0, str(12000 + user), "UK"]
                )
            invoice += 1
    return write_csv(path, rows)


def test_control_on_shows_nothing_repeated(project: Path, tmp_path: Path) -> None:
    config = RepetitionConfig(
        dataset=_shop(tmp_path / "shop.csv"),
        project_dir=project,
        start=dt.datetime(2011, 3, 9),
        users=2,
        workers=1,
        cross_check=True,
        work_dir=tmp_path,
    )
    result = evaluate_repetition(config)
    off, on = result.run("off"), result.run("on")
    # 2 users x 2 test invoices x 8 requests (invoices 3 days apart: all 8 fit)
    assert result.counts["users"] == 2
    assert off["requests"] == on["requests"] == 32
    assert off["recommendations"] == 320  # 20 items: always 10 rows
    assert off["repeated"] > 0 and off["share"] > 0
    assert on["repeated"] == 0 and on["share"] == 0.0
    assert on["recommendations"] == 320  # the control leaves others in their place
    assert off["hit"] > 0 and on["hit"] > 0
    assert off["clicks_ingested"] > 0
    # the SQL leaves out exactly the items the Python count marks, no more
    assert on["cross_checked"] == 32 and on["cross_mismatches"] == 0


def test_command_writes_the_table(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--project",
            str(project),
            "--task",
            "repetition",
            "--dataset",
            str(_shop(tmp_path / "shop.csv")),
            "--start",
            "2011-03-12",
            "--users",
            "1",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| off | 0 |" in result.output and "| on | 3 |" in result.output
    data = json.loads((out / "repetition.json").read_text())
    assert data["counts"]["users"] == 1
    assert data["runs"][1]["share"] == 0.0
    assert (out / "repetition.md").read_text().startswith("| control |")
