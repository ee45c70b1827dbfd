"""Structured pruning of MLP neurons: a smaller dense model, not masks over zeros.

A hidden neuron j of an MLP layer is removed with row j of that layer's weight and bias and
column j of the next layer's weight, so the pruned model is simply the same architecture with
narrower layers: its config lists the new widths, and it builds, saves and loads like any zoo
model.

Importance criterion: mean |activation| of the neuron on training rows × L2 norm of its
outgoing weights. Weights alone miss neurons the data never switches on (dead ReLUs look as
important as live ones); activations alone miss how little the next layer may listen to a
loud neuron. Their product estimates the neuron's contribution to the next layer's input.

Only hidden layers are pruned: each MLP's last layer feeds something fixed (DLRM's bottom MLP
must end at the embedding width; every other MLP ends in the logit's input).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from recaccel.artifact import Artifact, LineageStep
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP
from recaccel.models.registry import (
    ModelConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    model_spec,
)
from recaccel.train.baselines import BaselineResult
from recaccel.train.pipeline import (
    TrainedModel,
    TrainJob,
    fit_baselines,
    model_reference,
    train_one,
)
from recaccel.train.trainer import TrainConfig

# Widths are rounded up to a multiple of this: SIMD and GEMM kernels work in blocks of 8+.
WIDTH_MULTIPLE = 8
CALIBRATION_ROWS = 4096


def kept_width(width: int, keep_fraction: float) -> int:
    """Neurons kept in a layer of `width`: the fraction, rounded up to a multiple of 8.

    >>> kept_width(1024, 0.5), kept_width(100, 0.3), kept_width(6, 0.5)
    (512, 32, 6)
    """
    kept = WIDTH_MULTIPLE * math.ceil(width * keep_fraction / WIDTH_MULTIPLE)
    return min(width, max(kept, 1))


def _mlp(model: nn.Module, path: str) -> MLP:
    module = model.get_submodule(path)
    if not isinstance(module, MLP):
        raise ConfigError(f"{path} is a {type(module).__name__}, not an MLP: cannot prune it")
    return module


def _linears(mlp: MLP) -> list[nn.Linear]:
    return [m for m in mlp.layers if isinstance(m, nn.Linear)]


@torch.no_grad()
def neuron_importance(mlp: MLP, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Importance (width,) of each hidden layer's neurons, from the MLP's inputs (N, in)."""
    linears = _linears(mlp)
    scores, x = [], inputs
    for layer, following in itertools.pairwise(linears):
        x = torch.relu(layer(x))  # (N, width): the activations the next layer sees
        # A neuron the calibration rows never switch on scores 0 like one the next layer
        # ignores, yet other rows may switch it on; a small floor under the activation ranks
        # it above the ignored ones (seen on the request tower, whose calibration rows hold
        # few distinct users), and changes no ranking among neurons that do fire.
        floor = 1e-6 * float(x.abs().mean()) + 1e-12
        scores.append((x.abs().mean(dim=0) + floor) * following.weight.norm(dim=0))
    return scores


def _mlp_inputs(
    model: nn.Module, mlps: Mapping[str, MLP], dataset: Dataset
) -> dict[str, torch.Tensor]:
    """Capture each MLP's input on a calibration slice of the training split."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        mlp.register_forward_pre_hook(lambda _m, args, n=name: captured.__setitem__(n, args[0]))
        for name, mlp in mlps.items()
    ]
    try:
        with torch.no_grad():
            model.eval()
            model(*dataset.train.features(slice(0, CALIBRATION_ROWS)).as_tuple())
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def prune_state(
    model: nn.Module, model_name: str, config: ModelConfig, dataset: Dataset, keep_fraction: float
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The narrower config and the weights that fit it, sliced from `model`."""
    if not 0 < keep_fraction <= 1:
        raise ConfigError(f"keep fraction {keep_fraction} is not in (0, 1]", "use e.g. 0.5")
    fields = model_spec(model_name).mlp_fields
    mlps = {field: _mlp(model, path) for field, path in fields.items()}
    inputs = _mlp_inputs(model, mlps, dataset)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    new_sizes: dict[str, tuple[int, ...]] = {}
    for field, mlp in mlps.items():
        importance = neuron_importance(mlp, inputs[field])
        keep = [s.topk(kept_width(len(s), keep_fraction)).indices.sort().values for s in importance]
        prefix = f"{fields[field]}.layers."
        names = [n for n, m in mlp.layers.named_children() if isinstance(m, nn.Linear)]
        for i, name in enumerate(names):
            weight, bias = f"{prefix}{name}.weight", f"{prefix}{name}.bias"
            if i < len(keep):  # this layer loses rows
                state[weight], state[bias] = state[weight][keep[i]], state[bias][keep[i]]
            if i > 0:  # and the next one the matching input columns
                state[weight] = state[weight][:, keep[i - 1]]
        sizes = getattr(config, field)
        new_sizes[field] = (*(len(k) for k in keep), sizes[-1])
    return config_from_dict(model_name, {**config_to_dict(config), **new_sizes}), state


def prune(
    artifact: Artifact,
    dataset: Dataset,
    keep_fraction: float,
    out: Path,
    config: TrainConfig,
    progress: bool = True,
    baselines: list[BaselineResult] | None = None,
) -> TrainedModel:
    """Prune every hidden MLP layer of `artifact` to `keep_fraction`, fine-tune, save a child."""
    name = artifact.manifest.model
    config_before = artifact.zoo_config("pruning")
    pruned_config, state = prune_state(artifact.model, name, config_before, dataset, keep_fraction)
    if pruned_config == config_before:  # fine-tuning alone would pass for pruning
        raise ConfigError(
            f"nothing to prune in {name} at keep fraction {keep_fraction}: its MLPs have no "
            "hidden layer wider than what would be kept",
            "prune embedding dims or fields instead, or keep a smaller fraction",
        )
    step = LineageStep("prune", {"keep_fraction": keep_fraction, "criterion": "act*outnorm"})
    return fine_tune_pruned(
        artifact, dataset, (pruned_config, state), step, out, config, progress, baselines
    )


def fine_tune_pruned(
    artifact: Artifact,
    dataset: Dataset,
    pruned: tuple[ModelConfig, dict[str, torch.Tensor]],
    step: LineageStep,
    out: Path,
    config: TrainConfig,
    progress: bool,
    baselines: list[BaselineResult] | None,
) -> TrainedModel:
    """Fine-tune a pruned (config, sliced weights) of `artifact` and save it as its child, with
    test ΔAUC against the parent and the baselines (fitted here when not given)."""
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
