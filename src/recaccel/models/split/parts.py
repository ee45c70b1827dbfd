"""The pieces every split twin is built from: which side each input is on, a linear layer cut
into its request and candidate columns, the embedding of one side's fields, and the first-order
term split the same way.

A piece's `request(...)` runs once per request (R rows); its candidate half runs once per
candidate row (N rows) and receives the request part already gathered to its rows. Every piece
is exact: it computes the same sums as the layer it stands for, only grouped differently, so
predictions match the unsplit model to fp32 rounding (docs/reuse.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema, Side
from recaccel.models.layers import MLP, LinearTerm, SparseArch


def request_flags(schema: FeatureSchema, names: Sequence[str]) -> tuple[bool, ...]:
    """For each named feature, whether it is request-side (one value per rank request)."""
    return tuple(schema[name].side is Side.REQUEST for name in names)


def positions(flags: Sequence[bool], wanted: bool) -> tuple[int, ...]:
    return tuple(i for i, flag in enumerate(flags) if flag is wanted)


def index_buffer(module: nn.Module, name: str, values: Sequence[int]) -> None:
    """A constant index as a non-persistent buffer, so exports see it and state dicts do not."""
    module.register_buffer(name, torch.tensor(list(values), dtype=torch.long), persistent=False)


# Below this many request columns a layer is not cut unless its output is no wider than them.
# Cutting saves out × k_r multiply-adds a row but makes every row copy the out-wide request
# part instead of its k_r inputs, and a copied float costs about as much as several
# multiply-adds of a small GEMM. 8 is a judgement from that ratio, not a tuned value; the case
# it leaves whole is DLRM's bottom MLP (2 of its 4 inputs the user's, into 64-512), and
# results/reuse.md has DLRM measured before and after (no clear change either way).
MIN_CUT_COLUMNS = 8


def worth_cutting(request_columns: int, out_features: int) -> bool:
    """Whether to cut a linear layer with `request_columns` request-side inputs.

    >>> worth_cutting(128, 64), worth_cutting(2, 256), worth_cutting(2, 1)
    (True, False, True)
    """
    return request_columns >= MIN_CUT_COLUMNS or out_features <= max(request_columns, 1)


class SplitLinear(nn.Module):
    """A layer over concatenated columns, some request-side: W·x + b = (W_r·x_r + b) + W_c·x_c.

    `request(x_r)` runs once per request; `candidate(part, x_c)` per row, with `part` the
    request's output gathered to the row. For a plain `nn.Linear` the request part is
    W_r·x_r + b (H wide) and a row costs only W_c·x_c. Any other layer (an int8 or half-precision
    one, whose weights cannot be cut without changing its numbers) is kept whole: its request
    part is x_r itself, and a row reassembles x in the original column order and runs the layer.
    So is a plain layer with too few request columns to pay (`worth_cutting`). Exact either
    way; only the cut form saves compute.

    Args:
        layer: the layer; its input is the concatenation the flags describe.
        flags: per input column, whether it is request-side.
    """

    order: torch.Tensor
    request_weight: nn.Parameter | None
    candidate_weight: nn.Parameter | None

    def __init__(self, layer: nn.Module, flags: Sequence[bool]) -> None:
        super().__init__()
        request_cols, candidate_cols = positions(flags, True), positions(flags, False)
        self.cut = type(layer) is nn.Linear and worth_cutting(len(request_cols), layer.out_features)
        if isinstance(layer, nn.Linear) and self.cut:
            weight = layer.weight.detach()
            bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(len(weight))
            # A side with no columns has no matmul (a zero-width Gemm is not every runtime's).
            self.request_weight = _parameter(weight[:, list(request_cols)])
            self.candidate_weight = _parameter(weight[:, list(candidate_cols)])
            self.bias = nn.Parameter(bias.clone())
            self.out_width = layer.out_features
        else:
            self.layer = layer
            # x = cat([x_r, x_c])[:, order] puts every column back where the layer expects it.
            order = sorted(range(len(flags)), key=[*request_cols, *candidate_cols].__getitem__)
            index_buffer(self, "order", order)
            self.out_width = len(request_cols)

    def request(self, x_request: torch.Tensor) -> torch.Tensor:
        """(R, k_r) → the request part, (R, out_width)."""
        if not self.cut:
            return x_request
        if self.request_weight is None:
            return self.bias.expand(x_request.shape[0], -1)
        return nn.functional.linear(x_request, self.request_weight, self.bias)

    def candidate(self, part: torch.Tensor, x_candidate: torch.Tensor) -> torch.Tensor:
        """The layer's output (N, H) from the gathered request part and the row's columns."""
        if not self.cut:
            x = torch.cat([part, x_candidate], dim=1).index_select(1, self.order)
            return self.layer(x)  # type: ignore[no-any-return]
        if self.candidate_weight is None:
            return part
        return part + nn.functional.linear(x_candidate, self.candidate_weight)


def _parameter(weight: torch.Tensor) -> nn.Parameter | None:
    """A copy of `weight` as a parameter; None when it has no columns."""
    return nn.Parameter(weight.clone()) if weight.shape[1] else None


def split_first_layer(module: nn.Module, flags: Sequence[bool]) -> tuple[SplitLinear, nn.Module]:
    """An MLP (or a Sequential) as its first layer split by `flags` and the rest; any other
    module whole, as the split layer, with nothing after it."""
    layers = module.layers if isinstance(module, MLP) else module
    if isinstance(layers, nn.Sequential) and len(layers) > 0:
        return SplitLinear(layers[0], flags), layers[1:]
    return SplitLinear(module, flags), nn.Identity()


def _linear_like(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new.to(layer.weight.dtype)


def permuted_cross_layer(layer: nn.Module, perm: Sequence[int]) -> nn.Module | None:
    """A DCNv2 cross layer (W x + b, full-rank or U V x + b) on inputs and outputs whose
    coordinates are permuted, x' = x[perm]: W' = W[perm][:, perm], b' = b[perm]. None for a
    layer of any other type (an int8 one keeps its own numbers)."""
    index = list(perm)
    if type(layer) is nn.Linear:
        bias = layer.bias.detach()[index] if layer.bias is not None else None
        return _linear_like(layer, layer.weight.detach()[index][:, index], bias)
    if isinstance(layer, nn.Sequential) and len(layer) == 2:
        down, up = layer[0], layer[1]
        if type(down) is nn.Linear and type(up) is nn.Linear and down.bias is None:
            bias = up.bias.detach()[index] if up.bias is not None else None
            return nn.Sequential(
                _linear_like(down, down.weight.detach()[:, index], None),
                _linear_like(up, up.weight.detach()[index], bias),
            )
    return None


def with_permuted_input(mlp: nn.Module, perm: Sequence[int]) -> nn.Module | None:
    """An MLP reading x[perm] instead of x (its first layer's columns permuted); None unless
    its first layer is a plain `nn.Linear`."""
    if not isinstance(mlp, MLP):
        return None
    first, *rest = list(mlp.layers)
    if not isinstance(first, nn.Linear) or type(first) is not nn.Linear:
        return None
    bias = first.bias.detach() if first.bias is not None else None
    return nn.Sequential(_linear_like(first, first.weight.detach()[:, list(perm)], bias), *rest)


class SideEmbedding(nn.Module):
    """The vectors of some of a sparse arch's fields (`wanted`, positions in its `fields`).

    A float `SparseArch` looks up only those tables. Another arch (quantized tables, fused by
    width) is run whole and the wanted vectors picked: exact, but the other side's lookups are
    paid again (what docs/reuse.md's table calls "fused tables: no lookup saving").
    """

    def __init__(self, arch: nn.Module, wanted: Sequence[int]) -> None:
        super().__init__()
        self.wanted = tuple(wanted)
        self.per_table = isinstance(arch, SparseArch)
        if not isinstance(arch, SparseArch):
            self.arch = arch
        else:
            n_cat = len(arch.categorical_columns)
            self.lookups = nn.ModuleList()
            lookups: list[tuple[bool, int]] = []
            for field in self.wanted:
                categorical = field < n_cat
                table = arch.categorical[field] if categorical else arch.multi_hot[field - n_cat]
                project = arch.projections[field] if arch.projections is not None else None
                if project is None or isinstance(project, nn.Identity):
                    self.lookups.append(table)
                else:
                    self.lookups.append(nn.Sequential(table, project))
                column = (
                    arch.categorical_columns[field]
                    if categorical
                    else arch.multi_hot_columns[field - n_cat]
                )
                lookups.append((categorical, column))
            self.columns = tuple(lookups)

    def forward(self, categorical: torch.Tensor, multi_hot: torch.Tensor) -> list[torch.Tensor]:
        """One (B, out_dim) vector per wanted field, in `wanted` order."""
        if not self.per_table:
            every = self.arch(categorical, multi_hot)
            return [every[i] for i in self.wanted]
        return [
            lookup(categorical[:, column] if is_categorical else multi_hot[:, column, :])
            for lookup, (is_categorical, column) in zip(self.lookups, self.columns, strict=True)
        ]


def side_embeddings(
    arch: SparseArch, schema: FeatureSchema
) -> tuple[tuple[bool, ...], SideEmbedding, SideEmbedding]:
    """Whether each of a sparse arch's fields is request-side, and each side's embedding."""
    flags = request_flags(schema, arch.fields)
    request = SideEmbedding(arch, positions(flags, True))
    return flags, request, SideEmbedding(arch, positions(flags, False))


def column_flags(flags: Sequence[bool], widths: Sequence[int]) -> list[bool]:
    """Per column of a concatenation of blocks (`widths` columns each, e.g. a field's vector),
    whether it is request-side, from each block's flag."""
    return [flag for flag, width in zip(flags, widths, strict=True) for _ in range(width)]


class DenseSides(nn.Module):
    """A model's kept dense columns split by side: (B, n_dense) → (B, k) of one side.

    `kept` are the schema dense columns the model reads (DenseColumns' order); `flags` their
    sides. The kept positions of each side are `request_kept` / `candidate_kept`.
    """

    request_columns: torch.Tensor
    candidate_columns: torch.Tensor

    def __init__(self, schema: FeatureSchema, kept_names: Sequence[str]) -> None:
        super().__init__()
        dense_names = [f.name for f in schema.dense]
        kept = [dense_names.index(n) for n in kept_names]
        self.flags = request_flags(schema, kept_names)
        self.request_kept = positions(self.flags, True)
        self.candidate_kept = positions(self.flags, False)
        index_buffer(self, "request_columns", [kept[i] for i in self.request_kept])
        index_buffer(self, "candidate_columns", [kept[i] for i in self.candidate_kept])

    def request(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.index_select(1, self.request_columns)

    def candidate(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.index_select(1, self.candidate_columns)


class SplitLinearTerm(nn.Module):
    """`LinearTerm` (DeepFM's first order, Wide & Deep's wide part) as request + candidate sums.

    request: w_r·dense_r + b + Σ_{request fields} w_f(id) → (R, 1);
    candidate: w_c·dense_c + Σ_{candidate fields} w_f(id) → (N, 1), added to the gathered part.
    """

    def __init__(self, term: LinearTerm, schema: FeatureSchema, dense: DenseSides) -> None:
        super().__init__()
        # LinearTerm's dense layer is a plain nn.Linear (dense quantization converts MLPs
        # only), so its request part is always one column wide.
        self.dense = SplitLinear(term.dense, dense.flags)
        if not self.dense.cut:
            raise ValueError(f"a first-order term's dense layer is a {type(term.dense).__name__}")
        _, self.request_fields, self.candidate_fields = side_embeddings(term.sparse, schema)

    def request(
        self, dense_r: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        return self.dense.request(dense_r) + _sum_scalars(
            self.request_fields(categorical, multi_hot), dense_r
        )

    def candidate(
        self,
        part: torch.Tensor,
        dense_c: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        scalars = _sum_scalars(self.candidate_fields(categorical, multi_hot), dense_c)
        return self.dense.candidate(part, dense_c) + scalars


def _sum_scalars(scalars: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Σ of width-1 vectors, (B, 1); zeros when a side has none."""
    if not scalars:
        return like.new_zeros(like.shape[0], 1)
    return torch.cat(scalars, dim=1).sum(dim=1, keepdim=True)


def gathered(part: torch.Tensor, owner: torch.Tensor, widths: list[int]) -> list[torch.Tensor]:
    """The request part cut into column pieces, then each piece gathered to its rows: cut
    first, on R rows, so the N-row copies are made once (ORT copies a sliced N-row tensor)."""
    return [piece.index_select(0, owner) for piece in torch.split(part, widths, dim=1)]


def side_by_side(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Columns side by side; (B, 0) when there are none."""
    return torch.cat(parts, dim=1) if parts else like.new_zeros(like.shape[0], 0)
