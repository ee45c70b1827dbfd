"""Embedding of every categorical and multi-hot field, as the schema lists them."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema

# N(0, 0.01²) rather than PyTorch's N(0, 1): with unit-scale vectors the dot products between
# hundreds of ids start out huge and a deep CTR model trains no better than a linear one
# (measured on MovieLens-100K: DeepFM test AUC 0.70–0.74 with N(0, 1), 0.795 with N(0, 0.01²)).
EMBEDDING_INIT_STD = 0.01
# Narrowest mixed-dimension table: below 2 a vector is a scalar weight, which the first-order
# term already provides.
MIN_MIXED_DIM = 2


def mixed_dimensions(
    cardinalities: Sequence[int], base_dim: int, alpha: float, min_dim: int = MIN_MIXED_DIM
) -> tuple[int, ...]:
    """Per-field widths by Ginart et al.'s power rule (Mixed Dimension Embeddings, 2019).

    d_f = base_dim · (n_min / n_f)^α, rounded, within [min_dim, base_dim]: the smallest table
    keeps `base_dim` and larger ones shrink. Each id of a large table is looked up (and
    trained) rarely, so it supports fewer dimensions; and the large tables are where the bytes
    are, so that is where narrowing pays. α = 0 gives every field `base_dim` (today's models);
    the paper finds α ≈ 0.1–0.3 keeps accuracy on Criteo.

    >>> mixed_dimensions([3, 12, 48, 3000], 16, 0.5)
    (16, 8, 4, 2)
    >>> mixed_dimensions([3, 3000], 16, 0.0)
    (16, 16)
    """
    if not cardinalities:
        return ()
    smallest = min(cardinalities)
    widths = (round(base_dim * (smallest / n) ** alpha) for n in cardinalities)
    return tuple(min(base_dim, max(min(min_dim, base_dim), d)) for d in widths)


class SparseArch(nn.Module):
    """One table per embedded field: a plain lookup for categorical fields, a pooled bag for
    multi-hot ones.

    Single-valued fields use `nn.Embedding` (one gather each, so exported graphs stay plain);
    multi-hot fields use `nn.EmbeddingBag` in sum mode with index 0 as padding, which is also
    the form the FBGEMM quantized bag kernels accept.

    Args:
        schema: the features to embed (its `sparse` fields, in order).
        dims: embedding width per sparse field of the schema (dropped ones included), or one
            width for all.
        init_std: standard deviation of the normal initialisation.
        dropped: names of fields to leave out: no table, and their input columns are unread.
        project_to: a shared output width for models that pair vectors (dot, FM). A table
            narrower than it gets a bias-free linear projection up to it (Ginart et al.'s
            mixed-dimension embedding); None = every field keeps its own width.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        dims: int | Sequence[int],
        init_std: float = EMBEDDING_INIT_STD,
        dropped: Collection[str] = (),
        project_to: int | None = None,
    ) -> None:
        super().__init__()
        fields = schema.sparse
        widths = [dims] * len(fields) if isinstance(dims, int) else list(dims)
        if len(widths) != len(fields):
            raise ValueError(f"{len(widths)} embedding dims for {len(fields)} sparse fields")
        if project_to is not None and max(widths, default=0) > project_to:
            raise ValueError(f"table widths {widths} exceed the shared width {project_to}")
        n_cat = len(schema.categorical)
        kept = [i for i, f in enumerate(fields) if f.name not in dropped]
        # Input columns read, as Python ints, so exported graphs index by constants.
        self.categorical_columns = tuple(i for i in kept if i < n_cat)
        self.multi_hot_columns = tuple(i - n_cat for i in kept if i >= n_cat)
        self.categorical = nn.ModuleList(
            nn.Embedding(fields[i].cardinality, widths[i]) for i in self.categorical_columns
        )
        self.multi_hot = nn.ModuleList(
            nn.EmbeddingBag(fields[i].cardinality, widths[i], mode="sum", padding_idx=0)
            for i in kept
            if i >= n_cat
        )
        self.fields = tuple(fields[i].name for i in kept)
        self.dims = tuple(widths[i] for i in kept)
        self.projections: nn.ModuleList | None = None
        if project_to is not None:
            self.projections = nn.ModuleList(
                nn.Identity() if d == project_to else nn.Linear(d, project_to, bias=False)
                for d in self.dims
            )
        self.out_dims = self.dims if project_to is None else (project_to,) * len(self.dims)
        for table in [*self.categorical, *self.multi_hot]:
            nn.init.normal_(table.weight, std=init_std)
            if isinstance(table, nn.EmbeddingBag):
                with torch.no_grad():
                    table.weight[0].zero_()

    @property
    def num_fields(self) -> int:
        return len(self.dims)

    def tables(self) -> list[nn.Module]:
        """The table of each embedded field, in `fields` order."""
        return [*self.categorical, *self.multi_hot]

    def forward(self, categorical: torch.Tensor, multi_hot: torch.Tensor) -> list[torch.Tensor]:
        """Embed each field that is not dropped.

        Args:
            categorical: (B, n_categorical) int64, every schema column.
            multi_hot: (B, n_multi_hot, L) int64, 0 = padding, every schema column.

        Returns:
            one (B, out_dim_f) tensor per embedded field, categorical fields first.
        """
        out = [
            table(categorical[:, i])
            for i, table in zip(self.categorical_columns, self.categorical, strict=True)
        ]
        out += [
            bag(multi_hot[:, i, :])
            for i, bag in zip(self.multi_hot_columns, self.multi_hot, strict=True)
        ]
        if self.projections is not None:
            out = [project(v) for project, v in zip(self.projections, out, strict=True)]
        return out
