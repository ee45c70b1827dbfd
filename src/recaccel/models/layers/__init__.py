"""Building blocks shared by the model zoo: embeddings, MLPs and feature interactions."""

from recaccel.models.layers.embedding import SparseArch
from recaccel.models.layers.interaction import CrossNetV2, DotInteraction, FactorizationMachine
from recaccel.models.layers.linear import LinearTerm
from recaccel.models.layers.mlp import MLP

__all__ = [
    "MLP",
    "CrossNetV2",
    "DotInteraction",
    "FactorizationMachine",
    "LinearTerm",
    "SparseArch",
]
