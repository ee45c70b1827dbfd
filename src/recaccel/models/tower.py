"""The request-tower ranker: the model's depth on the user's side, its candidate side light.

A deep MLP (the request tower) reads only the request-side features — the user's and the
context's — and a light head reads its output beside each candidate's features:

    u     = tower([request dense, request fields' vectors])              (once per user)
    c     = [candidate dense, candidate fields' vectors]
    logit = over(head([u, c])) + cross(u) · c

Unsplit, every row runs the tower on its own copy of the user's columns, like any model. Its
split twin (models/split: `SplitTower`) runs the tower and the head's first layer's user
columns and the cross's projection once per rank request, so a request's cost grows with its
candidates by the head and one dot product; and its request part is the tower's work, what the
request-part cache (runtime/part_cache.py) keeps.

`cross(u) · c` is a bilinear user × candidate term, uᵀ W c (W a linear map from the tower's
output to the candidate's columns): the dot products that factorization machines learn between
a user's and an item's vectors, with the user's side deep. Without it the user meets the
candidate only inside the head, and an MLP learns products poorly: on MovieLens the tower
trailed DeepFM and DCNv2 students of its size by ~0.01 validation AUC; with it, within ~0.002
(docs/reuse.md). Per candidate it costs a dot product of the candidate's width.

No wide (first-order) term, unlike Wide & Deep: the head and the cross already see every
candidate column, and per candidate the wide sum was a second set of lookups — a third of a
small tower's per-candidate ops on ONNX Runtime — for no accuracy (without it, MovieLens val
AUC was equal or higher for three tower sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP, DenseColumns, FieldOptions, SparseArch


@dataclass(frozen=True)
class TowerConfig(FieldOptions):
    # Nothing pairs the vectors: mixed-dimension tables are concatenated at their own width.
    embedding_dim: int = 64
    tower_mlp: tuple[int, ...] = (1024, 512, 256)  # the request side
    head_mlp: tuple[int, ...] = (256, 128)  # per candidate
    dropout: float = 0.0


class TowerRanker(nn.Module):
    request_dense: torch.Tensor
    candidate_dense: torch.Tensor

    def __init__(self, schema: FeatureSchema, config: TowerConfig) -> None:
        super().__init__()
        widths = config.table_widths(schema, config.embedding_dim)
        self.dense_columns = DenseColumns(schema, config.dropped_fields)
        self.sparse_arch = SparseArch(schema, widths, dropped=config.dropped_fields)
        dense_sides = [schema[name].side for name in self.dense_columns.names]
        field_sides = [schema[name].side for name in self.sparse_arch.fields]
        for side, name in ((Side.REQUEST, "request_dense"), (Side.CANDIDATE, "candidate_dense")):
            columns = [i for i, s in enumerate(dense_sides) if s is side]
            self.register_buffer(name, torch.tensor(columns, dtype=torch.long), persistent=False)
        self.request_fields = tuple(i for i, s in enumerate(field_sides) if s is Side.REQUEST)
        self.candidate_fields = tuple(i for i, s in enumerate(field_sides) if s is Side.CANDIDATE)
        dims = self.sparse_arch.dims
        request_width = len(self.request_dense) + sum(dims[i] for i in self.request_fields)
        if request_width == 0:
            raise ConfigError(
                f"the tower family needs request-side features; schema {schema.name!r} marks "
                "none (or the config drops them all)",
                'mark the user\'s features side = "request", or choose another family',
            )
        # The head's candidate columns, after the tower's output.
        self.candidate_width = len(self.candidate_dense) + sum(
            dims[i] for i in self.candidate_fields
        )
        self.request_tower = MLP(request_width, config.tower_mlp, config.dropout)
        self.deep_arch = MLP(
            self.request_tower.out_features + self.candidate_width, config.head_mlp, config.dropout
        )
        self.over_arch = nn.Linear(self.deep_arch.out_features, 1)
        # W of the cross term uᵀ W c, as a layer from the tower's output to c's width.
        self.candidate_cross = nn.Linear(self.request_tower.out_features, self.candidate_width)

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for dense (B, n_dense), categorical (B, n_cat), multi_hot (B, n_mh, L)."""
        dense = self.dense_columns(dense)  # (B, n_kept_dense)
        vectors = self.sparse_arch(categorical, multi_hot)
        request = torch.cat(
            [dense.index_select(1, self.request_dense), *(vectors[i] for i in self.request_fields)],
            dim=1,
        )
        candidate = torch.cat(
            [
                dense.index_select(1, self.candidate_dense),
                *(vectors[i] for i in self.candidate_fields),
            ],
            dim=1,
        )
        user = self.request_tower(request)  # (B, U): once per request in the split twin
        deep = self.over_arch(self.deep_arch(torch.cat([user, candidate], dim=1)))
        cross = (self.candidate_cross(user) * candidate).sum(dim=1, keepdim=True)
        logits: torch.Tensor = deep + cross
        return logits.squeeze(1)
