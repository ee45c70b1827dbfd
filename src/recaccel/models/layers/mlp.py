"""A plain multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear → ReLU (→ Dropout) per layer.

    Args:
        in_features: width of the input.
        sizes: width of each layer, in order.
        dropout: dropout after each hidden activation (0 disables it, and it is absent at
            inference either way).
        activate_last: whether the last layer gets ReLU too. False for a layer that emits
            logits (DLRM's top MLP ends in a bare 1-wide layer).
    """

    def __init__(
        self,
        in_features: int,
        sizes: Sequence[int],
        dropout: float = 0.0,
        activate_last: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for i, size in enumerate(sizes):
            layers.append(nn.Linear(width, size))
            is_last = i == len(sizes) - 1
            if not is_last or activate_last:
                layers.append(nn.ReLU())
                if dropout > 0 and not is_last:
                    layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]
