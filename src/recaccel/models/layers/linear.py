"""The first-order (linear) term: DeepFM's first order and Wide & Deep's wide part."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.models.layers.embedding import SparseArch


class LinearTerm(nn.Module):
    """w·x over dense features plus one learned scalar per sparse id (a width-1 embedding).

    (B, n_kept_dense), (B, n_categorical), (B, n_multi_hot, L) → (B, 1). The dense input is
    the columns the model reads (see `DenseColumns`); the sparse inputs are every schema
    column, and fields in `dropped` have no weights.
    """

    def __init__(self, schema: FeatureSchema, dropped: Collection[str] = ()) -> None:
        super().__init__()
        num_dense = sum(1 for f in schema.dense if f.name not in dropped)
        self.dense = nn.Linear(num_dense, 1)
        self.sparse = SparseArch(schema, 1, dropped=dropped)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        per_field = torch.cat(self.sparse(categorical, multi_hot), dim=1)  # (B, F)
        out: torch.Tensor = self.dense(dense) + per_field.sum(dim=1, keepdim=True)
        return out
