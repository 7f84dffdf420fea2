"""Choose the bucket and the cap of `buyer_pairs` offline (docs/adr/0017).

    .venv/bin/python bench/choose_buyer_pairs.py [--buckets 7 30 91] [--caps 20 50 100]
        [--start 2011-09-01] [--sample-every 4] [--reference] [--out choose.json]

For every candidate (bucket_days, max_group_items) the repository's project is copied to
a scratch folder with the two constants of materialized_views/buyer_pairs.sql and of
its migration replaced, and `redpoll evaluate` (`redpoll.evaluation.evaluate`, the same
replay and scoring) runs on Online Retail with `variant=b` for both `for_user` and
`also_bought` (the variants that read `buyer_pairs`). Printed per candidate: HitRate@10
of also_bought b, for_user b (new items) and for_user b (all items), and the work of the
view on the whole data set, replayed in the evaluation's 1-hour batches (pure Python,
the rules of the view's file): pair increments and decrements per purchase event, the
most in one batch per event, and the final pair counts per event.
`--reference` also evaluates the project as committed before `buyer_pairs` (`git show
HEAD:...` of the endpoints and of materialized_views/co_purchase.sql, migrations up to
0008): also_bought b on `co_purchase`, for_user b on `basket_pairs`.
Results are appended to `--out` as each candidate finishes, so a cut-short run keeps
what it measured. Heavy: one replay per candidate.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redpoll.datasets.online_retail import read_events
from redpoll.evaluation.replay import EvalConfig, evaluate
from redpoll.materialized import load_views

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
VIEW = "materialized_views/buyer_pairs.sql"
MIGRATION = "migrations/0009_buyer_pairs.sql"
_CONSTANTS = load_views(REPO).get("buyer_pairs").constants
DEFAULT_BUCKET = f"{_CONSTANTS['bucket_days']} AS bucket_days"
DEFAULT_CAP = f"{_CONSTANTS['max_group_items']} AS max_group_items"


def candidate_project(bucket_days: int, cap: int, into: Path) -> Path:
    """A copy of the project with `buyer_pairs`' constants replaced."""
    for folder in ("sql", "materialized_views", "migrations", "endpoints"):
        shutil.copytree(REPO / folder, into / folder)
    for name in (VIEW, MIGRATION):
        path = into / name
        text = path.read_text()
        assert text.count(DEFAULT_BUCKET) == 2 and text.count(DEFAULT_CAP) == 2, name
        text = text.replace(DEFAULT_BUCKET, f"{bucket_days} AS bucket_days")
        path.write_text(text.replace(DEFAULT_CAP, f"{cap} AS max_group_items"))
    return into


def reference_project(into: Path) -> Path:
    """The project as committed (HEAD) before `buyer_pairs`: co_purchase installed."""
    for folder in ("sql", "materialized_views", "migrations", "endpoints"):
        shutil.copytree(REPO / folder, into / folder)
    shutil.rmtree(into / "materialized_views" / "optional")
    (into / VIEW).unlink()
    (into / MIGRATION).unlink()
    for name in (
        "endpoints/also_bought.sql",
        "endpoints/for_user.sql",
        "materialized_views/co_purchase.sql",
    ):
        text = subprocess.run(
            ["git", "show", f"HEAD:{name}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        (into / name).write_text(text)
    return into


def work_per_event(
    events: list[dict[str, Any]], bucket_days: int, cap: int, window_ms: int = 3_600_000
) -> dict[str, float]:
    """The view's pair increments when the purchases arrive in `window_ms` batches, by
    the rules of materialized_views/buyer_pairs.sql."""
    stored: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    period = 86_400_000 * bucket_days
    added = removed = purchases = 0
    worst = 0.0
    batch: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    batch_events = 0
    batch_start = None

    def flush() -> None:
        nonlocal added, removed, worst
        work = 0
        for key, items in batch.items():
            old = stored[key]
            new = sorted(items - old)
            n_old, n_new = len(old), len(new)
            if n_old > cap or not new:
                continue
            if n_old + n_new <= cap:
                work += n_new * (n_new - 1) + 2 * n_new * n_old
                added += n_new * (n_new - 1) + 2 * n_new * n_old
            else:
                work += n_old * (n_old - 1)
                removed += n_old * (n_old - 1)
            old.update(new[: max(cap + 1 - n_old, 0)])
        if batch_events:
            worst = max(worst, work / batch_events)
        batch.clear()

    for e in events:
        if e["event_type"] != "purchase" or not (e["user_id"] or e["order_id"]):
            continue
        if batch_start is None or e["ts"] >= batch_start + window_ms:
            flush()
            batch_start, batch_events = e["ts"] - e["ts"] % window_ms, 0
        buyer = f"u:{e['user_id']}" if e["user_id"] else f"o:{e['order_id']}"
        batch[(buyer, e["ts"] // period)].add(e["item_id"])
        batch_events += 1
        purchases += 1
    flush()
    final = sum(len(items) * (len(items) - 1) for items in stored.values() if len(items) <= cap)
    return {
        "purchases": purchases,
        "increments_per_event": round(added / purchases, 2),
        "decrements_per_event": round(removed / purchases, 2),
        "worst_batch_per_event": round(worst, 2),
        "final_pairs_per_event": round(final / purchases, 2),
    }


def run(name: str, project: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result = evaluate(
        EvalConfig(
            dataset=args.dataset,
            project_dir=project,
            k=10,
            start=args.start,
            sample_every=args.sample_every,
            for_user_params={"variant": "b"},
            also_bought_params={"variant": "b"},
        )
    )
    return {
        "candidate": name,
        "also_bought_b": round(result.get("also_bought", "endpoint")["hit"], 4),
        "for_user_b_new": round(result.get("for_user_new", "endpoint")["hit"], 4),
        "for_user_b_all": round(result.get("for_user_all", "endpoint")["hit"], 4),
        "eval_s": round(time.perf_counter() - started),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--buckets", type=int, nargs="+", default=[7, 30, 91])
    parser.add_argument("--caps", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--start", type=dt.datetime.fromisoformat, default=None)
    parser.add_argument("--sample-every", type=int, default=4)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--no-eval", action="store_true", help="only the work per event")
    parser.add_argument("--out", type=Path, default=Path("choose_buyer_pairs.json"))
    args = parser.parse_args()
    events = read_events(args.dataset)
    candidates: list[tuple[int, int] | None] = [(b, n) for b in args.buckets for n in args.caps]
    if args.reference:
        candidates.append(None)
    for candidate in candidates:
        with tempfile.TemporaryDirectory(prefix="choose-buyer-pairs-") as tmp:
            if candidate is None:
                row: dict[str, Any] = {"candidate": "reference (co_purchase / basket_pairs)"}
                project = reference_project(Path(tmp))
            else:
                bucket_days, cap = candidate
                row = {"candidate": f"{bucket_days} d x {cap}", "bucket_days": bucket_days}
                row |= {"max_group_items": cap, **work_per_event(events, bucket_days, cap)}
                project = candidate_project(bucket_days, cap, Path(tmp))
            if not args.no_eval:
                row |= run(row["candidate"], project, args)
        print(json.dumps(row), flush=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
