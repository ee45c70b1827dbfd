"""The step runners a recipe can name: each maps the current artifact to a candidate child.

A runner gets the shared context (dataset, recipe, the original's validation metrics, the base
training config, the baselines fitted once per run), the parent artifact, one attempt's
parameters and the directory to write to, and returns the saved candidate. Judging it is the
pipeline's business, not the runner's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaccel.artifact import Artifact, Manifest, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError, RecaccelError
from recaccel.models.registry import config_from_dict, preset_config
from recaccel.optimize.distill import DEFAULT_ALPHA, distill
from recaccel.optimize.pareto import pick
from recaccel.optimize.prune import prune
from recaccel.optimize.prune_embeddings import prune_embedding_dims, prune_fields
from recaccel.optimize.quantize import quantize_dense_step, quantize_embeddings_step
from recaccel.optimize.recipe import Recipe
from recaccel.optimize.search import search
from recaccel.optimize.trial_timing import DEFAULT_SEARCH_LATENCY_BACKEND, EAGER_ONLY, ModelTimer
from recaccel.train.baselines import BaselineResult
from recaccel.train.metrics import Metrics
from recaccel.train.pipeline import TrainedModel
from recaccel.train.trainer import TrainConfig

TRAIN_OVERRIDES = ("learning_rate", "max_epochs", "weight_decay")


@dataclass(frozen=True)
class Candidate:
    """What a step attempt produced: a saved child artifact and how it scored."""

    path: Path
    manifest: Manifest
    validation: Metrics
    test: Metrics

    @classmethod
    def from_trained(cls, trained: TrainedModel) -> Candidate:
        return cls(trained.path, trained.manifest, trained.validation, trained.test)


@dataclass
class StepContext:
    """What every step runner may use; built once per recipe run."""

    dataset: Dataset
    recipe: Recipe
    original_validation: Metrics
    train_config: TrainConfig
    progress: bool
    baselines: list[BaselineResult] = field(default_factory=list)
    # The runtimes a search step may time on (optimize/trial_timing.py), from the caller.
    timers: Mapping[str, ModelTimer] = field(default_factory=lambda: EAGER_ONLY)

    def train_config_for(self, params: Mapping[str, Any]) -> TrainConfig:
        overrides = {k: params[k] for k in TRAIN_OVERRIDES if k in params}
        return dataclasses.replace(self.train_config, **overrides)


# Ten minutes buys tens of small students on 2 cores: enough for the sampler to learn from.
DEFAULT_SEARCH_SECONDS = 600.0


class NoCandidateError(RecaccelError):
    """A step found nothing to propose (e.g. a search whose whole front fails the guard)."""


StepRunner = Callable[[StepContext, Artifact, dict[str, Any], Path], Candidate]


def _run_distill(
    ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path
) -> Candidate:
    student = params.get("student")
    if not student:
        raise ConfigError("distill step needs a 'student' model name", "e.g. student = 'deepfm'")
    preset = params.get("preset")
    if "config" in params:
        config = config_from_dict(student, params["config"])
    elif preset:
        config = preset_config(student, preset)
    else:
        raise ConfigError("distill step needs a student 'preset' or 'config'")
    trained = distill(
        parent,
        ctx.dataset,
        student,
        config,
        out,
        ctx.train_config_for(params),
        alpha=float(params.get("alpha", DEFAULT_ALPHA)),
        student_preset=preset if "config" not in params else None,
        progress=ctx.progress,
        baselines=ctx.baselines,
    )
    return Candidate.from_trained(trained)


# A pruning pass that keeps a fraction of something, as `prune` and `prune_embedding_dims` do.
KeepFractionPass = Callable[..., TrainedModel]


def _keep_fraction_step(step: str, pass_: KeepFractionPass) -> StepRunner:
    """The runner of a step whose one required parameter is `keep_fraction`."""

    def run(ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path) -> Candidate:
        if "keep_fraction" not in params:
            raise ConfigError(f"{step} step needs 'keep_fraction'", "e.g. keep_fraction = 0.5")
        trained = pass_(
            parent,
            ctx.dataset,
            float(params["keep_fraction"]),
            out,
            ctx.train_config_for(params),
            progress=ctx.progress,
            baselines=ctx.baselines,
        )
        return Candidate.from_trained(trained)

    return run


def _run_prune_fields(
    ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path
) -> Candidate:
    options = {k: params[k] for k in ("tolerance", "max_fields") if k in params}
    trained = prune_fields(
        parent,
        ctx.dataset,
        out,
        ctx.train_config_for(params),
        progress=ctx.progress,
        baselines=ctx.baselines,
        **options,
    )
    return Candidate.from_trained(trained)


def _run_quantize_embeddings(
    ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path
) -> Candidate:
    manifest, validation, test = quantize_embeddings_step(
        parent, ctx.dataset, int(params.get("bits", 8)), out
    )
    return Candidate(out, manifest, validation, test)


def _run_quantize_dense(
    ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path
) -> Candidate:
    manifest, validation, test = quantize_dense_step(
        parent,
        ctx.dataset,
        str(params.get("mode", "int8-dynamic")),
        out,
        force=bool(params.get("force", False)),
    )
    return Candidate(out, manifest, validation, test)


def _run_search(ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path) -> Candidate:
    """Distil a Pareto front of students (hardware-aware search), then take the fastest one
    the guard accepts."""
    result = search(
        parent,
        ctx.dataset,
        out,
        float(params.get("budget_seconds", DEFAULT_SEARCH_SECONDS)),
        n_trials=params.get("n_trials"),
        train_config=ctx.train_config_for(params),
        alpha=float(params.get("alpha", DEFAULT_ALPHA)),
        serving_batch=ctx.recipe.measure.serving_batch,
        threads=ctx.recipe.measure.threads,
        progress=ctx.progress,
        reuse=bool(params.get("reuse", False)),
        latency_backend=str(params.get("latency_backend", DEFAULT_SEARCH_LATENCY_BACKEND)),
        timers=ctx.timers,
    )
    chosen = pick(result, ctx.original_validation.auc, ctx.recipe.relative_budget)
    if chosen is None or chosen.artifact is None:
        raise NoCandidateError(
            f"none of the {len(result.front)} Pareto-front students keeps the validation AUC "
            f"within the budget (see {out / 'pareto.md'})",
            "give the search more time (budget_seconds) or a larger space",
        )
    student = load_artifact(Path(chosen.artifact))
    return Candidate(
        student.path,
        student.manifest,
        Metrics(**student.manifest.metrics["validation"]),
        Metrics(**student.manifest.metrics["test"]),
    )


STEP_RUNNERS: dict[str, StepRunner] = {
    "distill": _run_distill,
    "search": _run_search,
    "prune": _keep_fraction_step("prune", prune),
    "prune_fields": _run_prune_fields,
    "prune_embedding_dims": _keep_fraction_step("prune_embedding_dims", prune_embedding_dims),
    "quantize_embeddings": _run_quantize_embeddings,
    "quantize_dense": _run_quantize_dense,
}
