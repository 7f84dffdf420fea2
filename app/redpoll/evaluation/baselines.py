"""Baselines computed by the harness from the same replayed purchases the store saw.

They only learn from windows already ingested (`observe` is called after the window's
queries), exactly like the endpoints, so no baseline sees the future:

* `popularity_all`: purchase lines per item since the start of the replay;
* `popularity_30d`: purchase lines per item in the 30 days before the window;
* `cooc_monthly`: a batch item-item co-occurrence model (items bought in the same
  invoice), retrained from all history on the first window of every calendar month and
  frozen in between, as a monthly batch job would produce; for a user it sums the rows
  of the items the user bought (the user's history is current, the model is not).

Ties and empty scores fall back to all-time popularity so every list has k items.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ("Baselines",)

_DAY_MS = 86_400_000


class Baselines:
    def __init__(self, item_ids: Iterable[str], window_days: int = 30) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        for item in item_ids:
            self._idx(item)
        self.window_ms = window_days * _DAY_MS
        n = len(self.ids)
        self.pop_all = np.zeros(n, dtype=np.float64)
        self.pop_win = np.zeros(n, dtype=np.float64)
        self._recent: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.cooc = np.zeros((n, n), dtype=np.float32)
        self.cooc_model = self.cooc.copy()
        self.model_month = ""
        self.user_items: dict[str, set[int]] = collections.defaultdict(set)
        self._order_all = np.arange(n)
        self._order_win = np.arange(n)

    def _idx(self, item: str) -> int:
        i = self.index.get(item)
        if i is None:
            i = self.index[item] = len(self.ids)
            self.ids.append(item)
        return i

    # -- learning (after a window's queries) ----------------------------------------

    def observe(self, ts_ms: int, purchases: Sequence[tuple[str, str, str]]) -> None:
        """Learn one ingested window: (user_id, order_id, item_id) purchase lines."""
        idx = np.array([self.index[i] for _, _, i in purchases], dtype=np.int64)
        if len(idx):
            np.add.at(self.pop_all, idx, 1.0)
            np.add.at(self.pop_win, idx, 1.0)
            self._recent.append((ts_ms, idx))
        baskets: dict[str, set[int]] = collections.defaultdict(set)
        for user, order, item in purchases:
            i = self.index[item]
            baskets[order].add(i)
            if user:
                self.user_items[user].add(i)
        for items in baskets.values():
            if len(items) > 1:
                sel = np.fromiter(items, dtype=np.int64)
                self.cooc[np.ix_(sel, sel)] += 1.0

    def start_window(self, ts_ms: int, month: str) -> None:
        """Before a window's queries: expire the 30-day counts, retrain monthly."""
        while self._recent and self._recent[0][0] < ts_ms - self.window_ms:
            _, idx = self._recent.popleft()
            np.subtract.at(self.pop_win, idx, 1.0)
        if month != self.model_month:
            self.cooc_model = self.cooc.copy()
            np.fill_diagonal(self.cooc_model, 0.0)
            self.model_month = month
        # stable orders; ties broken by all-time popularity, then catalog order
        self._order_all = np.argsort(-self.pop_all, kind="stable")
        self._order_win = np.lexsort((-self.pop_all, -self.pop_win))

    # -- recommending -----------------------------------------------------------------

    def _top(self, order: np.ndarray, k: int, skip: set[int]) -> list[str]:
        out: list[str] = []
        for i in order:
            if int(i) in skip:
                continue
            out.append(self.ids[i])
            if len(out) == k:
                break
        return out

    def _top_scores(self, scores: np.ndarray, k: int, skip: set[int]) -> list[str]:
        scores = scores + self.pop_all * 1e-9  # tie-break / fill by popularity
        if skip:
            scores[list(skip)] = -np.inf
        top = np.argpartition(-scores, min(k, len(scores) - 1))[: k + 1]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self.ids[i] for i in top if np.isfinite(scores[i])][:k]

    def user_known_items(self, user: str) -> set[int]:
        return self.user_items.get(user, set())

    def user_known_item_ids(self, user: str) -> set[str]:
        """The user's purchases ingested so far (what `user_item_stats` holds)."""
        return {self.ids[i] for i in self.user_items.get(user, ())}

    def for_user(self, method: str, user: str, k: int, exclude_purchased: bool) -> list[str]:
        bought = self.user_known_items(user)
        skip = bought if exclude_purchased else set()
        if method == "popularity_all":
            return self._top(self._order_all, k, skip)
        if method == "popularity_30d":
            return self._top(self._order_win, k, skip)
        if method == "cooc_monthly":
            if not bought:
                return self._top(self._order_all, k, skip)
            scores = self.cooc_model[list(bought)].sum(axis=0, dtype=np.float64)
            return self._top_scores(scores, k, skip)
        raise ValueError(method)

    def also_bought(self, method: str, item: str, k: int) -> list[str]:
        i = self.index[item]
        skip = {i}
        if method == "popularity_all":
            return self._top(self._order_all, k, skip)
        if method == "popularity_30d":
            return self._top(self._order_win, k, skip)
        if method == "cooc_monthly":
            return self._top_scores(self.cooc_model[i].astype(np.float64), k, skip)
        raise ValueError(method)
