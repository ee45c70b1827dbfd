"""Run an optimization recipe: chain steps, guard each one, keep every artifact.

Each step maps the current model to a candidate child artifact. The candidate is kept only if
the accuracy guard accepts its validation AUC against the *original* model and it buys size or
speed against its parent (measured interleaved, here and now); otherwise the step's next
attempt is tried, and when none is left the step is rejected and the chain goes on from the
last accepted model. Every attempt's artifact stays on disk with its lineage, so a rejected one
can still be inspected.

This is the Python API behind `recaccel optimize`; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaccel.artifact import Artifact, Manifest, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError, RecaccelError
from recaccel.models.registry import config_from_dict, preset_config
from recaccel.optimize.distill import DEFAULT_ALPHA, distill
from recaccel.optimize.guard import CostVerdict, Verdict, judge, judge_cost
from recaccel.optimize.latency import measure_interleaved, sample_rows
from recaccel.optimize.pareto import pick
from recaccel.optimize.prune import prune
from recaccel.optimize.prune_embeddings import prune_embedding_dims, prune_fields
from recaccel.optimize.quantize import quantize_dense_step, quantize_embeddings_step
from recaccel.optimize.recipe import Recipe, Step
from recaccel.optimize.search import search
from recaccel.train.baselines import BaselineResult
from recaccel.train.metrics import Metrics, evaluate
from recaccel.train.pipeline import TrainedModel, fit_baselines
from recaccel.train.trainer import TrainConfig, predict

log = logging.getLogger("recaccel.optimize")

# Rounds of the parent-vs-candidate timing each attempt gets: enough for a stable median of
# two variants, small next to the training the attempt already cost.
COST_CHECK_REPEATS = 60
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


@dataclass(frozen=True)
class Attempt:
    step: int  # 1-based position in the recipe
    op: str
    label: str  # e.g. "02-prune-1": the attempt's directory under the run's output
    params: dict[str, Any]
    candidate: Candidate | None  # None: the attempt failed before producing a model
    accuracy: Verdict | None
    cost: CostVerdict | None
    accepted: bool
    reason: str


@dataclass(frozen=True)
class StepOutcome:
    step: int
    op: str
    attempts: tuple[Attempt, ...]

    @property
    def accepted(self) -> Attempt | None:
        return next((a for a in self.attempts if a.accepted), None)

    @property
    def decision(self) -> str:
        """ "accepted", "re-tuned" (accepted after a rejected attempt) or "rejected"."""
        chosen = self.accepted
        if chosen is None:
            return "rejected"
        return "accepted" if chosen is self.attempts[0] else "re-tuned"


@dataclass(frozen=True)
class RecipeRun:
    recipe: Recipe
    original: Path
    original_validation: Metrics
    steps: tuple[StepOutcome, ...]
    synthetic: bool

    @property
    def chain(self) -> list[Attempt]:
        """The accepted attempts, in order: the original's optimized descendants."""
        return [s.accepted for s in self.steps if s.accepted is not None]

    @property
    def final(self) -> Path:
        chain = self.chain
        return chain[-1].candidate.path if chain and chain[-1].candidate else self.original


@dataclass
class StepContext:
    """What every step runner may use; built once per recipe run."""

    dataset: Dataset
    recipe: Recipe
    original_validation: Metrics
    train_config: TrainConfig
    progress: bool
    baselines: list[BaselineResult] = field(default_factory=list)

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


def _run_prune(ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path) -> Candidate:
    if "keep_fraction" not in params:
        raise ConfigError("prune step needs 'keep_fraction'", "e.g. keep_fraction = 0.5")
    trained = prune(
        parent,
        ctx.dataset,
        float(params["keep_fraction"]),
        out,
        ctx.train_config_for(params),
        progress=ctx.progress,
        baselines=ctx.baselines,
    )
    return Candidate.from_trained(trained)


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


def _run_prune_embedding_dims(
    ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path
) -> Candidate:
    if "keep_fraction" not in params:
        raise ConfigError("prune_embedding_dims needs 'keep_fraction'", "e.g. keep_fraction = 0.5")
    trained = prune_embedding_dims(
        parent,
        ctx.dataset,
        float(params["keep_fraction"]),
        out,
        ctx.train_config_for(params),
        progress=ctx.progress,
        baselines=ctx.baselines,
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
    "prune": _run_prune,
    "prune_fields": _run_prune_fields,
    "prune_embedding_dims": _run_prune_embedding_dims,
    "quantize_embeddings": _run_quantize_embeddings,
    "quantize_dense": _run_quantize_dense,
}


