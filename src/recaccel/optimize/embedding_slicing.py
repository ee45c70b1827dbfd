"""Exact slicing of embeddings: a model in, the smaller config and the weights that fit it out.

A dropped field loses its tables (embedding and first-order weight) and the downstream input
columns it fed (DLRM: its interaction pairs and their top-MLP columns; DCNv2: its slice of every
cross layer and of the first deep layer; DeepFM / Wide & Deep: its slice of the first deep
layer). A pruned dimension k leaves every table that shares the width — for DLRM and DeepFM,
whose dot / FM interactions pair all vectors, that is every table, DeepFM's dense-field vectors
and DLRM's bottom-MLP output; for DCNv2 and Wide & Deep each table keeps its own dims. The new
config records the change (`dropped_fields`, `embedding_dim`, `embedding_dims`), so it builds,
saves and loads like any zoo model, and still takes the full schema's input tensors.

`drop_fields_state` and `prune_dims_state` are pure and exact: the sliced model computes what
the original computes with the removed fields or dims zeroed. Choosing what to cut, and
fine-tuning afterwards, is prune_embeddings.py's job.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.dcn import DCNv2
from recaccel.models.dlrm import DLRMConfig
from recaccel.models.layers import (
    MLP,
    DenseColumns,
    LinearTerm,
    SparseArch,
    check_dropped,
)
from recaccel.models.registry import ModelConfig, model_spec
from recaccel.models.tower import TowerRanker

T = TypeVar("T", bound=nn.Module)


def typed_submodule(model: nn.Module, path: str, kind: type[T]) -> T:
    """`model`'s submodule at `path`, checked to be a `kind`."""
    module = model.get_submodule(path)
    if not isinstance(module, kind):
        raise ConfigError(f"{path} is a {type(module).__name__}, not a {kind.__name__}")
    return module


@dataclass(frozen=True)
class _Cut:
    """What leaves a model: the fields in `drop`; of each remaining embedded field, the output
    dims not in `dims[field]`; of the shared width (models that pair vectors), those not in
    `shared`. Unchanged parts list every index."""

    drop: frozenset[str]
    dims: Mapping[str, Sequence[int]]
    shared: Sequence[int]


def _take(state: dict[str, torch.Tensor], key: str, dim: int, index: Sequence[int]) -> None:
    state[key] = state[key].index_select(dim, torch.tensor(list(index), dtype=torch.long))


def _linears(model: nn.Module, path: str) -> list[str]:
    mlp = typed_submodule(model, path, MLP)
    return [
        f"{path}.layers.{n}" for n, m in mlp.layers.named_children() if isinstance(m, nn.Linear)
    ]


def _kept_dense(model: nn.Module, cut: _Cut) -> list[int]:
    names = typed_submodule(model, "dense_columns", DenseColumns).names
    return [i for i, n in enumerate(names) if n not in cut.drop]


def _table_keys(prefix: str, fields: Sequence[str], num_categorical: int) -> dict[str, str]:
    return {
        f: f"{prefix}.categorical.{i}"
        if i < num_categorical
        else f"{prefix}.multi_hot.{i - num_categorical}"
        for i, f in enumerate(fields)
    }


