"""Hardware-aware architecture search: distilled students on the accuracy/latency frontier.

Each trial distills one student from the teacher (see `distill.py`; the teacher's soft targets
are computed once, not per trial) and times it against the teacher at the serving batch, both
in the same interleaved rounds, so the latency objective — the student/teacher ratio — holds
on a noisy shared machine where absolute times drift. Optuna searches both objectives at once
(maximize validation AUC, minimize the ratio); the result is the Pareto front, from which
`pick` takes the fastest student the accuracy guard accepts. Decisions use validation AUC
only; the test split is scored only for the saved students' manifests, after the search.

The time budget is hard: Optuna's `timeout` only stops new trials from starting, so the same
deadline also goes into training, which stops after the batch during which it passes. The
overrun is then one batch, one validation pass, one latency measurement, and saving the front.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from recaccel.artifact import Artifact, LineageStep, new_manifest, save_artifact
from recaccel.data.dataset import Dataset
from recaccel.data.schema import Side
from recaccel.defaults import DEFAULT_CANDIDATES
from recaccel.errors import ConfigError
from recaccel.optimize.distill import DEFAULT_ALPHA, blended_targets
from recaccel.optimize.latency import sample_rows
from recaccel.optimize.pareto import SearchResult, TrialRecord, pick, write_outputs
from recaccel.optimize.search_space import SearchSpace, student_from_params
from recaccel.optimize.search_trial import (
    LARGE_REQUEST_FACTOR,
    TRIAL_LATENCY_REPEATS,
    TrialRunner,
    record_from_trial,
)
from recaccel.optimize.trial_timing import (
    DEFAULT_SEARCH_LATENCY_BACKEND,
    EAGER_ONLY,
    ModelTimer,
    timer_for,
)
from recaccel.train.metrics import evaluate
from recaccel.train.trainer import TrainConfig, predict

__all__ = ["SearchResult", "SearchSpace", "TrialRecord", "make_sampler", "pick", "search"]

# The sampler's random trials before its model of the two objectives takes over.
STARTUP_TRIALS = 10


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    """Multivariate TPE over the family-grouped space, seeded.

    Why not NSGA-II: a budget of minutes buys tens of trials, and NSGA-II spends its first
    generation (50 by default) sampling at random. TPE models the objectives after
    `STARTUP_TRIALS`; `multivariate` learns how widths interact (embedding × MLP width sets the
    first layer's cost); `group` fits that joint model within each family's own parameters,
    instead of falling back to independent sampling on a conditional space.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group`
        return optuna.samplers.TPESampler(
            n_startup_trials=STARTUP_TRIALS, multivariate=True, group=True, seed=seed
        )


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; the search prints its own one line per trial."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _save_students(
    records: list[TrialRecord],
    models: dict[int, nn.Module],
    teacher: Artifact,
    dataset: Dataset,
    out: Path,
    step_params: dict[str, Any],
    config: TrainConfig,
) -> list[TrialRecord]:
    """Save each front student as the teacher's child (a "distill" step); records with paths.

    The test split is scored here, after every decision, for the manifests only. Its paired
    ΔAUC CI and the baselines are left out: they cost seconds each, past the budget.
    """
    if not models:
        return records
    teacher_test = evaluate(dataset.test.label, predict(teacher.model, dataset.test))
    saved = []
    for record in records:
        model = models.get(record.number)
        if model is None:
            saved.append(record)
            continue
        path = out / "students" / f"trial-{record.number:03d}"
        step = LineageStep(
            "distill", {**step_params, "student": record.model, "trial": record.number}
        )
        manifest = new_manifest(
            record.model,
            None,
            student_from_params(record.params)[1],
            dataset.schema,
            dataset={
                "name": dataset.name,
                "synthetic": dataset.synthetic,
                "rows": dataset.rows(),
                **dataset.info,
            },
            metrics={
                "validation": evaluate(
                    dataset.validation.label, predict(model, dataset.validation)
                ).to_dict(),
                "test": evaluate(dataset.test.label, predict(model, dataset.test)).to_dict(),
            },
            references={
                "teacher": {
                    "setting": f"{teacher.manifest.model} {teacher.manifest.artifact_id}",
                    "test": teacher_test.to_dict(),
                }
            },
            training={
                "config": config.to_dict(),
                "best_epoch": record.best_epoch,
                "epochs_run": record.epochs_run,
                "seconds": round(record.seconds, 2),
                "stopped_at_deadline": record.stopped_at_deadline,
            },
            parent=teacher.manifest.artifact_id,
            lineage=(*teacher.manifest.lineage, step),
        )
        save_artifact(path, model, manifest)
        saved.append(replace(record, artifact=str(path)))
    return saved


def search(
    teacher: Artifact,
    dataset: Dataset,
    out: Path,
    budget_seconds: float,
    *,
    n_trials: int | None = None,
    train_config: TrainConfig,
    alpha: float = DEFAULT_ALPHA,
    serving_batch: int = DEFAULT_CANDIDATES,
    threads: int = 1,
    seed: int = 0,
    progress: bool = True,
    space: SearchSpace | None = None,
    latency_repeats: int = TRIAL_LATENCY_REPEATS,
    reuse: bool = False,
    latency_backend: str = DEFAULT_SEARCH_LATENCY_BACKEND,
    timers: Mapping[str, ModelTimer] = EAGER_ONLY,
) -> SearchResult:
    """Search `space` for distilled students of `teacher` within `budget_seconds`.

    Writes `search.json`, `pareto.md` and `pareto.png` to `out`, and each Pareto-front student
    as an artifact under `out/students/trial-NNN` (the teacher's child, lineage "distill").

    Args:
        budget_seconds: wall-clock budget for everything up to the last trial's training; the
            last trial's validation and latency measurement, and saving the front, come after.
        n_trials: stop after this many students trained (skipped duplicates do not count).
        train_config: each student's training; its seed is every student's init seed.
        alpha: the distillation blend (see `blended_targets`).
        serving_batch, threads: the batch size and intra-op threads latency is timed at.
        seed: the sampler's seed and the timed rows' seed.
        space: the architectures to search (default: `SearchSpace()`).
        latency_repeats: timed rounds per trial (each round runs teacher and student once).
        reuse: time each student as it serves with request-level reuse (docs/reuse.md): its
            split twin on one rank request of `serving_batch` candidates and on one of
            LARGE_REQUEST_FACTOR times as many, against the teacher as it is on the same rows;
            the latency objective is the two requests' summed time over the teacher's. The
            front then ranks students by what rank requests of the workload's median and
            tail sizes cost them served so; ConfigError for a schema with no request-side
            feature.
        latency_backend: the runtime teacher and students are timed on, one of `timers`
            (optimize/trial_timing.py); with reuse, a serving runtime's is the growth with
            candidates that serving sees.
    """
    started = time.monotonic()
    deadline = started + budget_seconds
    if budget_seconds <= 0 or (n_trials is not None and n_trials < 1):
        raise ConfigError(
            f"search budget {budget_seconds}s and n_trials {n_trials} must be positive",
            "give e.g. budget_seconds=600",
        )
    if teacher.schema != dataset.schema:
        raise ConfigError(
            f"teacher {teacher.path} was trained on a different feature schema than dataset "
            f"{dataset.name!r}",
            "search on the dataset the teacher was trained on",
        )
    timer = timer_for(latency_backend, timers)
    space = space or SearchSpace()
    if reuse and not dataset.schema.on_side(Side.REQUEST):
        raise ConfigError(
            f"search with reuse: dataset {dataset.name!r} marks no feature request-side",
            'search without reuse, or mark the user\'s features side = "request"',
        )
    teacher_train = predict(teacher.model, dataset.train)  # once for every student
    soft_labels = blended_targets(dataset.train.label, teacher_train, alpha)
    soft = replace(dataset, train=replace(dataset.train, label=soft_labels))
    teacher_val = evaluate(dataset.validation.label, predict(teacher.model, dataset.validation))
    objective = TrialRunner(
        teacher=timer(teacher.model, dataset.schema, False, threads),
        soft=soft,
        space=space,
        config=train_config,
        batch=sample_rows(dataset.validation, serving_batch, seed),
        deadline=deadline,
        repeats=latency_repeats,
        threads=threads,
        progress=progress,
        reuse=reuse,
        large_batch=(
            sample_rows(dataset.validation, LARGE_REQUEST_FACTOR * serving_batch, seed)
            if reuse
            else None
        ),
        timer=timer,
    )
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [objective.after_trial]
    if n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,)))
    with _quiet_optuna():
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(seed))
        study.optimize(
            objective, timeout=max(deadline - time.monotonic(), 0.0), callbacks=callbacks
        )

    records = [record_from_trial(t) for t in study.trials]
    front = sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))
    step_params = {"alpha": alpha, "student_preset": None, "search_seed": seed}
    records = _save_students(
        records, objective.models, teacher, dataset, out, step_params, train_config
    )
    teacher_ms = [r.teacher_latency_ms for r in records if r.teacher_latency_ms is not None]
    if objective.exhausted:
        stop_reason = "space exhausted"
    elif n_trials is not None and sum(r.state == "complete" for r in records) >= n_trials:
        stop_reason = "n_trials"
    else:
        stop_reason = "budget"
    result = SearchResult(
        trials=tuple(records),
        front=tuple(t.number for t in front),
        teacher={
            "artifact_id": teacher.manifest.artifact_id,
            "model": teacher.manifest.model,
            "path": str(teacher.path),
        },
        teacher_val_auc=teacher_val.auc,
        teacher_latency_ms=statistics.median(teacher_ms) if teacher_ms else None,
        budget_seconds=budget_seconds,
        elapsed_seconds=time.monotonic() - started,
        stop_reason=stop_reason,
        sampler="TPESampler(multivariate=True, group=True)",
        seed=seed,
        serving_batch=serving_batch,
        threads=threads,
        space=space,
        reuse=reuse,
        latency_backend=latency_backend,
    )
    write_outputs(result, out)
    return result
