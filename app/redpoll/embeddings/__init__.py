"""Item embeddings learned from interactions (`redpoll train`, docs/embeddings.md):
`factorize` learns the vectors, `training` reads the store and swaps models in."""

from __future__ import annotations

from redpoll.embeddings.factorize import DIMENSIONS, ItemVectors, item_vectors
from redpoll.embeddings.training import (
    BackendRunner,
    Runner,
    StoreRunner,
    TrainResult,
    freshness,
    train,
)

__all__ = (
    "DIMENSIONS",
    "BackendRunner",
    "ItemVectors",
    "Runner",
    "StoreRunner",
    "TrainResult",
    "freshness",
    "item_vectors",
    "train",
)
