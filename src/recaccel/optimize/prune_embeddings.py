"""Structured pruning of embeddings: whole feature fields and whole embedding dimensions.

Like MLP pruning (prune.py) this produces a smaller dense model, not masks: a dropped field
loses its tables (embedding and first-order weight) and the downstream input columns it fed
(DLRM: its interaction pairs and their top-MLP columns; DCNv2: its slice of every cross layer
and of the first deep layer; DeepFM / Wide & Deep: its slice of the first deep layer). A pruned
dimension k leaves every table that shares the width — for DLRM and DeepFM, whose dot / FM
interactions pair all vectors, that is every table, DeepFM's dense-field vectors and DLRM's
bottom-MLP output; for DCNv2 and Wide & Deep each table keeps its own dims. The child's config
records the change (`dropped_fields`, `embedding_dim`, `embedding_dims`), so it builds, saves
and loads like any zoo model, and still takes the full schema's input tensors.

Importance criteria, both measured on a calibration slice of the TRAINING split: validation and
test belong to the accuracy guard that judges the result, and choosing what to cut by them
would leak the guard's data into the decision.

- Fields: mean ablation. The AUC lost when the field's vectors (every table of it, first-order
  weight included) are replaced by their mean over the slice, or a dense column by its mean.
  The mean, not zero: a trained embedding's mean is far from zero, so zeroing measures a shift
  that fine-tuning's biases absorb anyway, while the mean keeps the average contribution and
  removes only the information the field carries per row. A field is a candidate only if its
  own ablation costs at most `tolerance`; candidates join cheapest first, and only while the
  ablation of all chosen fields together still costs at most `tolerance`, since two fields can
  carry the same signal (each alone looks free, both together are not). On training rows,
  memorised id fields look more useful than they are: the error is toward keeping a field.
- Dimensions: energy E[v_k²] of the vectors the interaction / concatenation receives. Removing
  dim k changes a dot product ⟨u, v⟩ by u_k v_k, bounded by √(E u_k²)·√(E v_k²)
  (Cauchy–Schwarz), and a concatenated column enters the next layer in proportion to its size;
  with N(0, 0.01²) initialisation, dims training never grew keep near-zero energy. One forward
  pass ranks every dim, where ablation would need one AUC per dim — each too small to tell
  from the slice's noise.

The pure slicing functions (`drop_fields_state`, `prune_dims_state`) map a model to the
smaller config and its weights; the fine-tuning passes (`prune_fields`, `prune_embedding_dims`)
then train from those weights, as `prune` does.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from recaccel.artifact import Artifact, LineageStep
from recaccel.data.dataset import Dataset, Split
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.dcn import DCNv2
from recaccel.models.dlrm import DLRMConfig
from recaccel.models.layers import (
    MLP,
    DenseColumns,
    DotInteraction,
    FactorizationMachine,
    LinearTerm,
    SparseArch,
    check_dropped,
)
from recaccel.models.registry import ModelConfig, build_model, model_spec
from recaccel.optimize.prune import CALIBRATION_ROWS
from recaccel.train.baselines import BaselineResult
from recaccel.train.metrics import auc_per_row
from recaccel.train.pipeline import (
    TrainedModel,
    TrainJob,
    fit_baselines,
    model_reference,
    train_one,
)
from recaccel.train.trainer import TrainConfig

# Under the accuracy guard's budget (0.1% relative: 0.0008 at AUC ≈ 0.8), leaving part of it
# to the recipe's other steps; fine-tuning usually wins some of it back.
DEFAULT_FIELD_TOLERANCE = 0.0005
# Kept widths are rounded up to this: 16-byte fp32 rows, and even widths for INT4 packing.
DIM_MULTIPLE = 4
FIELD_CRITERION = "mean-ablation AUC loss on train[:calibration_rows]"
DIM_CRITERION = "energy E[v_k^2] on train[:calibration_rows]"

T = TypeVar("T", bound=nn.Module)


# ---- decisions (pure) ----


def kept_dim_count(width: int, keep_fraction: float) -> int:
    """Dims kept of a `width`-wide vector: the fraction, rounded up to a multiple of 4.

    >>> kept_dim_count(64, 0.5), kept_dim_count(10, 0.5), kept_dim_count(3, 0.5)
    (32, 8, 3)
    """
    kept = DIM_MULTIPLE * math.ceil(width * keep_fraction / DIM_MULTIPLE)
    return min(width, max(kept, 1))


def top_dims(energy: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` highest-energy dims of `energy` (D,), in ascending order."""
    return sorted(int(i) for i in energy.topk(count).indices)


