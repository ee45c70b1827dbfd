"""Building blocks shared by the model zoo: embeddings, MLPs and feature interactions."""

from recaccel.models.layers.embedding import SparseArch, mixed_dimensions
from recaccel.models.layers.fields import DenseColumns, FieldOptions, check_dropped
from recaccel.models.layers.interaction import CrossNetV2, DotInteraction, FactorizationMachine
from recaccel.models.layers.linear import LinearTerm
from recaccel.models.layers.mlp import MLP

__all__ = [
    "MLP",
    "CrossNetV2",
    "DenseColumns",
    "DotInteraction",
    "FactorizationMachine",
    "FieldOptions",
    "LinearTerm",
    "SparseArch",
    "check_dropped",
    "mixed_dimensions",
]
