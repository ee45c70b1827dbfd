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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError, RecaccelError
from recaccel.optimize.guard import CostVerdict, Verdict, judge, judge_cost
from recaccel.optimize.latency import measure_interleaved, sample_rows
from recaccel.optimize.recipe import Recipe, Step
from recaccel.optimize.steps import STEP_RUNNERS, Candidate, NoCandidateError, StepContext
from recaccel.optimize.trial_timing import (
    DEFAULT_SEARCH_LATENCY_BACKEND,
    EAGER_ONLY,
    ModelTimer,
    timer_for,
)
from recaccel.train.metrics import Metrics, evaluate
from recaccel.train.pipeline import fit_baselines
from recaccel.train.trainer import TrainConfig, predict

log = logging.getLogger("recaccel.optimize")

# Rounds of the parent-vs-candidate timing each attempt gets: enough for a stable median of
# two variants, small next to the training the attempt already cost.
COST_CHECK_REPEATS = 60


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
        """Either "accepted", "re-tuned" (accepted after a rejected attempt) or "rejected"."""
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
    timers: Mapping[str, ModelTimer] = EAGER_ONLY,
) -> RecipeRun:
    """Apply `recipe` to the artifact at `artifact_path`, writing every attempt under `out`.

    `timers`: the runtimes a search step may time on (optimize/trial_timing.py); a step naming
    another fails here, before anything is trained.
    """
    for step in recipe.steps:
        for attempt in step.attempts if step.op == "search" else ():
            timer_for(str(attempt.get("latency_backend", DEFAULT_SEARCH_LATENCY_BACKEND)), timers)
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
        dataset,
        recipe,
        original_validation,
        train_config,
        progress,
        fit_baselines(dataset),
        timers,
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
