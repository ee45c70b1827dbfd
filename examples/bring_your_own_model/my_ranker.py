"""A team's own ranking model: DLRM-style, written without recaccel.

Dense features through a bottom MLP, one embedding per id feature, a pooled bag of genre
embeddings, pairwise dot products between all of those vectors, and a top MLP to one logit.
"""

from __future__ import annotations

import torch
from torch import nn


class MyRanker(nn.Module):
    def __init__(
        self, n_dense: int, cardinalities: list[int], n_genres: int, dim: int = 16
    ) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(n_dense, 32), nn.ReLU(), nn.Linear(32, dim))
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        self.genres = nn.EmbeddingBag(n_genres, dim, mode="mean", padding_idx=0)
        vectors = len(cardinalities) + 2
        pairs = vectors * (vectors - 1) // 2
        self.top = nn.Sequential(nn.Linear(dim + pairs, 64), nn.ReLU(), nn.Linear(64, 1))
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        self.register_buffer("pairs", rows * vectors + cols, persistent=False)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)
        vectors = [bottom, *(t(ids[:, i]) for i, t in enumerate(self.tables)), self.genres(genres)]
        stacked = torch.stack(vectors, 1)  # (B, V, dim)
        gram = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1)
        return self.top(torch.cat([bottom, gram[:, self.pairs]], 1)).squeeze(1)
