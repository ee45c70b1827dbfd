"""The split twin of each zoo family (docs/reuse.md has the algebra and what each saves).

Every twin has the same contract (`SplitModel`, contract.py): `request(dense, categorical,
multi_hot)` on R request rows returns one (R, K) tensor, the request part; `candidates(part,
owner, dense, categorical, multi_hot)` scores N candidate rows, row i belonging to request
`owner[i]`. Input tensors are the schema's three, full width, in schema column order: a twin
reads only its side's columns, so a request row may hold anything in the candidate columns and
vice versa.
"""

from __future__ import annotations

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.models.dcn import DCNv2
from recaccel.models.deepfm import DeepFM
from recaccel.models.dlrm import DLRM
from recaccel.models.split.contract import SplitModel
from recaccel.models.split.parts import (
    DenseSides,
    SideEmbedding,
    SplitLinearTerm,
    column_flags,
    gathered,
    index_buffer,
    permuted_cross_layer,
    positions,
    side_by_side,
    side_embeddings,
    split_first_layer,
    with_permuted_input,
)
from recaccel.models.tower import TowerRanker
from recaccel.models.wide_deep import WideDeep


class SplitDeepFM(SplitModel):
    """DeepFM: first order, FM and the deep MLP's first layer split.

    FM over request fields r and candidate fields c, with S = Σ v and Q = Σ ‖v‖²:
    ½(‖S_r + S_c‖² − Q_r − Q_c) = ½(‖S_r‖² − Q_r) + ½(‖S_c‖² − Q_c) + S_r·S_c.
    Part: [first order_r + FM_r (1), S_r (D), deep layer 1's request part (H)].
    """

    def __init__(self, model: DeepFM, schema: FeatureSchema) -> None:
        super().__init__()
        self.dense = DenseSides(schema, model.dense_columns.names)
        self.first_order = SplitLinearTerm(model.first_order, schema, self.dense)
        sparse_flags, self.request_fields, self.candidate_fields = side_embeddings(
            model.sparse_arch, schema
        )
        vectors = model.dense_fields.vectors.detach()
        self.request_dense_vectors = nn.Parameter(vectors[list(self.dense.request_kept)].clone())
        self.candidate_dense_vectors = nn.Parameter(
            vectors[list(self.dense.candidate_kept)].clone()
        )
        dim = vectors.shape[1]
        # The deep MLP reads the fields flattened, dense fields first: D columns per field.
        field_flags = (*self.dense.flags, *sparse_flags)
        columns = column_flags(field_flags, [dim] * len(field_flags))
        self.deep_first, self.deep_rest = split_first_layer(model.deep_arch, columns)
        self.over_arch = model.over_arch
        self.dim = dim

    def _fields(
        self,
        dense: torch.Tensor,
        vectors: torch.Tensor,
        embed: SideEmbedding,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        """One side's field vectors, (B, F_side, D): its dense fields, then its sparse ones."""
        parts = [
            dense.unsqueeze(2) * vectors,
            *(v.unsqueeze(1) for v in embed(categorical, multi_hot)),
        ]
        return torch.cat(parts, dim=1)

    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        dense_r = self.dense.request(dense)
        fields = self._fields(
            dense_r, self.request_dense_vectors, self.request_fields, categorical, multi_hot
        )  # (R, F_r, D)
        total = fields.sum(dim=1)  # (R, D)
        fm = 0.5 * (total.pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)
        scalar = self.first_order.request(dense_r, categorical, multi_hot) + fm
        deep = self.deep_first.request(fields.flatten(1))
        return torch.cat([scalar, total, deep], dim=1)

    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        scalar, total_r, deep_r = gathered(part, owner, [1, self.dim, self.deep_first.out_width])
        dense_c = self.dense.candidate(dense)
        fields = self._fields(
            dense_c, self.candidate_dense_vectors, self.candidate_fields, categorical, multi_hot
        )  # (N, F_c, D)
        total = fields.sum(dim=1)
        fm = 0.5 * (total.pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)
        cross = (total_r * total).sum(dim=1, keepdim=True)
        first_order = self.first_order.candidate(scalar, dense_c, categorical, multi_hot)
        deep = self.over_arch(self.deep_rest(self.deep_first.candidate(deep_r, fields.flatten(1))))
        logits: torch.Tensor = (first_order + fm + cross + deep).squeeze(1)
        return logits


class SplitWideDeep(SplitModel):
    """Wide & Deep: the wide sum and the deep MLP's first layer split.

    Part: [wide_r (1), deep layer 1's request part (H)].
    """

    def __init__(self, model: WideDeep, schema: FeatureSchema) -> None:
        super().__init__()
        self.dense = DenseSides(schema, model.dense_columns.names)
        self.wide = SplitLinearTerm(model.wide_arch, schema, self.dense)
        sparse_flags, self.request_fields, self.candidate_fields = side_embeddings(
            model.sparse_arch, schema
        )
        # The deep MLP reads [dense, each sparse vector at its own width], in the model's order.
        columns = column_flags(
            (*self.dense.flags, *sparse_flags),
            (*[1] * len(self.dense.flags), *model.sparse_arch.out_dims),
        )
        self.deep_first, self.deep_rest = split_first_layer(model.deep_arch, columns)
        self.over_arch = model.over_arch

    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        dense_r = self.dense.request(dense)
        x = torch.cat([dense_r, *self.request_fields(categorical, multi_hot)], dim=1)
        wide = self.wide.request(dense_r, categorical, multi_hot)
        return torch.cat([wide, self.deep_first.request(x)], dim=1)

    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        wide_r, deep_r = gathered(part, owner, [1, self.deep_first.out_width])
        dense_c = self.dense.candidate(dense)
        x = torch.cat([dense_c, *self.candidate_fields(categorical, multi_hot)], dim=1)
        wide = self.wide.candidate(wide_r, dense_c, categorical, multi_hot)
        deep = self.over_arch(self.deep_rest(self.deep_first.candidate(deep_r, x)))
        logits: torch.Tensor = (wide + deep).squeeze(1)
        return logits


class SplitTower(SplitModel):
    """The request-tower ranker: the whole request tower in the request part.

    With u = tower(x_r) and c a row's candidate columns: the head's first layer is split as
    W_u·u + b (once) + W_c·c (per row), and the cross uᵀ W c as (W u) once, then a dot product
    with c per row. Part: [W_u·u + b (H), W u (C)]; a row pays its side's lookups, W_c·c, the
    rest of the head and one C-wide dot product.
    """

    def __init__(self, model: TowerRanker, schema: FeatureSchema) -> None:
        super().__init__()
        self.dense = DenseSides(schema, model.dense_columns.names)
        _, self.request_fields, self.candidate_fields = side_embeddings(model.sparse_arch, schema)
        self.tower = model.request_tower
        # The head reads [the tower's output, the candidate's columns].
        head_columns = [True] * self.tower.out_features + [False] * model.candidate_width
        self.head_first, self.head_rest = split_first_layer(model.deep_arch, head_columns)
        self.candidate_cross = model.candidate_cross
        self.candidate_width = model.candidate_width
        self.over_arch = model.over_arch

    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        x = torch.cat([self.dense.request(dense), *self.request_fields(categorical, multi_hot)], 1)
        user = self.tower(x)
        return torch.cat([self.head_first.request(user), self.candidate_cross(user)], dim=1)

    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        head_r, cross_r = gathered(part, owner, [self.head_first.out_width, self.candidate_width])
        x = torch.cat(
            [self.dense.candidate(dense), *self.candidate_fields(categorical, multi_hot)], dim=1
        )
        deep = self.over_arch(self.head_rest(self.head_first.candidate(head_r, x)))
        cross = (cross_r * x).sum(dim=1, keepdim=True)
        logits: torch.Tensor = (deep + cross).squeeze(1)
        return logits


class SplitDCNv2(SplitModel):
    """DCNv2: the first cross layer's matmul split; x_0's request columns looked up once.

    x_1 = x_0 ⊙ (W_0 x_0 + b_0) + x_0 needs all of x_0 per row (the product is elementwise),
    so only W_0's request columns are saved, with the request side's lookups; the later cross
    layers and the deep MLP run per row. Part: [x_0's request columns (k_r), W_0,r x_0,r + b].

    A row's x_0 is [request columns, candidate columns]; every cross layer and the deep MLP's
    first layer have their weights permuted to that order once, here, so no row pays a
    reordering gather. Layers that cannot be permuted (int8) get x_0 reordered per row instead.
    """

    order: torch.Tensor

    def __init__(self, model: DCNv2, schema: FeatureSchema) -> None:
        super().__init__()
        self.dense = DenseSides(schema, model.dense_columns.names)
        sparse_flags, self.request_fields, self.candidate_fields = side_embeddings(
            model.sparse_arch, schema
        )
        columns = column_flags(
            (*self.dense.flags, *sparse_flags),
            (*[1] * len(self.dense.flags), *model.sparse_arch.out_dims),
        )
        request_cols = positions(columns, True)
        self.request_width = len(request_cols)
        perm = [*request_cols, *positions(columns, False)]
        permuted = [permuted_cross_layer(layer, perm) for layer in model.cross_arch.layers]
        deep = with_permuted_input(model.deep_arch, perm)
        layers = [layer for layer in permuted if layer is not None]
        self.permuted = deep is not None and len(layers) == len(permuted)
        if deep is not None and self.permuted:
            first_flags = [columns[i] for i in perm]  # the columns' flags, permuted
            self.deep_arch = deep
        else:
            first_flags, layers = columns, list(model.cross_arch.layers)
            self.deep_arch = model.deep_arch
            index_buffer(self, "order", sorted(range(len(perm)), key=perm.__getitem__))
        first, *rest = layers
        self.cross_first, self.cross_first_rest = split_first_layer(first, first_flags)
        self.cross_rest = nn.ModuleList(rest)
        self.over_arch = model.over_arch

    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        x0 = torch.cat([self.dense.request(dense), *self.request_fields(categorical, multi_hot)], 1)
        return torch.cat([x0, self.cross_first.request(x0)], dim=1)

    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        x0_r, first_r = gathered(part, owner, [self.request_width, self.cross_first.out_width])
        x0_c = torch.cat(
            [self.dense.candidate(dense), *self.candidate_fields(categorical, multi_hot)], dim=1
        )
        x0 = torch.cat([x0_r, x0_c], dim=1)  # request columns first: the permuted layers' order
        if not self.permuted:
            x0 = x0.index_select(1, self.order)  # the schema's column order
        x = x0 * self.cross_first_rest(self.cross_first.candidate(first_r, x0_c)) + x0
        for layer in self.cross_rest:
            x = x0 * layer(x) + x
        return self.over_arch(self.deep_arch(x)).squeeze(1)  # type: ignore[no-any-return]


class SplitDLRM(SplitModel):
    """DLRM: request-side lookups, the request vectors' dot products and the top MLP's first
    layer over them once per request.

    The bottom MLP's output is a request vector when every dense feature it reads is
    request-side (then the whole bottom MLP runs once); otherwise its first layer is split and
    the rest runs per row. Per row: the candidate vectors' dots with each other and with the
    request vectors. Part: [request vectors (F_r·D), bottom layer 1's request part (when
    split), top layer 1's request part (H)].
    """

    request_pairs: torch.Tensor
    candidate_pairs: torch.Tensor

    def __init__(self, model: DLRM, schema: FeatureSchema) -> None:
        super().__init__()
        self.dense = DenseSides(schema, model.dense_columns.names)
        self.dense_is_request = all(self.dense.flags)
        if self.dense_is_request:
            self.bottom_arch: nn.Module = model.dense_arch
        else:
            self.bottom_first, self.bottom_rest = split_first_layer(
                model.dense_arch, self.dense.flags
            )
        sparse_flags, self.request_fields, self.candidate_fields = side_embeddings(
            model.sparse_arch, schema
        )
        # Vector 0 is the bottom MLP's output, then the sparse fields (DLRM's order).
        vector_flags = (self.dense_is_request, *sparse_flags)
        request_vectors = positions(vector_flags, True)
        candidate_vectors = positions(vector_flags, False)
        n_r, n_c = len(request_vectors), len(candidate_vectors)
        if not n_r or not n_c:
            side = "request" if not n_r else "candidate"
            raise ValueError(f"DLRM reads no {side}-side vector (sparse field or dense output)")
        self.num_request_vectors = n_r
        self.dim = int(model.sparse_arch.out_dims[0])  # every vector's width (the dot pairs them)
        # Pairs in DotInteraction's order (i < j). A pair of two request vectors is a request
        # column of the top MLP, from the request's own Gram matrix; any other is a candidate
        # column, from each row's Gram matrix over [request vectors, candidate vectors] (one
        # batched matmul, as the unsplit model's: two smaller ones cost ORT more per row).
        where_r = {v: k for k, v in enumerate(request_vectors)}
        where_row = {v: k for k, v in enumerate([*request_vectors, *candidate_vectors])}
        num, row_num = len(vector_flags), n_r + n_c
        pair_flags: list[bool] = []
        request_pairs: list[int] = []
        candidate_pairs: list[int] = []
        for i in range(num):
            for j in range(i + 1, num):
                both = i in where_r and j in where_r
                pair_flags.append(both)
                if both:
                    request_pairs.append(where_r[i] * n_r + where_r[j])
                else:
                    candidate_pairs.append(where_row[i] * row_num + where_row[j])
        index_buffer(self, "request_pairs", request_pairs)
        index_buffer(self, "candidate_pairs", candidate_pairs)
        # The top MLP reads [bottom output (D), pairs].
        top_flags = [self.dense_is_request] * self.dim + pair_flags
        self.top_first, self.top_rest = split_first_layer(model.over_arch, top_flags)

    def _bottom_request(self, dense_r: torch.Tensor) -> list[torch.Tensor]:
        return [self.bottom_arch(dense_r)] if self.dense_is_request else []

    def request(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        dense_r = self.dense.request(dense)
        vectors = [*self._bottom_request(dense_r), *self.request_fields(categorical, multi_hot)]
        stacked = torch.stack(vectors, dim=1)  # (R, F_r, D)
        batch, num, _ = stacked.shape
        gram = torch.bmm(stacked, stacked.transpose(1, 2)).reshape(batch, num * num)
        pairs = gram.index_select(1, self.request_pairs)
        bottom = vectors[:1] if self.dense_is_request else []
        parts = [stacked.flatten(1)]
        if not self.dense_is_request:
            parts.append(self.bottom_first.request(dense_r))
        top = self.top_first.request(side_by_side([*bottom, pairs], dense_r))
        return torch.cat([*parts, top], dim=1)

    def candidates(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        widths = [self.num_request_vectors * self.dim, self.top_first.out_width]
        if not self.dense_is_request:
            widths.insert(1, self.bottom_first.out_width)
        flat_vectors, *bottom_r, top_r = gathered(part, owner, widths)
        request_vectors = flat_vectors.reshape(-1, self.num_request_vectors, self.dim)
        vectors = self.candidate_fields(categorical, multi_hot)
        if not self.dense_is_request:
            first = self.bottom_first.candidate(bottom_r[0], self.dense.candidate(dense))
            vectors = [self.bottom_rest(first), *vectors]
        stacked = torch.cat([request_vectors, torch.stack(vectors, dim=1)], dim=1)  # (N, F, D)
        gram = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1)  # (N, F·F)
        pairs = gram.index_select(1, self.candidate_pairs)
        bottom_c = [] if self.dense_is_request else vectors[:1]
        top = self.top_first.candidate(top_r, side_by_side([*bottom_c, pairs], dense))
        return self.top_rest(top).squeeze(1)  # type: ignore[no-any-return]
