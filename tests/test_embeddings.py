"""Item embeddings: the factorization (app/redpoll/embeddings/factorize.py), `redpoll
train`'s job and its atomic model swap (embeddings/training.py), the `similar_items`
and `model_freshness` endpoints, and the CLI end to end.

Store tests use the repository's migrations on a fresh database, events ingested through
the production path (LocalBackend -> IngestService -> EventWriter) and endpoints called
as `GET /v0/pipes/<name>.json` runs them (LocalBackend.run_endpoint).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from redpoll.cli._backend import LocalBackend
from redpoll.embeddings import (
    DIMENSIONS,
    BackendRunner,
    StoreRunner,
    freshness,
    item_vectors,
    train,
)
from redpoll.store import Store
from redpoll.testing import copy_project, run_cli, run_server
from tests.support.cli_project import purchases_project
from tests.support.events import purchase
from tests.support.online_retail import write_csv
from tests.support.shop import prepare_shop

NOW = time.time() // 3600 * 3600 - 3600

# Two families that never meet: mugs are bought together, lamps are bought together.
MUGS = ["m1", "m2", "m3", "m4"]
LAMPS = ["l1", "l2", "l3", "l4"]


def _cluster_orders(items: list[str], repeat: int) -> list[list[str]]:
    """Every pair of `items` in `repeat` orders each (a complete, uniform co-occurrence)."""
    return [[a, b] for _ in range(repeat) for n, a in enumerate(items) for b in items[n + 1 :]]


def _events(orders: list[list[str]], start: int = 0) -> list[dict[str, Any]]:
    return [
        purchase(f"u{n % 5}", f"o{start + n}", item, NOW - 60 * n)
        for n, basket in enumerate(orders)
        for item in basket
    ]


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the factorization -----------------------------------------------------------------


def test_two_disjoint_clusters_give_neighbours_inside_each_cluster() -> None:
    contexts = _cluster_orders(MUGS, 2) + _cluster_orders(LAMPS, 3) + [["alone"]]
    learned = item_vectors(contexts)
    assert sorted(learned.item_ids) == sorted(MUGS + LAMPS)  # "alone" taught nothing
    assert learned.vectors.shape == (8, DIMENSIONS) and learned.vectors.dtype == np.float32
    assert learned.contexts == 6 * 2 + 6 * 3
    vec = dict(zip(learned.item_ids, learned.vectors, strict=True))
    for family, other in ((MUGS, LAMPS), (LAMPS, MUGS)):
        for item in family:
            inside = [_cos(vec[item], vec[j]) for j in family if j != item]
            outside = [_cos(vec[item], vec[j]) for j in other]
            assert min(inside) > 0.2, (item, inside)
            assert max(abs(c) for c in outside) < 1e-5, (item, outside)


def test_items_bought_with_the_same_items_are_neighbours() -> None:
    """Red and blue mugs are never bought together, but both with the teapot and the
    saucer: their vectors coincide. The lamps are another family."""
    contexts = [["red", "teapot"], ["red", "saucer"], ["blue", "teapot"], ["blue", "saucer"]]
    contexts += [["l1", "l2"], ["l2", "l3"], ["l1", "l3"]]
    learned = item_vectors(contexts, dims=4)
    assert learned.rank == 4
    assert not learned.vectors[:, 4:].any()  # padded with zeros
    vec = dict(zip(learned.item_ids, learned.vectors, strict=True))
    assert _cos(vec["red"], vec["blue"]) == pytest.approx(1.0, abs=1e-5)
    assert _cos(vec["red"], vec["blue"]) > _cos(vec["red"], vec["teapot"])
    assert abs(_cos(vec["red"], vec["l1"])) < 1e-5


def test_nothing_to_learn_and_bad_dims() -> None:
    assert item_vectors([["x"], ["y"], ["x", "x"]]).item_ids == []
    with pytest.raises(ValueError, match="dims"):
        item_vectors([["a", "b"]], dims=DIMENSIONS + 1)


def test_the_sparse_solver_agrees_with_the_dense_one() -> None:
    """Above 600 items ARPACK's truncated SVD runs; same neighbours as a small copy."""
    rng = np.random.default_rng(7)
    families = [[f"f{f}i{i}" for i in range(70)] for f in range(10)]  # 700 items
    contexts = [
        list(rng.choice(fam, size=4, replace=False)) for fam in families for _ in range(300)
    ]
    learned = item_vectors(contexts, dims=16)
    assert len(learned.item_ids) == 700
    vec = dict(zip(learned.item_ids, learned.vectors, strict=True))
    same = [_cos(vec["f0i0"], vec[f"f0i{i}"]) for i in range(1, 70)]
    other = [_cos(vec["f0i0"], vec[f"f{f}i{i}"]) for f in range(1, 10) for i in range(70)]
    assert np.mean(same) > 0.5 > max(other) + 0.3