def _cut_tables(
    state: dict[str, torch.Tensor],
    prefix: str,
    arch: SparseArch,
    drop: frozenset[str],
    dims: Mapping[str, Sequence[int]] | None,
) -> dict[str, int]:
    """Remove dropped fields' tables, keep output dims `dims[f]` of the others (all where
    None) and renumber the rest. Returns each remaining field's new table width."""
    n_cat = len(arch.categorical)
    kept = [f for f in arch.fields if f not in drop]
    old_keys = _table_keys(prefix, arch.fields, n_cat)
    new_keys = _table_keys(prefix, kept, sum(f not in drop for f in arch.fields[:n_cat]))
    tables = {f: state.pop(f"{old_keys[f]}.weight") for f in arch.fields}
    projection_keys = {f: f"{prefix}.projections.{i}.weight" for i, f in enumerate(arch.fields)}
    projections = {f: state.pop(k) for f, k in projection_keys.items() if k in state}
    widths = {}
    for i, field in enumerate(kept):
        table, index = tables[field], None if dims is None else list(dims[field])
        if field in projections:  # (D, d_f): its output rows are the shared dims
            projection = projections[field] if index is None else projections[field][index]
            if projection.shape[0] <= projection.shape[1]:
                # No longer narrower than the shared width: fold it into the table (linear, so
                # a bag's sum of projected rows is the projection of the sum).
                table = table @ projection.T
            else:
                state[f"{prefix}.projections.{i}.weight"] = projection
        elif index is not None:
            table = table[:, index]
        state[f"{new_keys[field]}.weight"] = table.contiguous()
        widths[field] = int(table.shape[1])
    return widths


def _concat_columns(
    segments: Sequence[tuple[str, int]], keep: Mapping[str, Sequence[int]]
) -> list[int]:
    """Columns kept of a concatenation of (name, width) segments; a name not in `keep` leaves."""
    columns: list[int] = []
    start = 0
    for name, width in segments:
        columns += [start + k for k in keep.get(name, ())]
        start += width
    return columns


def _cut_dlrm(model: nn.Module, state: dict[str, torch.Tensor], cut: _Cut) -> None:
    """DLRM: bottom MLP (dense columns in, shared dims out) and the top MLP's input, which is
    the bottom output's D dims, then one column per pair of vectors."""
    arch = typed_submodule(model, "sparse_arch", SparseArch)
    bottom = _linears(model, "dense_arch")
    width = state[f"{bottom[-1]}.weight"].shape[0]  # D before the cut
    _take(state, f"{bottom[0]}.weight", 1, _kept_dense(model, cut))
    _take(state, f"{bottom[-1]}.weight", 0, cut.shared)
    _take(state, f"{bottom[-1]}.bias", 0, cut.shared)
    old_vectors = ["", *arch.fields]  # "" = the bottom MLP's output (no field has that name)
    old_pairs = {pair: i for i, pair in enumerate(itertools.combinations(old_vectors, 2))}
    new_vectors = [v for v in old_vectors if v not in cut.drop]
    pairs = [width + old_pairs[pair] for pair in itertools.combinations(new_vectors, 2)]
    _take(state, f"{_linears(model, 'over_arch')[0]}.weight", 1, [*cut.shared, *pairs])


def _cut_concat(model: nn.Module, state: dict[str, torch.Tensor], cut: _Cut) -> None:
    """DCNv2 and Wide & Deep: x0 = [kept dense columns, each field's vector]."""
    dense = typed_submodule(model, "dense_columns", DenseColumns)
    arch = typed_submodule(model, "sparse_arch", SparseArch)
    segments = [(n, 1) for n in dense.names] + list(zip(arch.fields, arch.dims, strict=True))
    keep = {n: [0] for n in dense.names} | dict(cut.dims)
    keep = {n: k for n, k in keep.items() if n not in cut.drop}
    columns = _concat_columns(segments, keep)
    if isinstance(model, DCNv2):  # x_{l+1} = x0 ⊙ (W x_l + b) + x_l: rows and columns of W
        for i, layer in enumerate(model.cross_arch.layers):
            p = f"cross_arch.layers.{i}"
            if isinstance(layer, nn.Linear):
                _take(state, f"{p}.weight", 0, columns)
                _take(state, f"{p}.weight", 1, columns)
                _take(state, f"{p}.bias", 0, columns)
            else:  # low rank: U (r, W) reads x_l, V (W, r) writes the output
                _take(state, f"{p}.0.weight", 1, columns)
                _take(state, f"{p}.1.weight", 0, columns)
                _take(state, f"{p}.1.bias", 0, columns)
    _take(state, f"{_linears(model, 'deep_arch')[0]}.weight", 1, columns)


