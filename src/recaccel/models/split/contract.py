"""The contract every split twin keeps (`SplitModel`), whatever family it was cut from.

`request(dense, categorical, multi_hot)` on R request rows returns one (R, K) tensor, the
request part; `candidates(part, owner, dense, categorical, multi_hot)` scores N candidate rows,
row i belonging to request `owner[i]`; `forward` runs both, which is what export traces. The
twins themselves are families.py, built from the pieces in parts.py.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn


class SplitModel(nn.Module):
    """A model cut into a part computed once per request and a part per candidate row."""

    @abstractmethod
    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """The request part of R requests, (R, K)."""

    @abstractmethod
    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (N,) of N candidate rows; `part` is `request`'s, `owner` (N,) int64."""

    def forward(
        self,
        request_dense: torch.Tensor,
        request_categorical: torch.Tensor,
        request_multi_hot: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
        owner: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (N,): both halves in one call (what export traces)."""
        part = self.request(request_dense, request_categorical, request_multi_hot)
        return self.candidates(part, owner, dense, categorical, multi_hot)
