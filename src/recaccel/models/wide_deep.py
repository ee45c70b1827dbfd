"""Wide & Deep (Cheng et al., 2016): a linear model over sparse ids and dense features (wide)
plus an MLP over their embeddings (deep), their logits summed.

The wide part here takes the raw ids; the paper's hand-built cross-product features are
left to the deep part, as most modern implementations do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.models.layers import MLP, DenseColumns, FieldOptions, LinearTerm, SparseArch


@dataclass(frozen=True)
class WideDeepConfig(FieldOptions):
    # Nothing pairs the vectors, so mixed-dimension tables are concatenated at their own width.
    embedding_dim: int = 64
    deep_mlp: tuple[int, ...] = (1024, 1024, 512, 256)
    dropout: float = 0.0


class WideDeep(nn.Module):
    def __init__(self, schema: FeatureSchema, config: WideDeepConfig) -> None:
        super().__init__()
        widths = config.table_widths(schema, config.embedding_dim)
        self.dense_columns = DenseColumns(schema, config.dropped_fields)
        self.wide_arch = LinearTerm(schema, config.dropped_fields)
        self.sparse_arch = SparseArch(schema, widths, dropped=config.dropped_fields)
        width = self.dense_columns.out_features + sum(self.sparse_arch.dims)
        self.deep_arch = MLP(width, config.deep_mlp, config.dropout)
        self.over_arch = nn.Linear(self.deep_arch.out_features, 1)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for dense (B, n_dense), categorical (B, n_cat), multi_hot (B, n_mh, L)."""
        dense = self.dense_columns(dense)  # (B, n_kept_dense)
        wide = self.wide_arch(dense, categorical, multi_hot)  # (B, 1)
        deep_in = torch.cat([dense, *self.sparse_arch(categorical, multi_hot)], dim=1)  # (B, W)
        deep = self.over_arch(self.deep_arch(deep_in))  # (B, 1)
        logits: torch.Tensor = wide + deep
        return logits.squeeze(1)