def _cut_deepfm(model: nn.Module, state: dict[str, torch.Tensor], cut: _Cut) -> None:
    """DeepFM: the deep MLP reads (dense fields, embedded fields) × D, flattened."""
    names = (
        *typed_submodule(model, "dense_columns", DenseColumns).names,
        *typed_submodule(model, "sparse_arch", SparseArch).fields,
    )
    width = state["dense_fields.vectors"].shape[1]
    keep = {n: cut.shared for n in names if n not in cut.drop}
    columns = _concat_columns([(n, width) for n in names], keep)
    _take(state, f"{_linears(model, 'deep_arch')[0]}.weight", 1, columns)
    _take(state, "dense_fields.vectors", 0, _kept_dense(model, cut))
    _take(state, "dense_fields.vectors", 1, cut.shared)


def _cut_tower(model: nn.Module, state: dict[str, torch.Tensor], cut: _Cut) -> None:
    """The request tower reads [request dense columns, request fields' vectors]; the head
    [the tower's output, candidate dense columns, candidate fields' vectors]."""
    assert isinstance(model, TowerRanker)
    dense, arch = model.dense_columns, model.sparse_arch
    user = model.request_tower.out_features
    keep = {n: [0] for n in dense.names} | dict(cut.dims)
    keep = {n: k for n, k in keep.items() if n not in cut.drop}
    keep[""] = list(range(user))  # "": the tower's output, which the head reads whole

    def kept(
        lead: list[tuple[str, int]], columns: torch.Tensor, fields: tuple[int, ...]
    ) -> list[int]:
        segments = [*lead, *((dense.names[i], 1) for i in columns.tolist())]
        segments += [(arch.fields[i], arch.dims[i]) for i in fields]
        return _concat_columns(segments, keep)

    request = kept([], model.request_dense, model.request_fields)
    _take(state, f"{_linears(model, 'request_tower')[0]}.weight", 1, request)
    head = kept([("", user)], model.candidate_dense, model.candidate_fields)
    _take(state, f"{_linears(model, 'deep_arch')[0]}.weight", 1, head)
    # The cross's W maps the tower's output onto the candidate's columns: its rows are those.
    candidate = kept([], model.candidate_dense, model.candidate_fields)
    _take(state, "candidate_cross.weight", 0, candidate)
    _take(state, "candidate_cross.bias", 0, candidate)


_CONSUMERS: dict[str, Callable[[nn.Module, dict[str, torch.Tensor], _Cut], None]] = {
    "dlrm": _cut_dlrm,
    "dcnv2": _cut_concat,
    "deepfm": _cut_deepfm,
    "wide_deep": _cut_concat,
    "tower": _cut_tower,
}


def _cut_config(
    schema: FeatureSchema,
    config: ModelConfig,
    model_name: str,
    cut: _Cut,
    widths: Mapping[str, int],
) -> ModelConfig:
    """The config of the cut model: more `dropped_fields` and, if dims left, new widths."""
    dropped = {*config.dropped_fields, *cut.drop}
    changes: dict[str, Any] = {
        "dropped_fields": tuple(f.name for f in schema.features if f.name in dropped)
    }
    old = dict(
        zip(
            (f.name for f in schema.sparse),
            config.table_widths(schema, config.embedding_dim),
            strict=True,
        )
    )
    shared = model_spec(model_name).shared_embedding_dim
    if any(old[f] != w for f, w in widths.items()) or len(cut.shared) != config.embedding_dim:
        new = {**old, **widths}
        if shared:
            base = len(cut.shared)
            new = {f: min(w, base) for f, w in new.items()}  # dropped fields' entries too
        else:
            kept_widths = set(widths.values())
            base = kept_widths.pop() if len(kept_widths) == 1 else config.embedding_dim
        uniform = all(w == base for w in widths.values())
        changes |= {
            "embedding_dim": base,
            "mixed_dim_alpha": 0.0,  # the widths are now explicit (or uniform)
            "embedding_dims": () if uniform else tuple(new.values()),
        }
        if isinstance(config, DLRMConfig):  # the bottom MLP ends at the shared width
            changes["bottom_mlp"] = (*config.bottom_mlp[:-1], base)
    return dataclasses.replace(config, **changes)