# -- the job and the stored model ------------------------------------------------------


@pytest.fixture
def shop(project_dir: Path, store: Store) -> Iterator[LocalBackend]:
    prepare_shop(project_dir, store)
    backend = LocalBackend(store)
    yield backend
    backend.close()


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return list(store.admin.query(sql).result_rows)


def test_train_stores_vectors_and_swaps_models_atomically(shop: LocalBackend) -> None:
    store = shop.store
    runner = StoreRunner(store)
    with pytest.raises(ValueError, match="nothing to learn"):
        train(runner)
    assert freshness(runner) is None

    orders = _cluster_orders(MUGS, 2) + _cluster_orders(LAMPS, 2)
    shop.ingest("events", _ndjson(_events(orders)))
    first = train(runner)
    assert (first.items, first.events, first.contexts) == (8, 48, 24)
    assert _rows(
        store,
        "SELECT model_version, count(), min(length(vector)) FROM item_vectors "
        "GROUP BY model_version",
    ) == [(first.model_version, 8, DIMENSIONS)]
    status, data = shop.run_endpoint("similar_items", {"item_id": "m1", "rec_id": "t"})
    assert status == 200
    # equal scores (a uniform family), by item id; the lamps are orthogonal (score 0)
    assert [(r["item_id"], r["score"]) for r in data] == [(m, 0.333333) for m in MUGS[1:]]
    assert {r["model_version"] for r in data} == {str(first.model_version)}

    # a half-written model (vectors, no row in item_vector_models) is never read
    unfinished = first.model_version + 10**9
    store.admin.insert(
        "item_vectors",
        [
            [unfinished, "m1", [1.0] + [0.0] * 63, first.trained_at],
            [unfinished, "l1", [1.0] + [0.0] * 63, first.trained_at],
        ],
        column_names=["model_version", "item_id", "vector", "trained_at"],
    )
    status, again = shop.run_endpoint("similar_items", {"item_id": "m1", "rec_id": "t"})
    assert again == data

    # a bridge order links the families; the new model replaces the old one at once
    shop.ingest("events", _ndjson(_events([["m1", "l1"]] * 3, start=1000)))
    second = train(runner)
    assert second.model_version > first.model_version and second.events == 54
    assert second.dropped_versions == []  # the previous model stays for late readers
    status, data = shop.run_endpoint("similar_items", {"item_id": "l2", "rec_id": "t"})
    assert data and {r["model_version"] for r in data} == {str(second.model_version)}

    third = train(runner)
    assert third.dropped_versions == [first.model_version]
    versions = _rows(store, "SELECT DISTINCT model_version FROM item_vectors ORDER BY 1")
    # the previous (second), the current (third) and the unfinished newer one remain
    assert [v for (v,) in versions] == sorted(
        [second.model_version, third.model_version, unfinished]
    )


TRAINED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
#: the similar_items tests' catalog (x3 unavailable)
CATALOG = [
    {"item_id": "x1", "title": "ONE", "category": "c", "price": 1.0},
    {"item_id": "x2", "title": "TWO", "category": "c", "price": 2.0},
    {"item_id": "x3", "title": "THREE", "category": "d", "price": 3.0, "available": False},
    {"item_id": "x4", "title": "FOUR", "category": "d", "price": 4.0},
]