def choose_fields(
    costs: Mapping[str, float],
    tolerance: float,
    joint_cost: Callable[[tuple[str, ...]], float],
    max_fields: int | None = None,
    viable: Callable[[tuple[str, ...]], bool] = lambda _: True,
) -> tuple[str, ...]:
    """Fields to drop: cheapest first, each alone and all together costing ≤ `tolerance`.

    Args:
        costs: AUC lost by ablating each candidate field alone.
        tolerance: the most AUC the chosen set may lose together.
        joint_cost: AUC lost by ablating several fields at once.
        max_fields: stop after this many; None = no limit.
        viable: whether a set of dropped fields still makes a model.

    >>> costs = {"a": 0.0, "b": 0.0003, "c": 0.002}
    >>> choose_fields(costs, 0.0005, joint_cost=lambda fs: 0.0003 * len(fs))
    ('a',)
    """
    chosen: tuple[str, ...] = ()
    for field in sorted((f for f in costs if costs[f] <= tolerance), key=lambda f: costs[f]):
        if max_fields is not None and len(chosen) >= max_fields:
            break
        trial = (*chosen, field)
        if viable(trial) and (len(trial) == 1 or joint_cost(trial) <= tolerance):
            chosen = trial
    return chosen


# ---- measurements on the calibration slice ----


def _part(model: nn.Module, path: str, kind: type[T]) -> T:
    module = model.get_submodule(path)
    if not isinstance(module, kind):
        raise ConfigError(f"{path} is a {type(module).__name__}, not a {kind.__name__}")
    return module


def _field_tables(model: nn.Module, field: str) -> list[nn.Module]:
    """Every table that embeds `field`: the model's embedding, its first-order weight."""
    archs = [m for m in model.modules() if isinstance(m, SparseArch)]
    return [a.tables()[a.fields.index(field)] for a in archs if field in a.fields]


