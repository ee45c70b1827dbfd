"""Encoded datasets: what every model trains and evaluates on.

A `Split` holds already-encoded numpy arrays in the schema's layout (see `schema.py`); a
`Dataset` is a schema plus its train / validation / test splits. Batching slices numpy arrays
and wraps them as tensors without a copy: at MovieLens scale a DataLoader's worker machinery
costs more than the model step it feeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from recaccel.data.schema import FeatureSchema

if TYPE_CHECKING:
    from recaccel.data.movielens_encoding import MovieLensEncoding

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class FeatureBatch:
    """The three model inputs for B rows (shapes in `schema.py`)."""

    dense: torch.Tensor  # (B, n_dense) float32
    categorical: torch.Tensor  # (B, n_categorical) int64
    multi_hot: torch.Tensor  # (B, n_multi_hot, L) int64

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.dense, self.categorical, self.multi_hot


@dataclass(frozen=True)
class Split:
    """N encoded rows with their labels."""

    dense: np.ndarray  # (N, n_dense) float32
    categorical: np.ndarray  # (N, n_categorical) int64
    multi_hot: np.ndarray  # (N, n_multi_hot, L) int64
    label: np.ndarray  # (N,) float32 in {0, 1}

    def __post_init__(self) -> None:
        n = len(self.label)
        for name in ("dense", "categorical", "multi_hot"):
            rows = getattr(self, name).shape[0]
            if rows != n:
                raise ValueError(f"split has {n} labels but {rows} {name} rows")

    def __len__(self) -> int:
        return len(self.label)

    def features(self, rows: slice | np.ndarray = slice(None)) -> FeatureBatch:
        return FeatureBatch(
            dense=torch.from_numpy(np.ascontiguousarray(self.dense[rows])),
            categorical=torch.from_numpy(np.ascontiguousarray(self.categorical[rows])),
            multi_hot=torch.from_numpy(np.ascontiguousarray(self.multi_hot[rows])),
        )

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[FeatureBatch, torch.Tensor]]:
        """Yield (features, labels) minibatches; shuffled when `rng` is given."""
        order = rng.permutation(len(self)) if rng is not None else None
        for start in range(0, len(self), batch_size):
            rows: slice | np.ndarray = slice(start, start + batch_size)
            if order is not None:
                rows = order[rows]
            yield self.features(rows), torch.from_numpy(np.ascontiguousarray(self.label[rows]))

    def head(self, n: int) -> Split:
        return Split(self.dense[:n], self.categorical[:n], self.multi_hot[:n], self.label[:n])


@dataclass(frozen=True)
class Dataset:
    """A schema and its three splits.

    `synthetic` datasets are for speed, memory and scale only: their labels come from a random
    generator, so no accuracy claim may rest on them, and every report that shows one says so.

    `encoding` is how the rows were made from users, items and time (movielens_encoding.py), kept
    so serving encodes rows the dataset never held exactly as these; `feature_tables` is what
    a dataset without such an encoding ranks from. `info` is JSON-safe: it goes into artifact
    manifests.
    """

    name: str
    schema: FeatureSchema
    train: Split
    validation: Split
    test: Split
    synthetic: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    encoding: MovieLensEncoding | None = field(default=None, repr=False, compare=False)
    # (users, items): each user's request-side and each item's candidate-side features,
    # encoded (data/tables.py), that a rank request's rows are made of; None where the
    # dataset serves from its `encoding` or cannot rank.
    feature_tables: tuple[pa.Table, pa.Table] | None = field(
        default=None, repr=False, compare=False
    )

    def split(self, name: str) -> Split:
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return splits[name]

    def rows(self) -> dict[str, int]:
        """Rows per split, in split order."""
        return {name: len(self.split(name)) for name in SPLIT_NAMES}


def example_batch(schema: FeatureSchema, rows: int, seed: int = 0) -> FeatureBatch:
    """Valid random inputs for `schema`: ids within each table, multi-hot padding included."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, len(schema.dense), generator=g)
    categorical = torch.zeros(rows, len(schema.categorical), dtype=torch.int64)
    for i, feature in enumerate(schema.categorical):
        categorical[:, i] = torch.randint(0, feature.cardinality, (rows,), generator=g)
    multi_hot = torch.zeros(rows, len(schema.multi_hot), schema.multi_hot_len, dtype=torch.int64)
    for i, feature in enumerate(schema.multi_hot):
        size = (rows, feature.max_len)
        multi_hot[:, i, : feature.max_len] = torch.randint(
            0, feature.cardinality, size, generator=g
        )
    return FeatureBatch(dense, categorical, multi_hot)
