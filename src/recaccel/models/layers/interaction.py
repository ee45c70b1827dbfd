"""Feature interactions: DLRM's pairwise dot, DCNv2's cross network, and the FM term."""

from __future__ import annotations

import torch
from torch import nn


class DotInteraction(nn.Module):
    """Pairwise dot products between F vectors, each pair once (DLRM).

    (B, F, D) → (B, F(F-1)/2). The pairs are gathered with fixed indices from the full Gram
    matrix so the exported graph is a matmul and a gather, with no data-dependent shapes.
    """

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.pair_index: torch.Tensor
        self.register_buffer("pair_index", rows * num_vectors + cols, persistent=False)
        self.num_pairs = int(rows.numel())

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        batch, num, _ = vectors.shape
        gram = torch.bmm(vectors, vectors.transpose(1, 2))  # (B, F, F)
        return gram.reshape(batch, num * num)[:, self.pair_index]  # (B, P)


class CrossNetV2(nn.Module):
    """DCNv2's cross network: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l.

    Args:
        width: size of x_0.
        num_layers: cross layers.
        rank: None for full-rank W_l (width × width); otherwise W_l = U_l V_lᵀ with inner
            size `rank`, the paper's low-rank form that cuts cost when width is large.
    """

    def __init__(self, width: int, num_layers: int, rank: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(width, width)
            if rank is None
            else nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, width))
            for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0  # (B, W)
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class FactorizationMachine(nn.Module):
    """Second-order FM term: Σ_{i<j} ⟨v_i, v_j⟩, computed in O(F·D).

    (B, F, D) → (B, 1), by the identity Σ_{i<j} v_i·v_j = ½ (‖Σ v_i‖² − Σ ‖v_i‖²).
    """

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        square_of_sum = vectors.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = vectors.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)