def _model(store: Store, version: int, vectors: dict[str, list[float]]) -> None:
    store.admin.insert(
        "item_vectors",
        [[version, i, v + [0.0] * (DIMENSIONS - len(v)), TRAINED] for i, v in vectors.items()],
        column_names=["model_version", "item_id", "vector", "trained_at"],
    )
    store.admin.command(
        f"INSERT INTO item_vector_models (model_version, trained_at, method, items, events, "
        f"max_batch) VALUES ({version}, '2026-01-02 03:04:05', 'test', {len(vectors)}, 0, 0)"
    )


def test_similar_items_exact_rows(shop: LocalBackend) -> None:
    """Hand-made 2-d vectors: score = cosine similarity to x1 = (1, 0)."""
    store = shop.store
    shop.ingest("items", _ndjson(CATALOG))
    status, data = shop.run_endpoint("similar_items", {"item_id": "x1"})
    assert (status, data) == (200, [])  # no model yet
    _model(
        store,
        5,
        {
            "x1": [1, 0],
            "x2": [1, 1],
            "x3": [1, 0.1],
            "x4": [1, 3],
            "x5": [3, 1],
            "x6": [0, 1],
            "x7": [-1, 0.5],
        },
    )
    status, data = shop.run_endpoint("similar_items", {"item_id": "x1", "rec_id": "t"})
    assert status == 200
    # x3: unavailable; x5: not in the catalog (kept, no title); x6: orthogonal; x7: opposite
    assert data == [
        {
            "item_id": "x5",
            "title": "",
            "category": "",
            "price": 0,
            "score": round(3 / math.sqrt(10), 6),
            "reason": "embedding",
            "model_version": "5",
            "trained_at": "2026-01-02 03:04:05.000",
            "rec_id": "t",
            "source": "similar_items",
        },
        {
            "item_id": "x2",
            "title": "TWO",
            "category": "c",
            "price": 2,
            "score": round(1 / math.sqrt(2), 6),
            "reason": "embedding",
            "model_version": "5",
            "trained_at": "2026-01-02 03:04:05.000",
            "rec_id": "t",
            "source": "similar_items",
        },
        {
            "item_id": "x4",
            "title": "FOUR",
            "category": "d",
            "price": 4,
            "score": round(1 / math.sqrt(10), 6),
            "reason": "embedding",
            "model_version": "5",
            "trained_at": "2026-01-02 03:04:05.000",
            "rec_id": "t",
            "source": "similar_items",
        },
    ]

    def ids(**params: Any) -> list[str]:
        status, rows = shop.run_endpoint("similar_items", {"item_id": "x1", **params})
        assert status == 200, rows
        return [r["item_id"] for r in rows]

    assert ids(limit=2) == ["x5", "x2"]
    assert ids(exclude=["x5", "x4"]) == ["x2"]
    assert ids(category="d") == ["x4"]
    assert ids(max_per_category=1) == ["x5", "x2", "x4"]  # '' , c, d: one each
    assert ids(min_score=0.5) == ["x5", "x2"]
    assert ids(min_score=-1) == ["x5", "x2", "x4", "x6", "x7"]
    assert ids(item_id="x6")[:2] == ["x4", "x2"]
    assert ids(item_id="nope") == []  # no vector and no order yet: nothing to fall back to
    status, _ = shop.run_endpoint("similar_items", {"item_id": "x1", "limit": 0})
    assert status == 400