def _cut_state(
    model: nn.Module, model_name: str, schema: FeatureSchema, config: ModelConfig, cut: _Cut
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    arch = typed_submodule(model, "sparse_arch", SparseArch)
    widths = _cut_tables(state, "sparse_arch", arch, cut.drop, cut.dims)
    for name, module in model.named_children():
        if isinstance(module, LinearTerm):  # first-order weights: fields leave, width 1 stays
            _cut_tables(state, f"{name}.sparse", module.sparse, cut.drop, None)
            _take(state, f"{name}.dense.weight", 1, _kept_dense(model, cut))
    _CONSUMERS[model_name](model, state, cut)
    return _cut_config(schema, config, model_name, cut, widths), state


def drop_fields_state(
    model: nn.Module,
    model_name: str,
    schema: FeatureSchema,
    config: ModelConfig,
    fields: Sequence[str],
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config without `fields` and the weights that fit it, sliced from `model`.

    Exact: the result computes what `model` computes with those fields' tables zeroed (a
    dense field: its input column zeroed).
    """
    already = sorted(set(fields) & set(config.dropped_fields))
    if already:
        raise ConfigError(f"fields {already} are already dropped from this model")
    check_dropped(schema, {*config.dropped_fields, *fields})
    arch = typed_submodule(model, "sparse_arch", SparseArch)
    width = config.embedding_dim
    cut = _Cut(
        drop=frozenset(fields),
        dims={f: range(w) for f, w in zip(arch.fields, arch.out_dims, strict=True)},
        shared=range(width),
    )
    return _cut_state(model, model_name, schema, config, cut)


def prune_dims_state(
    model: nn.Module,
    model_name: str,
    schema: FeatureSchema,
    config: ModelConfig,
    kept: Sequence[int] | Mapping[str, Sequence[int]],
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config with only the `kept` embedding dims and the weights that fit it.

    Args:
        kept: for models that pair vectors (DLRM, DeepFM), one sequence of dims of the shared
            width, kept in every table; for DCNv2 and Wide & Deep, either one sequence kept in
            every table or a mapping field → dims of that field's table (fields absent keep
            every dim).

    Exact: the result computes what `model` computes with the other dims zeroed in every
    table (and, for DLRM, in the bottom MLP's output).
    """
    arch = typed_submodule(model, "sparse_arch", SparseArch)
    widths = dict(zip(arch.fields, arch.out_dims, strict=True))
    shared = model_spec(model_name).shared_embedding_dim
    if shared and isinstance(kept, Mapping):
        raise ConfigError(
            f"{model_name} pairs its vectors, so every table shares one width",
            "pass one sequence of dims, kept in every table",
        )
    per_field = dict(kept) if isinstance(kept, Mapping) else {f: kept for f in widths}
    unknown = sorted(set(per_field) - set(widths))
    if unknown:
        raise ConfigError(
            f"no embedded fields {unknown} in this model", f"embedded: {', '.join(widths)}"
        )
    dims = {f: sorted(set(per_field.get(f, range(w)))) for f, w in widths.items()}
    for field, index in dims.items():
        if not index or index[0] < 0 or index[-1] >= widths[field]:
            raise ConfigError(
                f"dims kept of {field!r} must be a non-empty subset of 0..{widths[field] - 1}",
                f"got {list(per_field.get(field, []))}",
            )
    # Models that pair vectors: every field's dims are the shared ones (checked above).
    shared_dims = next(iter(dims.values())) if shared else range(config.embedding_dim)
    return _cut_state(model, model_name, schema, config, _Cut(frozenset(), dims, shared_dims))
