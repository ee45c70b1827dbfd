"""DLRM (Naumov et al., 2019): bottom MLP on dense features, embeddings for sparse ones,
pairwise dot interactions, top MLP.

Parts are named as in TorchRec's DLRM: dense arch, sparse arch, interaction arch, over arch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP, DenseColumns, DotInteraction, FieldOptions, SparseArch


@dataclass(frozen=True)
class DLRMConfig(FieldOptions):
    # MLPerf's DLRM uses 128; every sparse vector and the bottom MLP's output share this width
    # because the dot interaction pairs them (mixed-dimension tables project up to it).
    embedding_dim: int = 128
    # MLPerf DLRM bottom MLP; its last size must equal embedding_dim.
    bottom_mlp: tuple[int, ...] = (512, 256, 128)
    # MLPerf DLRM top MLP; the last layer emits the logit and has no activation.
    top_mlp: tuple[int, ...] = (1024, 1024, 512, 256, 1)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embedding_dim:
            raise ConfigError(
                f"DLRM bottom_mlp {self.bottom_mlp} must end at embedding_dim {self.embedding_dim}",
                "the dot interaction pairs the bottom MLP's output with each embedding",
            )
        if not self.top_mlp or self.top_mlp[-1] != 1:
            raise ConfigError(f"DLRM top_mlp {self.top_mlp} must end in a 1-wide logit layer")
        if any(d > self.embedding_dim for d in self.embedding_dims):
            raise ConfigError(
                f"DLRM embedding_dims {self.embedding_dims} exceed embedding_dim "
                f"{self.embedding_dim}",
                "narrower tables are projected up to the shared width, never down",
            )


class DLRM(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DLRMConfig) -> None:
        super().__init__()
        widths = config.table_widths(schema, config.embedding_dim)
        self.dense_columns = DenseColumns(schema, config.dropped_fields)
        if not self.dense_columns.out_features:
            raise ConfigError("DLRM needs at least one dense feature", "use dcnv2 or deepfm")
        self.dense_arch = MLP(self.dense_columns.out_features, config.bottom_mlp, config.dropout)
        self.sparse_arch = SparseArch(
            schema, widths, dropped=config.dropped_fields, project_to=config.embedding_dim
        )
        self.interaction_arch = DotInteraction(self.sparse_arch.num_fields + 1)
        over_in = config.embedding_dim + self.interaction_arch.num_pairs
        self.over_arch = MLP(over_in, config.top_mlp, config.dropout, activate_last=False)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for dense (B, n_dense), categorical (B, n_cat), multi_hot (B, n_mh, L)."""
        dense_out = self.dense_arch(self.dense_columns(dense))  # (B, D)
        sparse_out = self.sparse_arch(categorical, multi_hot)  # F × (B, D)
        vectors = torch.stack([dense_out, *sparse_out], dim=1)  # (B, F+1, D)
        pairs = self.interaction_arch(vectors)  # (B, P)
        logits = self.over_arch(torch.cat([dense_out, pairs], dim=1))  # (B, 1)
        return logits.squeeze(1)  # type: ignore[no-any-return]
