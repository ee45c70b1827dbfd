"""DeepFM (Guo et al., 2017): a factorization machine and a deep network sharing one set of
field embeddings, their logits summed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.layers import (
    MLP,
    DenseColumns,
    FactorizationMachine,
    FieldOptions,
    LinearTerm,
    SparseArch,
)
from recaccel.models.layers.embedding import EMBEDDING_INIT_STD


@dataclass(frozen=True)
class DeepFMConfig(FieldOptions):
    # Shared by every field: the FM pairs them (mixed-dimension tables project up to it).
    embedding_dim: int = 64
    deep_mlp: tuple[int, ...] = (1024, 1024, 512, 256)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(d > self.embedding_dim for d in self.embedding_dims):
            raise ConfigError(
                f"DeepFM embedding_dims {self.embedding_dims} exceed embedding_dim "
                f"{self.embedding_dim}",
                "narrower tables are projected up to the shared width, never down",
            )


class DenseFieldEmbedding(nn.Module):
    """Each dense feature j as a field vector x_j · v_j, so the FM pairs it with sparse fields.

    (B, n_dense) → (B, n_dense, D).
    """

    def __init__(self, num_dense: int, dim: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(num_dense, dim) * EMBEDDING_INIT_STD)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(2) * self.vectors  # (B, n_dense, D)


class DeepFM(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DeepFMConfig) -> None:
        super().__init__()
        widths = config.table_widths(schema, config.embedding_dim)
        dropped = config.dropped_fields
        self.dense_columns = DenseColumns(schema, dropped)
        num_dense = self.dense_columns.out_features
        self.first_order = LinearTerm(schema, dropped)
        self.sparse_arch = SparseArch(
            schema, widths, dropped=dropped, project_to=config.embedding_dim
        )
        self.dense_fields = DenseFieldEmbedding(num_dense, config.embedding_dim)
        self.fm = FactorizationMachine()
        num_fields = num_dense + self.sparse_arch.num_fields
        self.deep_arch = MLP(num_fields * config.embedding_dim, config.deep_mlp, config.dropout)
        self.over_arch = nn.Linear(self.deep_arch.out_features, 1)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for dense (B, n_dense), categorical (B, n_cat), multi_hot (B, n_mh, L)."""
        dense = self.dense_columns(dense)  # (B, n_kept_dense)
        first_order = self.first_order(dense, categorical, multi_hot)  # (B, 1)
        fields = torch.cat(
            [self.dense_fields(dense), torch.stack(self.sparse_arch(categorical, multi_hot), 1)],
            dim=1,
        )  # (B, F, D)
        deep = self.over_arch(self.deep_arch(fields.flatten(1)))  # (B, 1)
        logits: torch.Tensor = first_order + self.fm(fields) + deep
        return logits.squeeze(1)
