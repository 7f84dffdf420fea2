"""Ranking metrics with binary relevance, and per-month accumulators."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Collection, Sequence

__all__ = ("Accumulator", "Scores", "score_list")


@dataclasses.dataclass(frozen=True)
class Scores:
    hit: float
    mrr: float
    ndcg: float


def score_list(ranked: Sequence[str], relevant: Collection[str], k: int) -> Scores:
    """HitRate@k (any relevant item in the top k), MRR@k (1/rank of the first one) and
    NDCG@k (binary gains, ideal = all relevant items first) of one ranked list."""
    top = list(ranked[:k])
    dcg = 0.0
    first = 0
    for rank, item in enumerate(top, start=1):
        if item in relevant:
            dcg += 1.0 / math.log2(rank + 1)
            if not first:
                first = rank
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return Scores(
        hit=1.0 if first else 0.0,
        mrr=1.0 / first if first else 0.0,
        ndcg=dcg / ideal if ideal else 0.0,
    )


@dataclasses.dataclass
class _Sum:
    n: int = 0
    hit: float = 0.0
    mrr: float = 0.0
    ndcg: float = 0.0

    def add(self, s: Scores) -> None:
        self.n += 1
        self.hit += s.hit
        self.mrr += s.mrr
        self.ndcg += s.ndcg

    def means(self) -> dict[str, float]:
        n = self.n or 1
        return {"n": self.n, "hit": self.hit / n, "mrr": self.mrr / n, "ndcg": self.ndcg / n}


class Accumulator:
    """Sums per (task, method) and per (task, method, month)."""

    def __init__(self) -> None:
        self.total: dict[tuple[str, str], _Sum] = defaultdict(_Sum)
        self.monthly: dict[tuple[str, str, str], _Sum] = defaultdict(_Sum)

    def add(self, task: str, method: str, month: str, scores: Scores) -> None:
        self.total[task, method].add(scores)
        self.monthly[task, method, month].add(scores)

    def table(self) -> list[dict[str, object]]:
        return [
            {"task": task, "method": method, **acc.means()}
            for (task, method), acc in sorted(self.total.items())
        ]

    def series(self) -> list[dict[str, object]]:
        return [
            {"task": task, "method": method, "month": month, **acc.means()}
            for (task, method, month), acc in sorted(self.monthly.items())
        ]
