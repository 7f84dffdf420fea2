"""Offline sweep of the embedding's settings (dimensions, PPMI smoothing) on Online
Retail, in numpy only: the cases and the cut of `redpoll train --evaluate --sample-every
4`, exact cosine top 10 instead of the endpoint (no store, no index, every item
available), so a setting costs seconds instead of minutes.

    flock /tmp/redpoll-heavy.lock .venv/bin/python bench/tune_embeddings.py \
        --dims 32 64 128 256 --alpha 0.75 1.0

Dimensions above 64 do not fit the stored vectors (`item_vectors`' index is declared
for 64, sql/embeddings.sql); they are here to show what more would buy.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from redpoll.datasets.online_retail import read_events
from redpoll.embeddings import factorize
from redpoll.evaluation.metrics import score_list
from redpoll.evaluation.similar_items import basket_cases, recall_at

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.75, 1.0])
    parser.add_argument("--sample-every", type=int, default=4)
    args = parser.parse_args()
    events = read_events(args.dataset)
    cut = events[int(len(events) * 0.8)]["ts"]  # as evaluation/similar_items.py
    baskets: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        if e["ts"] < cut and e["event_type"] == "purchase":
            baskets[e["order_id"]].add(e["item_id"])
    contexts = [sorted(b) for b in baskets.values() if 2 <= len(b) <= 50]
    cases = basket_cases([e for e in events if e["ts"] >= cut], args.sample_every)
    index: dict[str, int] = {}
    rows, cols = [], []
    for r, items in enumerate(contexts):
        for item in items:
            rows.append(r)
            cols.append(index.setdefault(item, len(index)))
    x = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(contexts), len(index))
    )
    ids = list(index)
    print(f"{len(contexts)} contexts, {len(ids)} items, {len(cases)} cases")
    print("| dims | alpha | HitRate@10 | Recall@10 | training s |")
    print("|---:|---:|---:|---:|---:|")
    for alpha in args.alpha:
        for dims in args.dims:
            started = time.perf_counter()
            u, s = factorize._svd(factorize._ppmi(x, alpha), dims)
            vectors = u * np.sqrt(s)
            seconds = time.perf_counter() - started
            norm = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            hit = recall = 0.0
            for case in cases:
                if case.first not in index:
                    continue
                sims = norm @ norm[index[case.first]]
                sims[index[case.first]] = -np.inf
                top = [ids[j] for j in np.argsort(-sims)[:10]]
                hit += score_list(top, case.rest, 10).hit
                recall += recall_at(top, case.rest, 10)
            n = len(cases)
            print(f"| {dims} | {alpha} | {hit / n:.4f} | {recall / n:.4f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
