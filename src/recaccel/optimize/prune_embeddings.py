"""Structured pruning of embeddings: whole feature fields and whole embedding dimensions.

Like MLP pruning (prune.py) this produces a smaller dense model, not masks: a dropped field
loses its tables and the downstream input columns it fed, a pruned dimension leaves every table
that shares the width (embedding_slicing.py does the exact slicing and says what goes where).
This module decides what to cut and fine-tunes the result into a child artifact.

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

The passes (`prune_fields`, `prune_embedding_dims`) rank by these criteria, slice with
`drop_fields_state` / `prune_dims_state` (embedding_slicing.py), then fine-tune from the sliced
weights, as `prune` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recaccel.artifact import Artifact, LineageStep
from recaccel.data.dataset import Dataset, Split
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.layers import DotInteraction, FactorizationMachine, SparseArch
from recaccel.optimize.embedding_slicing import (
    drop_fields_state,
    prune_dims_state,
    typed_submodule,
)
from recaccel.optimize.prune import CALIBRATION_ROWS, fine_tune_pruned
from recaccel.train.baselines import BaselineResult
from recaccel.train.metrics import auc_per_row
from recaccel.train.pipeline import TrainedModel
from recaccel.train.trainer import TrainConfig

# Under the accuracy guard's budget (0.1% relative: 0.0008 at AUC ≈ 0.8), leaving part of it
# to the recipe's other steps; fine-tuning usually wins some of it back.
DEFAULT_FIELD_TOLERANCE = 0.0005
# Kept widths are rounded up to this: 16-byte fp32 rows, and even widths for INT4 packing.
DIM_MULTIPLE = 4
FIELD_CRITERION = "mean-ablation AUC loss on train[:calibration_rows]"
DIM_CRITERION = "energy E[v_k^2] on train[:calibration_rows]"


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
    arch = typed_submodule(model, "sparse_arch", SparseArch)
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


# ---- passes: slice, check, fine-tune, save a child artifact ----


def _float_model(artifact: Artifact) -> nn.Module:
    if artifact.manifest.transforms:
        raise ConfigError(
            f"artifact {artifact.manifest.artifact_id} is transformed "
            f"({[t.get('op') for t in artifact.manifest.transforms]}): its tables are not float",
            "prune embeddings before quantizing them",
        )
    return artifact.model.eval()


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
    already = set(artifact.zoo_config("field pruning").dropped_fields)
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
    zoo = artifact.zoo_config("field pruning")
    pruned = drop_fields_state(model, artifact.manifest.model, schema, zoo, chosen)
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
    return fine_tune_pruned(artifact, dataset, pruned, step, out, config, progress, baselines)


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
    zoo = artifact.zoo_config("embedding-dim pruning")
    pruned = prune_dims_state(model, name, dataset.schema, zoo, kept)
    step = LineageStep(
        "prune_embedding_dims",
        {
            "keep_fraction": keep_fraction,
            "kept_dims": kept,
            "criterion": DIM_CRITERION,
            "calibration_rows": len(calibration),
        },
    )
    return fine_tune_pruned(artifact, dataset, pruned, step, out, config, progress, baselines)
