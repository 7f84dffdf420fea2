"""The offline evaluation harness (`redpoll evaluate`) on small data.

* metrics: hand-computed HitRate/MRR/NDCG;
* no future: a synthetic shop where every invoice buys items nobody bought before. An
  honest replay can never predict them (score 0 for every method); a harness that
  ingested a purchase before asking for it would score hits (own recent purchases,
  co-purchases inside the basket);
* a smoke run on the first lines of Online Retail: every task and method is reported and
  the PNG is written.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from redpoll.cli.main import cli
from redpoll.evaluation.metrics import score_list
from redpoll.evaluation.replay import EvalConfig, evaluate
from redpoll.testing import copy_project
from tests.support.online_retail import write_csv
from tests.support.paths import REPO_ROOT


def test_metrics_by_hand() -> None:
    s = score_list(["a", "b", "c", "d"], {"c", "x"}, k=3)
    assert s.hit == 1.0
    assert s.mrr == pytest.approx(1 / 3)
    # DCG = 1/log2(4) = 0.5; ideal (2 relevant) = 1 + 1/log2(3)
    assert s.ndcg == pytest.approx(0.5 / (1 + 1 / 1.5849625007211562))
    assert score_list(["a", "b"], {"z"}, k=2).hit == 0.0
    assert score_list(["z", "b"], {"z"}, k=2).ndcg == pytest.approx(1.0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project(REPO_ROOT, tmp_path / "project", ("sql", "migrations", "endpoints"))
    return tmp_path / "project"


def test_replay_never_sees_the_future(project: Path, tmp_path: Path) -> None:
    rows: list[list[object]] = []
    # day 1: filler purchases so that popularity and trending have something to offer
    for n in range(15):  # one-line guest invoices: learned from, never scored
        rows.append(
            [str(100000 + n), f"A{n:02d}", f"FILLER {n}", 1, "2011-01-01 09:00:00", 1.0, "", "UK"]
        )
    # then, every 2 hours, one user buys three brand-new items (Z... sort last)
    for inv in range(12):
        ts = f"2011-01-02 {inv * 2:02d}:30:00"
        user = str(10000 + inv % 3)  # returning users: their history exists
        for j in range(3):
            rows.append(
                [str(200000 + inv), f"Z{inv:02d}{j}", f"NEW {inv} {j}", 1, ts, 1.0, user, "UK"]
            )
    dataset = write_csv(tmp_path / "shop.csv", rows)
    # the replay's catalog holds every item from the start (the data set has no creation
    # times), so also_bought's new-item slots would offer tomorrow's items: off here
    config = EvalConfig(
        dataset=dataset,
        project_dir=project,
        k=10,
        work_dir=tmp_path,
        also_bought_params={"new_slots": 0},
    )
    result = evaluate(config)
    assert result.counts["for_user_all_queries"] == 12
    assert result.counts["also_bought_queries"] == 12
    for row in result.table:
        assert row["hit"] == 0.0, row  # nothing predictable without the future


def test_replay_learns_from_the_past(project: Path, tmp_path: Path) -> None:
    # the same pair (P1, P2) is bought together again and again: after the first
    # window, also_bought(P1) must rank P2 first and for_user must find it for new users
    rows: list[list[object]] = []
    for n in range(15):  # one-line guest invoices: learned from, never scored
        rows.append(
            [str(100000 + n), f"A{n:02d}", f"FILLER {n}", 1, "2011-01-01 09:00:00", 1.0, "", "UK"]
        )
    for inv in range(10):
        ts = f"2011-01-02 {inv * 2:02d}:30:00"
        user = str(20000 + inv)
        rows.append([str(300000 + inv), "P1", "PAIR ONE", 1, ts, 1.0, user, "UK"])
        rows.append([str(300000 + inv), "P2", "PAIR TWO", 1, ts, 1.0, user, "UK"])
    dataset = write_csv(tmp_path / "pairs.csv", rows)
    config = EvalConfig(
        dataset=dataset,
        project_dir=project,
        k=5,
        work_dir=tmp_path,
        also_bought_params={"new_slots": 0},  # as above: the catalog knows P2 from the start
    )
    result = evaluate(config)
    also = result.get("also_bought", "endpoint")
    assert also["n"] == 10
    assert also["hit"] == pytest.approx(0.9)  # all but the very first basket
    assert also["mrr"] == pytest.approx(0.9)


def test_a_failed_replay_closes_its_engine(project: Path, tmp_path: Path) -> None:
    # chDB opens one data path per process: a replay that fails half-way must close its
    # scratch store, or every later replay in this process fails to open its own
    rows: list[list[object]] = [
        [str(300000 + inv), item, item, 1, f"2011-01-02 {inv * 2:02d}:30:00", 1.0, "20000", "UK"]
        for inv in range(4)
        for item in ("P1", "P2")
    ]
    dataset = write_csv(tmp_path / "pairs.csv", rows)
    broken = tmp_path / "broken"
    copy_project(project, broken, ("sql", "migrations", "endpoints"))
    (broken / "endpoints" / "also_bought.sql").write_text(
        "%\nSELECT toString(throwIf({{ Int32(limit, 10) }} > 0, 'broken on purpose')) AS item_id"
    )
    with pytest.raises(Exception, match="broken on purpose"):
        evaluate(EvalConfig(dataset=dataset, project_dir=broken, k=5, work_dir=tmp_path))
    result = evaluate(EvalConfig(dataset=dataset, project_dir=project, k=5, work_dir=tmp_path))
    assert result.counts["also_bought_queries"] == 4


def test_evaluate_command_on_online_retail_head(
    online_retail_csv: Path, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "evaluate",
            "--project",
            str(project),
            "--dataset",
            str(online_retail_csv),
            "--max-lines",
            "4000",
            "--k",
            "10",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    tasks = {(r["task"], r["method"]) for r in data["table"]}
    for task in ("for_user_all", "for_user_new", "also_bought"):
        for method in ("endpoint", "popularity_all", "popularity_30d", "cooc_monthly"):
            assert (task, method) in tasks
    for row in data["table"]:
        assert 0.0 <= row["ndcg"] <= row["hit"] <= 1.0 and row["n"] > 0
    assert (out / "metrics.png").stat().st_size > 10_000
    assert "| also_bought | **endpoint** |" in (out / "results.md").read_text()


def test_views_no_endpoint_reads_are_left_out_with_the_same_answers(
    project: Path, tmp_path: Path
) -> None:
    # The harness drops, from its throwaway store, the views whose output neither
    # evaluated endpoint reads; every score must be what the full set of views gives.
    rng = random.Random(5)
    rows: list[list[object]] = []
    for inv in range(60):
        ts = f"2011-01-{1 + inv // 20:02d} {inv % 20:02d}:15:00"
        user = rng.choice(["", "31", "32", "33", "34", "35"])
        for item in rng.sample(range(12), rng.randint(1, 4)):
            rows.append(
                [
                    str(400000 + inv),
                    f"I{item:02d}",
                    f"THING {item % 4} NO {item}",
                    1,
                    ts,
                    1.0,
                    user,
                    "UK",
                ]
            )
    dataset = write_csv(tmp_path / "shop.csv", rows)

    def run(all_views: bool) -> dict:
        config = EvalConfig(
            dataset=dataset, project_dir=project, k=5, all_views=all_views, work_dir=tmp_path
        )
        result = evaluate(config)
        return {"table": result.table, "counts": result.counts}

    pruned, full = run(False), run(True)
    left_out = pruned["counts"].pop("views_left_out")
    # the default variants read basket_pairs, not buyer_pairs (the b variants do)
    assert "buyer_pairs_mv" in left_out and "buyer_items_mv" in left_out
    assert "basket_pairs_mv" not in left_out and "events_mv" not in left_out
    tables_left_out = pruned["counts"].pop("tables_left_out")
    assert "buyer_pairs" in tables_left_out and "basket_pairs" not in tables_left_out
    assert full["counts"].pop("views_left_out") == []
    assert full["counts"].pop("tables_left_out") == []
    assert pruned == full
    assert pruned["counts"]["also_bought_queries"] > 20
    assert any(row["hit"] > 0 for row in pruned["table"] if row["method"] == "endpoint")


def test_sampled_runs_judge_new_items_against_every_earlier_purchase(
    project: Path, tmp_path: Path
) -> None:
    # A user buys A in an invoice that is not scored, then A again in one that is: the
    # repeat purchase has no item new to the user, whether or not the first was sampled.
    from redpoll.evaluation.timeline import stable_hash

    ids = [str(n) for n in range(500000, 500100)]
    skipped = next(i for i in ids if stable_hash(i) % 2 != 0)
    scored = next(i for i in ids if stable_hash(i) % 2 == 0)
    rows: list[list[object]] = [
        [skipped, "A", "THING A", 1, "2011-01-01 09:00:00", 1.0, "77", "UK"],
        [scored, "A", "THING A", 1, "2011-01-01 12:00:00", 1.0, "77", "UK"],
    ]
    dataset = write_csv(tmp_path / "repeat.csv", rows)
    result = evaluate(
        EvalConfig(dataset=dataset, project_dir=project, k=5, sample_every=2, work_dir=tmp_path)
    )
    assert result.counts["invoices"] == 1  # only `scored`
    assert result.counts["for_user_all_queries"] == 1
    assert result.counts.get("for_user_new_queries", 0) == 0