def _replace_by_mean(_module: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
    return out.mean(dim=0, keepdim=True).expand_as(out)  # the whole slice is one batch


@contextmanager
def _ablated(model: nn.Module, fields: Sequence[str]) -> Iterator[None]:
    hooks = [
        table.register_forward_hook(_replace_by_mean)
        for field in fields
        for table in _field_tables(model, field)
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def ablated_auc(
    model: nn.Module, schema: FeatureSchema, split: Split, fields: Sequence[str] = ()
) -> float:
    """AUC on `split` with each of `fields` replaced by its mean over the split's rows."""
    model.eval()
    dense, categorical, multi_hot = split.features().as_tuple()
    dense = dense.clone()
    for j, feature in enumerate(schema.dense):
        if feature.name in fields:
            dense[:, j] = dense[:, j].mean()
    with _ablated(model, fields):
        logits = model(dense, categorical, multi_hot).numpy()
    labels = (split.label >= 0.5).astype(np.float64)  # soft (distilled) targets → 0/1
    return float(auc_per_row(labels[None], logits[None])[0])


def field_ablation_costs(
    model: nn.Module, schema: FeatureSchema, split: Split, fields: Sequence[str]
) -> dict[str, float]:
    """AUC lost on `split` when each field alone is mean-ablated (negative: it helped)."""
    base = ablated_auc(model, schema, split)
    return {f: base - ablated_auc(model, schema, split, (f,)) for f in fields}


@torch.no_grad()
def dim_energy(model: nn.Module, split: Split) -> torch.Tensor | dict[str, torch.Tensor]:
    """E[v_k²] over `split`'s rows.

    Returns:
        for models that pair vectors (a dot or FM interaction): one (D,) tensor over every
        paired vector; otherwise (B, d_f) vectors are concatenated and each embedded field
        gets its own (d_f,) tensor.
    """
    captured: list[Any] = []
    pairing = [m for m in model.modules() if isinstance(m, DotInteraction | FactorizationMachine)]
    arch = _part(model, "sparse_arch", SparseArch)
    if pairing:
        hook = pairing[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    else:
        hook = arch.register_forward_hook(lambda _m, _args, out: captured.append(out))
    try:
        model.eval()
        model(*split.features().as_tuple())
    finally:
        hook.remove()
    if pairing:
        return captured[0].pow(2).mean(dim=(0, 1))  # type: ignore[no-any-return]  # (B, F, D)
    return {f: v.pow(2).mean(dim=0) for f, v in zip(arch.fields, captured[0], strict=True)}


# ---- slicing (pure: a model in, the smaller config and its weights out) ----


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
    mlp = _part(model, path, MLP)
    return [
        f"{path}.layers.{n}" for n, m in mlp.layers.named_children() if isinstance(m, nn.Linear)
    ]


def _kept_dense(model: nn.Module, cut: _Cut) -> list[int]:
    names = _part(model, "dense_columns", DenseColumns).names
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
    arch = _part(model, "sparse_arch", SparseArch)
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
    dense = _part(model, "dense_columns", DenseColumns)
    arch = _part(model, "sparse_arch", SparseArch)
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
        *_part(model, "dense_columns", DenseColumns).names,
        *_part(model, "sparse_arch", SparseArch).fields,
    )
    width = state["dense_fields.vectors"].shape[1]
    keep = {n: cut.shared for n in names if n not in cut.drop}
    columns = _concat_columns([(n, width) for n in names], keep)
    _take(state, f"{_linears(model, 'deep_arch')[0]}.weight", 1, columns)
    _take(state, "dense_fields.vectors", 0, _kept_dense(model, cut))
    _take(state, "dense_fields.vectors", 1, cut.shared)


_CONSUMERS: dict[str, Callable[[nn.Module, dict[str, torch.Tensor], _Cut], None]] = {
    "dlrm": _cut_dlrm,
    "dcnv2": _cut_concat,
    "deepfm": _cut_deepfm,
    "wide_deep": _cut_concat,
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
    arch = _part(model, "sparse_arch", SparseArch)
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
    arch = _part(model, "sparse_arch", SparseArch)
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
    arch = _part(model, "sparse_arch", SparseArch)
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


# ---- passes: slice, check, fine-tune, save a child artifact ----


def _float_model(artifact: Artifact) -> nn.Module:
    if artifact.manifest.transforms:
        raise ConfigError(
            f"artifact {artifact.manifest.artifact_id} is transformed "
            f"({[t.get('op') for t in artifact.manifest.transforms]}): its tables are not float",
            "prune embeddings before quantizing them",
        )
    return artifact.model.eval()


def _fine_tune(
    artifact: Artifact,
    dataset: Dataset,
    pruned: tuple[ModelConfig, dict[str, torch.Tensor]],
    step: LineageStep,
    out: Path,
    config: TrainConfig,
    progress: bool,
    baselines: list[BaselineResult] | None,
) -> TrainedModel:
    name = artifact.manifest.model
    pruned_config, state = pruned
    check = build_model(name, dataset.schema, pruned_config)
    check.load_state_dict(state)  # fails here, not mid-training, if the slicing were wrong
    job = TrainJob(
        model=name,
        config=pruned_config,
        preset=None,
        out=out,
        step=step,
        parent=artifact.manifest,
        initial_state=state,
    )
    if baselines is None:  # a recipe fits them once and passes them to every step
        baselines = fit_baselines(dataset)
    references = [model_reference("parent", artifact, dataset), *baselines]
    return train_one(dataset, job, config, references, progress)


def prune_fields(
    artifact: Artifact,
    dataset: Dataset,
    out: Path,
    config: TrainConfig,
    tolerance: float = DEFAULT_FIELD_TOLERANCE,
    max_fields: int | None = None,
    progress: bool = True,
    baselines: list[BaselineResult] | None = None,
) -> TrainedModel:
    """Drop every field whose mean ablation costs ≤ `tolerance` AUC on training rows (see the
    module docstring), fine-tune, and save a child artifact.

    Raises:
        ConfigError: no field is cheap enough to drop (the message names the cheapest).
    """
    model, schema = _float_model(artifact), dataset.schema
    calibration = dataset.train.head(CALIBRATION_ROWS)
    already = set(artifact.config.dropped_fields)
    candidates = [f.name for f in schema.features if f.name not in already]
    costs = field_ablation_costs(model, schema, calibration, candidates)
    base = ablated_auc(model, schema, calibration)

    def viable(fields: tuple[str, ...]) -> bool:
        """Keep a field of each kind the schema has: a model needs some input of each."""
        gone = already | set(fields)
        kinds = (schema.dense, schema.sparse)
        return all(any(f.name not in gone for f in kind) for kind in kinds if kind)

    chosen = choose_fields(
        costs,
        tolerance,
        joint_cost=lambda fs: base - ablated_auc(model, schema, calibration, fs),
        max_fields=max_fields,
        viable=viable,
    )
    if not chosen:
        cheapest = min(costs, key=costs.__getitem__)
        raise ConfigError(
            f"no field costs <= {tolerance} AUC to drop; the cheapest, {cheapest!r}, "
            f"costs {costs[cheapest]:.5f}",
            "raise the tolerance, or keep every field",
        )
    pruned = drop_fields_state(model, artifact.manifest.model, schema, artifact.config, chosen)
    step = LineageStep(
        "prune_fields",
        {
            "fields": list(chosen),
            "tolerance": tolerance,
            "criterion": FIELD_CRITERION,
            "calibration_rows": len(calibration),
            "auc_cost": {f: round(c, 6) for f, c in costs.items()},
        },
    )
    return _fine_tune(artifact, dataset, pruned, step, out, config, progress, baselines)


def prune_embedding_dims(
    artifact: Artifact,
    dataset: Dataset,
    keep_fraction: float,
    out: Path,
    config: TrainConfig,
    progress: bool = True,
    baselines: list[BaselineResult] | None = None,
) -> TrainedModel:
    """Keep the highest-energy `keep_fraction` of embedding dims (of the shared width, or of
    each table), fine-tune, and save a child artifact."""
    if not 0 < keep_fraction <= 1:
        raise ConfigError(f"keep fraction {keep_fraction} is not in (0, 1]", "use e.g. 0.5")
    model, name = _float_model(artifact), artifact.manifest.model
    calibration = dataset.train.head(CALIBRATION_ROWS)
    energy = dim_energy(model, calibration)
    kept: list[int] | dict[str, list[int]]
    if isinstance(energy, torch.Tensor):
        kept = top_dims(energy, kept_dim_count(len(energy), keep_fraction))
    else:
        kept = {f: top_dims(e, kept_dim_count(len(e), keep_fraction)) for f, e in energy.items()}
    pruned = prune_dims_state(model, name, dataset.schema, artifact.config, kept)
    step = LineageStep(
        "prune_embedding_dims",
        {
            "keep_fraction": keep_fraction,
            "kept_dims": kept,
            "criterion": DIM_CRITERION,
            "calibration_rows": len(calibration),
        },
    )
    return _fine_tune(artifact, dataset, pruned, step, out, config, progress, baselines)