def test_similar_items_without_a_vector_falls_back_to_popularity(shop: LocalBackend) -> None:
    """Issue 20: "with no signal at all, fall back to popularity", never an empty list:
    an item the current model has no vector for gets the most ordered items."""
    shop.ingest("items", _ndjson(CATALOG))
    # orders with x2: 3, x4: 2 (one of them alone), x3: 2 (unavailable), z9 (no catalog row): 1
    orders = [["x2", "x4"], ["x2", "x3"], ["x2", "x3", "z9"], ["x4"]]
    shop.ingest("events", _ndjson(_events(orders)))
    _model(shop.store, 5, {"x1": [1, 0], "x2": [1, 1]})

    status, data = shop.run_endpoint("similar_items", {"item_id": "x4", "rec_id": "t"})
    assert status == 200
    base = {"model_version": "5", "trained_at": "2026-01-02 03:04:05.000", "rec_id": "t"}
    assert data == [
        {
            "item_id": "x2",
            "title": "TWO",
            "category": "c",
            "price": 2,
            "score": 3e-9,
            "reason": "popular",
            **base,
            "source": "similar_items",
        },
        {
            "item_id": "z9",
            "title": "",
            "category": "",
            "price": 0,
            "score": 1e-9,
            "reason": "popular",
            **base,
            "source": "similar_items",
        },
    ]
    # an unknown item: the same fill, x4 included; the business rules still apply
    status, rows = shop.run_endpoint("similar_items", {"item_id": "nope", "category": "d"})
    assert [(r["item_id"], r["score"]) for r in rows] == [("x4", 2e-9)]
    status, rows = shop.run_endpoint("similar_items", {"item_id": "nope", "fallback": "false"})
    assert (status, rows) == (200, [])
    # an item with a vector keeps the embedding answer (x2 for x1), no popular fill
    status, rows = shop.run_endpoint("similar_items", {"item_id": "x1"})
    assert [(r["item_id"], r["reason"]) for r in rows] == [("x2", "embedding")]


def test_freshness_counts_events_since_training(shop: LocalBackend) -> None:
    runner = StoreRunner(shop.store)
    status, data = shop.run_endpoint("model_freshness", {})
    assert (status, data) == (200, [])
    shop.ingest("events", _ndjson(_events(_cluster_orders(MUGS, 1))))
    model = train(runner)
    fresh = freshness(runner)
    assert fresh is not None
    assert (int(fresh["model_version"]), fresh["items"], fresh["events"]) == (
        model.model_version,
        4,
        12,
    )
    assert fresh["events_since"] == 0 and 0 <= fresh["age_seconds"] < 60
    shop.ingest("events", _ndjson(_events([["m1", "m2", "l1"]], start=500)))
    assert freshness(runner)["events_since"] == 3  # type: ignore[index]
    status, data = shop.run_endpoint("model_freshness", {})
    assert status == 200 and len(data) == 1
    row = data[0]
    assert (row["model_version"], row["items"], row["events"], row["events_since"]) == (
        str(model.model_version),
        4,
        "12",
        "3",
    )
    assert row["method"] == "ppmi-svd" and row["dimensions"] == DIMENSIONS


def test_backend_runner_trains_through_admin_sql(shop: LocalBackend) -> None:
    """The path a running server takes (JSON over `redpoll sql`): same model rows."""
    shop.ingest("events", _ndjson(_events(_cluster_orders(MUGS, 1))))
    model = train(BackendRunner(shop))
    rows = _rows(shop.store, "SELECT item_id, trained_at FROM item_vectors ORDER BY item_id")
    assert [r[0] for r in rows] == MUGS
    assert abs(rows[0][1].timestamp() - model.trained_at.timestamp()) < 0.002
    assert freshness(StoreRunner(shop.store))["model_version"] == model.model_version  # type: ignore[index]


# -- the CLI ---------------------------------------------------------------------------