def _judge_accuracy(
    original: Metrics, candidate: Candidate, budget: float, synthetic: bool
) -> Verdict:
    if synthetic:  # random labels: accuracy is not a claim, so it cannot block a step
        auc = candidate.validation.auc
        return Verdict(True, original.auc, auc, 0.0, "not judged: synthetic labels")
    return judge(original.auc, candidate.validation.auc, budget)


def _judge_cost(parent: Artifact, candidate: Candidate, ctx: StepContext) -> CostVerdict:
    recipe = ctx.recipe
    child = load_artifact(candidate.path)
    batch = sample_rows(ctx.dataset.validation, recipe.measure.serving_batch)
    timings = measure_interleaved(
        {"parent": parent.model, "candidate": child.model},
        batch,
        repeats=COST_CHECK_REPEATS,
        threads=recipe.measure.threads,
    )
    return judge_cost(
        parent.manifest.weights_bytes,
        candidate.manifest.weights_bytes,
        timings["parent"].median_ms,
        timings["candidate"].median_ms,
        max_slowdown=recipe.max_slowdown,
    )


def _none(reason: str) -> tuple[None, None, None, bool, str]:
    """The tail of an Attempt that produced no model."""
    return None, None, None, False, reason


def run_step(
    index: int,
    step: Step,
    parent: Artifact,
    ctx: StepContext,
    out: Path,
) -> StepOutcome:
    """Try `step`'s attempts in order until one passes both checks."""
    runner = STEP_RUNNERS.get(step.op)
    if runner is None:
        raise ConfigError(
            f"step {index} op {step.op!r} is not available in this build",
            f"available: {', '.join(STEP_RUNNERS)}",
        )
    attempts: list[Attempt] = []
    for number, params in enumerate(step.attempts, start=1):
        suffix = f"-{number}" if len(step.attempts) > 1 else ""
        target = out / f"{index:02d}-{step.op}{suffix}"
        log.info("step %d: %s", index, step.describe(params))
        try:
            candidate = runner(ctx, parent, params, target)
        except NoCandidateError as exc:
            attempts.append(Attempt(index, step.op, target.name, params, *_none(exc.message)))
            continue
        except RecaccelError as exc:  # e.g. BF16 asked for on a CPU without it
            reason = f"not applicable: {exc.message}"
            attempts.append(Attempt(index, step.op, target.name, params, *_none(reason)))
            continue
        accuracy = _judge_accuracy(
            ctx.original_validation, candidate, ctx.recipe.relative_budget, ctx.dataset.synthetic
        )
        cost = _judge_cost(parent, candidate, ctx) if accuracy.accepted else None
        accepted = accuracy.accepted and cost is not None and cost.accepted
        reason = accuracy.reason if cost is None else f"{accuracy.reason}; {cost.reason}"
        attempts.append(
            Attempt(
                index, step.op, target.name, params, candidate, accuracy, cost, accepted, reason
            )
        )
        if accepted:
            break
    return StepOutcome(index, step.op, tuple(attempts))


def run_recipe(
    artifact_path: Path,
    dataset: Dataset,
    recipe: Recipe,
    out: Path,
    train_config: TrainConfig,
    progress: bool = True,
) -> RecipeRun:
    """Apply `recipe` to the artifact at `artifact_path`, writing every attempt under `out`."""
    original = load_artifact(artifact_path)
    if original.schema != dataset.schema:
        raise ConfigError(
            f"{artifact_path} was trained on a different feature schema than {dataset.name!r}",
            "optimize on the dataset the artifact was trained on",
        )
    original_validation = evaluate(
        dataset.validation.label, predict(original.model, dataset.validation)
    )
    ctx = StepContext(
        dataset, recipe, original_validation, train_config, progress, fit_baselines(dataset)
    )
    outcomes: list[StepOutcome] = []
    current = original
    for index, step in enumerate(recipe.steps, start=1):
        outcome = run_step(index, step, current, ctx, out)
        outcomes.append(outcome)
        chosen = outcome.accepted
        if chosen is not None and chosen.candidate is not None:
            current = load_artifact(chosen.candidate.path)
        log.info("step %d %s: %s", index, step.op, outcome.decision)
    return RecipeRun(
        recipe, Path(artifact_path), original_validation, tuple(outcomes), dataset.synthetic
    )
