"""Next-basket baselines (`redpoll evaluate --task next-basket`, docs/recommendations.md,
"Next-basket evaluation").

Every baseline learns from the baskets it is shown (`observe`, in time order) and answers
for a user from what it has seen so far. The runner (`next_basket.py`) shows it exactly
the orders strictly before the test basket's time, so no baseline sees the future. A
basket is one order: its distinct purchased items.

* `GTopFreq` (G-TopFreq): items by the number of baskets that contain them, across all
  users (guest orders included); equal counts by item id.
* `PTopFreq` (P-TopFreq): the user's items by the number of the user's baskets that
  contain them; equal counts: the item bought more recently first (then item id); the
  list is filled with G-TopFreq's items the user has not bought.
* `TifuKnn` (TIFUKNN-style, after Hu et al., SIGIR 2020): a time-decayed personal item
  vector over the user's baskets, grouped, blended with the mean vector of the user's
  nearest neighbours by cosine similarity (`TifuParams` for the exact definition and
  the defaults); equal scores (zeros included) follow G-TopFreq's order.

Plain Python and numpy: one user x item matrix of TIFUKNN vectors (float32, rows of
users whose history changed are recomputed lazily before a query), ~0.1 s per 100
queries on Online Retail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ("Basket", "GTopFreq", "PTopFreq", "TifuKnn", "TifuParams", "group_bounds")


@dataclasses.dataclass(frozen=True)
class Basket:
    """One order: who (`user_id`, empty for a guest checkout), when (`ts`, epoch ms, the
    earliest of its lines) and its distinct purchased items in line order."""

    user_id: str
    order_id: str
    ts: int
    items: tuple[str, ...]


class GTopFreq:
    """Items by how many baskets (of anyone) contain them; equal counts by item id.

    Items are numbered in order of first sight (`column`); `TifuKnn` shares the numbering.
    """

    name = "G-TopFreq"

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self._counts = np.zeros(1024, dtype=np.int64)
        self._id_rank: np.ndarray | None = None  # per column: rank of its id among all ids
        self._order: np.ndarray | None = None  # columns, most frequent first
        self._positions: np.ndarray | None = None  # per column: its place in _order

    def column(self, item: str) -> int:
        col = self.index.get(item)
        if col is None:
            col = self.index[item] = len(self.ids)
            self.ids.append(item)
            if col == len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
            self._id_rank = None
        return col

    def observe(self, basket: Basket) -> None:
        cols = [self.column(i) for i in basket.items]
        self._counts[cols] += 1  # the items of one basket are distinct
        self._order = self._positions = None

    def order(self) -> np.ndarray:
        """Every column seen so far, most frequent first (cached until the next basket)."""
        if self._order is None:
            n = len(self.ids)
            if self._id_rank is None:
                rank = np.empty(n, dtype=np.int64)
                rank[np.argsort(np.array(self.ids, dtype=str), kind="stable")] = np.arange(n)
                self._id_rank = rank
            self._order = np.lexsort((self._id_rank, -self._counts[:n]))
        return self._order

    def positions(self) -> np.ndarray:
        """Per column, its place in `order()`."""
        if self._positions is None:
            order = self.order()
            positions = np.empty(len(order), dtype=np.int64)
            positions[order] = np.arange(len(order))
            self._positions = positions
        return self._positions

    def ranking(self) -> list[str]:
        return [self.ids[c] for c in self.order()]

    def recommend(self, user_id: str, k: int) -> list[str]:
        return [self.ids[c] for c in self.order()[:k]]


class PTopFreq:
    """The user's items by how many of the user's baskets contain them (equal counts:
    the more recently bought first, then item id), filled with G-TopFreq."""

    name = "P-TopFreq"

    def __init__(self) -> None:
        self.fill = GTopFreq()
        # user -> item -> [baskets with the item, sequence number of the latest one]
        self.users: dict[str, dict[str, list[int]]] = {}
        self._seq = 0

    def observe(self, basket: Basket) -> None:
        self.fill.observe(basket)
        self._seq += 1
        if not basket.user_id:
            return
        mine = self.users.setdefault(basket.user_id, {})
        for item in basket.items:
            entry = mine.get(item)
            if entry is None:
                mine[item] = [1, self._seq]
            else:
                entry[0] += 1
                entry[1] = self._seq

    def recommend(self, user_id: str, k: int) -> list[str]:
        mine = self.users.get(user_id, {})
        own = sorted(mine, key=lambda i: (-mine[i][0], -mine[i][1], i))[:k]
        if len(own) < k:
            taken = set(own)
            for col in self.fill.order():
                item = self.fill.ids[col]
                if item not in taken:
                    own.append(item)
                    if len(own) == k:
                        break
        return own


@dataclasses.dataclass(frozen=True)
class TifuParams:
    """TIFUKNN-style scoring of a user with history baskets b_1..b_n (oldest first, each
    a 0/1 item vector):

    * basket weight `within_decay` ** (n - i) for b_i (the latest basket weighs 1);
    * the n baskets are cut into `groups` consecutive groups of as equal a size as
      possible, the larger ones last (fewer than `groups` baskets: one group each); a
      group's vector is the mean of its weighted basket vectors;
    * user vector u = sum over groups g_1..g_G of `group_decay` ** (G - j) * g_j / G;
    * the `neighbours` other users whose vectors are most cosine-similar to u (only
      similarities > 0; equal ones: the user seen first), with vectors from their
      baskets before the same cut;
    * score = `alpha` * u + (1 - `alpha`) * mean of the neighbours' vectors (no
      neighbour: u alone).

    Defaults: the paper's setting for TaFeng (Hu et al. 2020, Table 3; also Cornac's
    defaults), the data set closest to Online Retail in size and baskets per user:
    k = 300 neighbours, m = 7 groups, r_b = 0.9, r_g = 0.7, alpha = 0.7. Unlike the
    authors' code, the group-decay exponent counts the user's own groups (the latest
    group always weighs 1) and neighbours are found by cosine similarity, not Euclidean
    distance.
    """

    neighbours: int = 300
    within_decay: float = 0.9
    group_decay: float = 0.7
    groups: int = 7
    alpha: float = 0.7

    def __post_init__(self) -> None:
        if self.neighbours < 0 or self.groups < 1:
            raise ValueError("neighbours must be >= 0 and groups >= 1")
        for name in ("within_decay", "group_decay", "alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


def group_bounds(n: int, groups: int) -> list[tuple[int, int]]:
    """[start, end) of each group of `n` baskets cut into `groups` consecutive groups:
    sizes n // groups, the last n % groups groups one larger; fewer baskets than groups:
    one basket per group (the authors' grouping)."""
    if n < groups:
        return [(i, i + 1) for i in range(n)]
    base, extra = divmod(n, groups)
    bounds = []
    start = 0
    for g in range(groups):
        size = base + (1 if g >= groups - extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


class TifuKnn:
    """TIFUKNN-style baseline (`TifuParams`); learns baskets in time order like the others.

    User vectors are rows of a dense float32 user x item matrix, kept also transposed
    (the similarity reads the columns of the user's items; the neighbours' mean reads
    rows); `reserve` sizes both up front when the number of users and items is known,
    they grow otherwise. A user's row is recomputed before the next query after the
    user's history changed.
    """

    name = "TIFUKNN"

    def __init__(self, params: TifuParams | None = None) -> None:
        self.params = params or TifuParams()
        self.fill = GTopFreq()  # the item numbering, and the order of equal scores
        self.users: dict[str, int] = {}  # user id -> row, in order of first basket
        self.baskets: list[list[np.ndarray]] = []  # per row: item columns per basket
        self._matrix = np.zeros((256, 1024), dtype=np.float32)
        self._by_item = np.zeros((1024, 256), dtype=np.float32)  # the transpose
        self._norms = np.zeros(256, dtype=np.float64)
        self._dirty: set[int] = set()

    def reserve(self, users: int, items: int) -> None:
        """Size the matrix for this many users and items (avoids regrowing)."""
        self._grow(users, items)

    # -- learning -----------------------------------------------------------------

    def observe(self, basket: Basket) -> None:
        self.fill.observe(basket)
        if not basket.user_id:
            return
        columns = np.array([self.fill.index[i] for i in basket.items], dtype=np.int64)
        row = self.users.get(basket.user_id)
        if row is None:
            row = self.users[basket.user_id] = len(self.baskets)
            self.baskets.append([])
        self.baskets[row].append(columns)
        self._dirty.add(row)

    def user_vector(self, baskets: Sequence[np.ndarray]) -> np.ndarray:
        """The decayed, grouped item vector of one user's baskets (oldest first)."""
        p = self.params
        vec = np.zeros(len(self.fill.ids), dtype=np.float64)
        n = len(baskets)
        bounds = group_bounds(n, p.groups)
        g_count = len(bounds)
        for j, (start, end) in enumerate(bounds):
            group_weight = p.group_decay ** (g_count - 1 - j) / (end - start) / g_count
            for i in range(start, end):
                vec[baskets[i]] += group_weight * p.within_decay ** (n - 1 - i)
        return vec

    def _grow(self, rows: int, cols: int) -> None:
        have_rows, have_cols = self._matrix.shape
        if rows <= have_rows and cols <= have_cols:
            return
        new_rows = rows if rows <= have_rows else max(rows, have_rows * 3 // 2)
        new_cols = cols if cols <= have_cols else max(cols, have_cols * 3 // 2)
        new_rows, new_cols = max(new_rows, have_rows), max(new_cols, have_cols)
        grown = np.zeros((new_rows, new_cols), dtype=np.float32)
        grown[:have_rows, :have_cols] = self._matrix
        self._matrix = grown
        self._by_item = np.ascontiguousarray(grown.T)
        norms = np.zeros(new_rows, dtype=np.float64)
        norms[:have_rows] = self._norms
        self._norms = norms

    def _refresh(self) -> None:
        """Recompute the rows of users with new baskets."""
        cols = len(self.fill.ids)
        self._grow(len(self.baskets), cols)
        for row in self._dirty:
            self._matrix[row, :cols] = self.user_vector(self.baskets[row])
            self._by_item[:cols, row] = self._matrix[row, :cols]
            self._norms[row] = float(np.linalg.norm(self._matrix[row, :cols]))
        self._dirty.clear()

    # -- answering ----------------------------------------------------------------

    def scores(self, user_id: str) -> np.ndarray | None:
        """Score per item column (None: the user has no basket yet)."""
        row = self.users.get(user_id)
        if row is None:
            return None
        self._refresh()
        p = self.params
        rows, cols = len(self.baskets), len(self.fill.ids)
        mine = self._matrix[row, :cols].astype(np.float64)
        norm = self._norms[row]
        if p.neighbours == 0 or norm == 0.0:
            return mine
        # cosine similarity to every user: only the user's own items contribute
        own = np.flatnonzero(mine)
        dots = (self._matrix[row, own] @ self._by_item[own, :rows]).astype(np.float64)
        norms = self._norms[:rows]
        sims = np.zeros(rows, dtype=np.float64)
        valid = norms > 0
        sims[valid] = dots[valid] / (norms[valid] * norm)
        sims[row] = 0.0
        candidates = np.flatnonzero(sims > 0)
        if len(candidates) == 0:
            return mine
        # most similar first, equal similarities: the user seen first (lower row)
        order = candidates[np.lexsort((candidates, -sims[candidates]))]
        chosen = order[: p.neighbours]
        neighbours = self._matrix[chosen, :cols].mean(axis=0, dtype=np.float64)
        blended: np.ndarray = p.alpha * mine + (1.0 - p.alpha) * neighbours
        return blended

    def recommend(self, user_id: str, k: int) -> list[str]:
        scores = self.scores(user_id)
        if scores is None:
            return self.fill.recommend(user_id, k)
        # equal scores (the zeros too) in G-TopFreq's order
        order = np.lexsort((self.fill.positions(), -scores))[:k]
        return [self.fill.ids[c] for c in order]
