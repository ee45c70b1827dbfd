"""Which of the schema's fields a model reads, and how wide each of its tables is.

Every zoo config carries the same three options (`FieldOptions`). A model that drops fields
still takes the full schema's three input tensors — serving, feature stores and exported graphs
keep one contract — and simply never reads the dropped columns: it has no table for them and
its downstream layers are narrower.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.layers.embedding import mixed_dimensions


@dataclass(frozen=True, kw_only=True)
class FieldOptions:
    """Field and table-width options shared by every zoo config.

    Keyword-only and defaulted, so positional presets such as `DLRMConfig(64, (256, 64), ...)`
    and configs saved before these options existed build exactly the models they always did.
    """

    # Fields (sparse or dense) the model ignores: no table, no interaction, no input columns
    # in the layers that follow. Field pruning writes this.
    dropped_fields: tuple[str, ...] = ()
    # Ginart et al.'s mixed-dimension exponent α: table widths fall as cardinality^-α from
    # `embedding_dim` at the smallest table (see `mixed_dimensions`). 0 = every table as wide.
    mixed_dim_alpha: float = 0.0
    # Explicit width per schema sparse field, in schema order (entries of dropped fields are
    # unused). () = from `embedding_dim` and `mixed_dim_alpha`. Passes that reshape single
    # tables (embedding-dim pruning) write this.
    embedding_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mixed_dim_alpha < 0:
            raise ConfigError(f"mixed_dim_alpha must be >= 0, got {self.mixed_dim_alpha}")
        if self.mixed_dim_alpha and self.embedding_dims:
            raise ConfigError(
                "set mixed_dim_alpha or embedding_dims, not both",
                "embedding_dims lists every table's width; alpha derives them from cardinalities",
            )
        if any(d < 1 for d in self.embedding_dims):
            raise ConfigError(f"embedding_dims must all be >= 1, got {self.embedding_dims}")
        if len(set(self.dropped_fields)) != len(self.dropped_fields):
            raise ConfigError(f"dropped_fields lists a field twice: {self.dropped_fields}")

    def table_widths(self, schema: FeatureSchema, embedding_dim: int) -> tuple[int, ...]:
        """Width of each of the schema's sparse fields' tables, dropped ones included.

        Mixed dimensions are computed over the whole schema, so dropping a field never
        reshapes the tables of the others.
        """
        check_dropped(schema, self.dropped_fields)
        sparse = schema.sparse
        if self.embedding_dims:
            if len(self.embedding_dims) != len(sparse):
                raise ConfigError(
                    f"embedding_dims has {len(self.embedding_dims)} widths for "
                    f"{len(sparse)} sparse fields",
                    f"one per field, in order: {', '.join(f.name for f in sparse)}",
                )
            return self.embedding_dims
        cardinalities = [f.cardinality for f in sparse]
        return mixed_dimensions(cardinalities, embedding_dim, self.mixed_dim_alpha)


def check_dropped(schema: FeatureSchema, dropped: Collection[str]) -> None:
    """Fail with the valid names if `dropped` names a field the schema lacks, or drops every
    embedded field (a CTR model with no embedding is not what pruning should produce)."""
    names = [f.name for f in schema.features]
    unknown = sorted(set(dropped) - set(names))
    if unknown:
        raise ConfigError(
            f"dropped_fields names fields the schema {schema.name!r} lacks: {unknown}",
            f"valid field names: {', '.join(names)}",
        )
    if schema.sparse and all(f.name in dropped for f in schema.sparse):
        raise ConfigError(
            "dropped_fields drops every categorical and multi-hot field",
            "keep at least one embedded field",
        )


class DenseColumns(nn.Module):
    """The dense columns a model reads: (B, n_dense) → (B, n_kept).

    With nothing dropped it returns its input untouched, so today's graphs are unchanged.
    """

    index: torch.Tensor

    def __init__(self, schema: FeatureSchema, dropped: Collection[str] = ()) -> None:
        super().__init__()
        kept = [i for i, f in enumerate(schema.dense) if f.name not in dropped]
        self.names = tuple(schema.dense[i].name for i in kept)
        self.select_all = len(kept) == len(schema.dense)
        # Not persistent: derived from the config, so it stays out of saved weights.
        self.register_buffer("index", torch.tensor(kept, dtype=torch.long), persistent=False)
        self.out_features = len(kept)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense if self.select_all else dense.index_select(1, self.index)
