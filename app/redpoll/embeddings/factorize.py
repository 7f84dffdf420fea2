"""Item vectors from interaction contexts: a truncated SVD of the items' PPMI matrix.

A context is a set of items one shopper put together: the items of an order, or the
items viewed, carted or bought in one session (`training.CONTEXTS_SQL`). Two items that
share contexts more often than their popularity predicts get a positive pointwise mutual
information; the truncated SVD of that (sparse, items x items) PPMI matrix gives each
item a dense vector, and two items whose vectors point the same way are bought with the
same items (substitutes, one product family), even when never bought together, which
raw co-occurrence (`also_bought`) cannot see. This is the "SVD of PPMI" of Levy,
Goldberg & Dagan (TACL 2015), with their context-distribution smoothing (alpha = 0.75)
and eigenvalue weighting (U * sqrt(S)).

Pure numpy/scipy: no store access here, so it is tested on hand-made contexts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import svds

__all__ = ("DIMENSIONS", "ItemVectors", "item_vectors")

#: The vector length `item_vectors` stores: its similarity index is declared for 64
#: dimensions (sql/embeddings.sql); a smaller factorization is padded with zeros.
DIMENSIONS = 64

# below this many items a dense SVD is exact and fast; ARPACK also needs k < n
_DENSE_BELOW = 600


@dataclasses.dataclass(frozen=True)
class ItemVectors:
    """The learned vectors: row i of `vectors` belongs to `item_ids[i]`."""

    item_ids: list[str]
    vectors: np.ndarray  # float32, (len(item_ids), DIMENSIONS)
    rank: int  # singular vectors kept (<= DIMENSIONS; the rest is zero padding)
    contexts: int  # contexts with at least two items, the ones that taught anything


def item_vectors(
    contexts: Iterable[Sequence[str]],
    dims: int = DIMENSIONS,
    alpha: float = 0.75,
) -> ItemVectors:
    """Vectors for every item that shares a context with another item.

    Args:
        contexts: item ids per context (duplicates inside a context count once).
        dims: singular vectors kept, at most `DIMENSIONS`.
        alpha: context-distribution smoothing of the PPMI (1 = plain PMI); below 1 it
            damps the PMI of rare items, which plain PMI overrates.

    Items whose PPMI row is all zero (only ever alone in a context) get no vector.
    """
    if not 1 <= dims <= DIMENSIONS:
        raise ValueError(f"dims must be within 1..{DIMENSIONS}, got {dims}")
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    n_contexts = 0
    for items in contexts:
        distinct = set(items)
        if len(distinct) < 2:
            continue
        for item in distinct:
            rows.append(n_contexts)
            cols.append(index.setdefault(item, len(index)))
        n_contexts += 1
    ids = list(index)
    if len(ids) < 2:
        return ItemVectors([], np.zeros((0, DIMENSIONS), np.float32), 0, n_contexts)
    x = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_contexts, len(ids))
    )
    ppmi = _ppmi(x, alpha)
    u, s = _svd(ppmi, dims)
    # two items are close when they are bought with the same items (second order):
    # substitutes and items of one family. Offline (docs/embeddings.md) this ranked
    # better than adding the column vectors ("w + c", first-order association too)
    vectors = (u * np.sqrt(s)).astype(np.float32)
    keep = np.linalg.norm(vectors, axis=1) > 1e-9
    out = np.zeros((int(keep.sum()), DIMENSIONS), np.float32)
    out[:, : vectors.shape[1]] = vectors[keep]
    return ItemVectors([i for i, k in zip(ids, keep, strict=True) if k], out, len(s), n_contexts)


def _ppmi(x: sparse.csr_matrix, alpha: float) -> sparse.csr_matrix:
    """max(0, log P(i, j) / (P(i) P_alpha(j))) over the co-occurrence counts of x's
    columns (contexts in which both items appear), the diagonal left out."""
    cooc = (x.T @ x).tocoo()
    off = cooc.row != cooc.col
    r, c, n = cooc.row[off], cooc.col[off], cooc.data[off].astype(np.float64)
    size = x.shape[1]
    total = n.sum()
    row_sum = np.bincount(r, weights=n, minlength=size)
    col_smooth = np.bincount(c, weights=n, minlength=size) ** alpha
    p_col = col_smooth / col_smooth.sum()
    pmi = np.log(n / total) - np.log(row_sum[r] / total) - np.log(p_col[c])
    positive = pmi > 0
    return sparse.csr_matrix(
        (pmi[positive], (r[positive], c[positive])), shape=(size, size), dtype=np.float64
    )


def _svd(m: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k leading singular values, largest first (fewer when the matrix is smaller),
    and their left singular vectors (as columns). ARPACK starts from a fixed vector, so
    a training is reproducible."""
    if m.shape[0] < _DENSE_BELOW:
        u, s, _ = np.linalg.svd(m.toarray())
        return u[:, :k], s[:k]
    v0 = np.full(m.shape[0], 1.0 / np.sqrt(m.shape[0]))
    u, s, _ = svds(m, k=min(k, m.shape[0] - 1), v0=v0)
    order = np.argsort(-s)
    return u[:, order], s[order]
