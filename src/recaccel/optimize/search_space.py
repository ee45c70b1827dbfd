"""The architecture search space for distilled students, and how a trial's choices become one.

A student is a zoo model (its family is the "interaction type": DLRM's dot products, DeepFM's
factorization machine, DCNv2's cross network, Wide & Deep's linear part, the tower's request
side kept apart) with a chosen embedding width and MLP shape. Optuna needs each parameter name
to keep one fixed set of choices, so an MLP is sampled as a depth plus one width per layer,
each from the full width set, and the widths are then sorted widest first: every
non-increasing MLP is reachable, and the config never depends on which order the sampler named
the widths in.

`student_from_params` is the pure half (params -> model name and config) that also rebuilds a
finished trial's student from its recorded params; `suggest_student` only asks the trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from recaccel.errors import ConfigError
from recaccel.models.dcn import DCNv2Config
from recaccel.models.deepfm import DeepFMConfig
from recaccel.models.dlrm import DLRMConfig
from recaccel.models.registry import ModelConfig, model_spec
from recaccel.models.tower import TowerConfig
from recaccel.models.wide_deep import WideDeepConfig


@dataclass(frozen=True)
class SearchSpace:
    # Every zoo family: which interaction suits the data is itself an open question.
    families: tuple[str, ...] = ("dlrm", "deepfm", "dcnv2", "wide_deep", "tower")
    # Serving-size embeddings: the heavy presets use 64–128, and their lookups and the MLP
    # input width they set are much of a student's latency.
    embedding_dims: tuple[int, ...] = (4, 8, 16, 32)
    # Layers with an activation in each MLP (min, max); DLRM's bottom MLP counts its last
    # layer, which is pinned to embedding_dim.
    mlp_depth: tuple[int, int] = (1, 3)
    mlp_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    # The tower family: its request tower samples mlp_depth / mlp_widths like any MLP; its
    # per-candidate head stays light, which is the point of the family (docs/reuse.md).
    head_depth: tuple[int, int] = (1, 2)
    head_widths: tuple[int, ...] = (16, 32, 64)
    # DCNv2 only: the paper finds 2–3 cross layers reach most of the gain; low rank (U Vᵀ)
    # cuts a cross layer's cost from d² to 2·d·r.
    cross_layers: tuple[int, int] = (1, 3)
    cross_ranks: tuple[int | None, ...] = (None, 8, 16)
    # Mixed-dimension embeddings (Ginart et al.): 0 = every table at embedding_dim; larger
    # alphas shrink the big tables (users, items) more, which is where the bytes are.
    mixed_dim_alphas: tuple[float, ...] = (0.0, 0.25, 0.5)

    def __post_init__(self) -> None:
        if not self.families:
            raise ConfigError("search space: families is empty", "e.g. ('dlrm', 'deepfm')")
        for family in self.families:
            model_spec(family)  # names the known families if this one is not
        for name in ("embedding_dims", "mlp_widths", "head_widths"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ConfigError(f"search space: {name} {values} must be non-empty and >= 1")
        for name in ("mlp_depth", "cross_layers", "head_depth"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ConfigError(f"search space: {name} {(low, high)} needs 1 <= min <= max")
        if not self.mixed_dim_alphas or any(a < 0 for a in self.mixed_dim_alphas):
            raise ConfigError(
                f"search space: mixed_dim_alphas {self.mixed_dim_alphas} must be >= 0"
            )
        if not self.cross_ranks or any(r is not None and r < 1 for r in self.cross_ranks):
            raise ConfigError(f"search space: cross_ranks {self.cross_ranks} must be None or >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _widths(params: Mapping[str, Any], role: str, count: int) -> tuple[int, ...]:
    """The first `count` sampled widths of one MLP, widest first."""
    return tuple(sorted((int(params[f"{role}_w{i}"]) for i in range(count)), reverse=True))


def student_from_params(params: Mapping[str, Any]) -> tuple[str, ModelConfig]:
    """The student a trial's params describe: (model name, config).

    >>> model, config = student_from_params(
    ...     {"model": "deepfm", "embedding_dim": 8, "deep_depth": 2, "deep_w0": 32, "deep_w1": 64}
    ... )
    >>> model, config.embedding_dim, config.deep_mlp
    ('deepfm', 8, (64, 32))
    """
    model, dim = str(params["model"]), int(params["embedding_dim"])
    alpha = float(params.get("mixed_dim_alpha", 0.0))  # absent in trials from before it existed
    if model == "dlrm":
        # The dot interaction pairs the bottom MLP's output with each embedding, so it ends at
        # `dim`; the layers before it are kept at least that wide so the MLP never widens.
        hidden = _widths(params, "bottom", int(params["bottom_depth"]) - 1)
        bottom = (*(max(w, dim) for w in hidden), dim)
        top = (*_widths(params, "top", int(params["top_depth"])), 1)
        return model, DLRMConfig(
            embedding_dim=dim, bottom_mlp=bottom, top_mlp=top, mixed_dim_alpha=alpha
        )
    if model == "tower":
        tower = _widths(params, "tower", int(params["tower_depth"]))
        head = _widths(params, "head", int(params["head_depth"]))
        return model, TowerConfig(
            embedding_dim=dim, tower_mlp=tower, head_mlp=head, mixed_dim_alpha=alpha
        )
    deep = _widths(params, "deep", int(params["deep_depth"]))
    if model == "dcnv2":
        layers, rank = int(params["cross_layers"]), params["cross_rank"]
        return model, DCNv2Config(
            embedding_dim=dim,
            cross_layers=layers,
            cross_rank=rank,
            deep_mlp=deep,
            mixed_dim_alpha=alpha,
        )
    if model == "deepfm":
        return model, DeepFMConfig(embedding_dim=dim, deep_mlp=deep, mixed_dim_alpha=alpha)
    if model == "wide_deep":
        return model, WideDeepConfig(embedding_dim=dim, deep_mlp=deep, mixed_dim_alpha=alpha)
    raise ConfigError(
        f"no search space for model {model!r}", "use dlrm, deepfm, dcnv2, wide_deep, tower"
    )


def _suggest_mlp(
    trial: optuna.trial.BaseTrial, space: SearchSpace, role: str, params: dict[str, Any]
) -> None:
    low, high = space.head_depth if role == "head" else space.mlp_depth
    widths = space.head_widths if role == "head" else space.mlp_widths
    depth = params[f"{role}_depth"] = trial.suggest_int(f"{role}_depth", low, high)
    # DLRM's bottom MLP samples one width fewer: its last layer is pinned to embedding_dim.
    for i in range(depth - 1 if role == "bottom" else depth):
        params[f"{role}_w{i}"] = trial.suggest_categorical(f"{role}_w{i}", widths)


def suggest_student(trial: optuna.trial.BaseTrial, space: SearchSpace) -> tuple[str, ModelConfig]:
    """Ask `trial` for a student in `space`: (model name, config); `trial.params` keeps the
    choices, from which `student_from_params` rebuilds the same student.

    Parameter names are shared across families where they mean the same thing
    (`embedding_dim`, the `deep_*` MLP over the embeddings), so the sampler can carry what it
    learnt about them from one family to another.
    """
    params: dict[str, Any] = {
        "model": trial.suggest_categorical("model", space.families),
        "embedding_dim": trial.suggest_categorical("embedding_dim", space.embedding_dims),
        "mixed_dim_alpha": trial.suggest_categorical("mixed_dim_alpha", space.mixed_dim_alphas),
    }
    if params["model"] == "dlrm":
        _suggest_mlp(trial, space, "bottom", params)
        _suggest_mlp(trial, space, "top", params)
    elif params["model"] == "tower":
        _suggest_mlp(trial, space, "tower", params)
        _suggest_mlp(trial, space, "head", params)
    else:
        _suggest_mlp(trial, space, "deep", params)
    if params["model"] == "dcnv2":
        params["cross_layers"] = trial.suggest_int("cross_layers", *space.cross_layers)
        params["cross_rank"] = trial.suggest_categorical("cross_rank", space.cross_ranks)
    return student_from_params(params)