def test_cli_train_status_and_every(tmp_path: Path) -> None:
    root = purchases_project(tmp_path)
    copy_project(Path(__file__).resolve().parents[1], root, ("endpoints",), exist_ok=True)
    out = run_cli(root, "train")
    assert out.returncode == 1 and "nothing to learn" in out.stderr

    events = tmp_path / "events.ndjson"
    events.write_bytes(_ndjson(_events(_cluster_orders(MUGS, 1))))
    assert run_cli(root, "load", "events", str(events)).returncode == 0
    out = run_cli(root, "train", "--dims", "2")
    assert out.returncode == 0, out.stderr
    assert "items, rank 2, from 12 events (6 contexts)" in out.stdout
    out = run_cli(root, "train", "--status", "--json")
    status = json.loads(out.stdout)
    assert (status["items"], status["events"], status["events_since"]) == (4, 12, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "redpoll", "train", "--every", "0.005", "--project", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert all(line.startswith("model ") for line in lines), lines
    assert proc.returncode == 0
    out = run_cli(root, "sql", "SELECT count() FROM item_vector_models", "--format", "csv")
    assert out.stdout.splitlines()[-1] == "3", out

    # retraining while `redpoll serve` holds the store goes through it (admin SQL), and
    # the server's next answer comes from the new model (its cache is cleared)
    with run_server(root) as server:
        auth = {"Authorization": f"Bearer {server.token}"}

        def similar() -> list[dict[str, Any]]:
            r = httpx.get(f"{server.url}/v0/pipes/similar_items.json?item_id=m1", headers=auth)
            assert r.status_code == 200, r.text
            rows: list[dict[str, Any]] = r.json()["data"]
            return rows

        before = {row["model_version"] for row in similar()}
        out = run_cli(root, "train")
        assert out.returncode == 0 and "through the running server" in out.stderr, out.stderr
        after = {row["model_version"] for row in similar()}
        assert len(before) == len(after) == 1 and after != before
        assert out.stdout.startswith(f"model {after.pop()} trained at ")


# -- the offline evaluation ------------------------------------------------------------


def test_evaluation_scores_each_method_on_the_same_cases(tmp_path: Path) -> None:
    """Before the cut, mugs are bought in pairs with each other and so are lamps (and
    filler items alone, the most bought); after it, three invoices: a mug pair, a lamp
    pair, and one that starts with a brand-new item (no vector, nothing predictable)."""
    from redpoll.evaluation.similar_items import SimilarConfig, evaluate_similar, recall_at

    assert recall_at(["a", "b", "c"], frozenset({"b", "z"}), 2) == 0.5
    project = copy_project(
        Path(__file__).resolve().parents[1],
        tmp_path / "project",
        ("sql", "migrations", "endpoints"),
    )
    rows: list[list[object]] = []
    invoice = 100000

    def buy(items: list[str], ts: str) -> None:
        nonlocal invoice
        invoice += 1
        for item in items:
            rows.append([str(invoice), item, f"ITEM {item}", 1, ts, 1.0, "12345", "UK"])

    for n in range(12 * 7):  # 12 fillers, 7 orders each: more than any family item (6)
        buy([f"F{n % 12}"], "2011-01-01 08:00:00")
    for family in (MUGS, LAMPS):
        for pair in _cluster_orders(family, 2):
            buy([p.upper() for p in pair], "2011-01-01 09:00:00")
    buy(["M1", "M2"], "2011-01-03 10:00:00")
    buy(["L3", "L1", "L4"], "2011-01-03 11:00:00")
    buy(["NEW", "M3"], "2011-01-03 12:00:00")
    dataset = write_csv(tmp_path / "shop.csv", rows)
    result = evaluate_similar(
        SimilarConfig(
            dataset=dataset, project_dir=project, cut=dt.datetime(2011, 1, 2), work_dir=tmp_path
        )
    )
    assert result.cut == "2011-01-02 00:00:00Z" and result.counts == {"cases": 3}
    assert result.model["items"] == 8 and result.model["contexts"] == 24
    similar = result.get("similar_items")
    # the mug and lamp invoices: the rest of the basket is in the family's top 3; the new
    # item (no vector) gets the popularity fallback, the fillers: answered, no hit
    assert (similar["n"], similar["answered"]) == (3, 1.0)
    assert (similar["hit"], similar["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    also = result.get("also_bought")
    # the new item gets the most ordered items (fallback): the fillers only
    assert (also["answered"], also["hit"]) == (1.0, pytest.approx(2 / 3))
    popular = result.get("popularity")  # the 12 fillers: never in a test basket
    assert (popular["hit"], popular["recall"], popular["ndcg"]) == (0, 0, 0)
