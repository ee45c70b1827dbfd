"""DCNv2 (Wang et al., 2021): a cross network of explicit bounded-degree interactions, stacked
with a deep network, over the concatenated embeddings and dense features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP, CrossNetV2, DenseColumns, FieldOptions, SparseArch


@dataclass(frozen=True)
class DCNv2Config(FieldOptions):
    # Nothing pairs the vectors, so mixed-dimension tables are concatenated at their own width.
    embedding_dim: int = 64
    # Three cross layers: the paper finds 2–3 reach most of the gain.
    cross_layers: int = 3
    # None = full-rank cross weights; an int = the paper's low-rank U Vᵀ form.
    cross_rank: int | None = None
    deep_mlp: tuple[int, ...] = (1024, 1024, 512, 256)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cross_layers < 1:
            raise ConfigError(f"DCNv2 needs cross_layers >= 1, got {self.cross_layers}")
        if self.cross_rank is not None and self.cross_rank < 1:
            raise ConfigError(f"DCNv2 cross_rank must be None or >= 1, got {self.cross_rank}")


class DCNv2(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DCNv2Config) -> None:
        super().__init__()
        widths = config.table_widths(schema, config.embedding_dim)
        self.dense_columns = DenseColumns(schema, config.dropped_fields)
        self.sparse_arch = SparseArch(schema, widths, dropped=config.dropped_fields)
        width = self.dense_columns.out_features + sum(self.sparse_arch.dims)
        self.cross_arch = CrossNetV2(width, config.cross_layers, config.cross_rank)
        self.deep_arch = MLP(width, config.deep_mlp, config.dropout)
        self.over_arch = nn.Linear(self.deep_arch.out_features, 1)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for dense (B, n_dense), categorical (B, n_cat), multi_hot (B, n_mh, L)."""
        sparse_out = self.sparse_arch(categorical, multi_hot)  # F × (B, d_f)
        x0 = torch.cat([self.dense_columns(dense), *sparse_out], dim=1)  # (B, W)
        crossed = self.cross_arch(x0)  # (B, W)
        return self.over_arch(self.deep_arch(crossed)).squeeze(1)  # type: ignore[no-any-return]
