"""Train a zoo model on a dataset, evaluate it beside the baselines, and save the artifact.

This is the Python API behind `recaccel train`; the CLI only parses arguments and prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recaccel.artifact import Artifact, LineageStep, Manifest, new_manifest, save_artifact
from recaccel.data.dataset import Dataset
from recaccel.models.registry import ModelConfig, build_model, preset_config
from recaccel.train.baselines import BaselineResult, item_popularity, logistic_regression
from recaccel.train.metrics import AucDelta, Metrics, evaluate, paired_bootstrap_auc_delta
from recaccel.train.trainer import FitResult, TrainConfig, fit, predict, seed_everything


@dataclass(frozen=True)
class TrainedModel:
    model: str
    preset: str
    path: Path
    manifest: Manifest
    fit: FitResult
    validation: Metrics
    test: Metrics
    vs_baselines: dict[str, AucDelta]  # baseline name -> test ΔAUC with its 95% CI


@dataclass(frozen=True)
class TrainReport:
    dataset: str
    synthetic: bool
    models: list[TrainedModel]
    baselines: list[BaselineResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "synthetic": self.synthetic,
            "models": [
                {
                    "model": m.model,
                    "preset": m.preset,
                    "artifact": str(m.path),
                    "artifact_id": m.manifest.artifact_id,
                    "parameters": m.manifest.parameters,
                    "weights_bytes": m.manifest.weights_bytes,
                    "best_epoch": m.fit.best_epoch,
                    "train_seconds": round(m.fit.seconds, 1),
                    "validation": m.validation.to_dict(),
                    "test": m.test.to_dict(),
                    "delta_test_auc_vs": {k: d.to_dict() for k, d in m.vs_baselines.items()},
                }
                for m in self.models
            ],
            "baselines": [
                {
                    "name": b.name,
                    "setting": b.setting,
                    "validation": b.validation.to_dict(),
                    "test": b.test.to_dict(),
                }
                for b in self.baselines
            ],
        }


def fit_baselines(dataset: Dataset) -> list[BaselineResult]:
    """Logistic regression and (where items have ids) item popularity on the same split.

    Synthetic labels carry no meaning, so no reference point is fitted to them.
    """
    if dataset.synthetic:
        return []
    results = [logistic_regression(dataset)]
    if "item_id" in {f.name for f in dataset.schema.categorical}:
        results.append(item_popularity(dataset))
    return results


@dataclass(frozen=True)
class TrainJob:
    """One model to fit and save: what it is, where it goes, and where it comes from."""

    model: str
    config: ModelConfig
    preset: str | None  # the zoo preset `config` came from, if any
    out: Path
    step: LineageStep  # the step that makes it: "train", "distill", ...
    parent: Manifest | None = None  # the artifact it derives from (a distillation teacher)
    # Weights to start from (a pruned model's fine-tuning); None = a fresh, seeded init.
    initial_state: Mapping[str, torch.Tensor] | None = None


def model_reference(name: str, artifact: Artifact, dataset: Dataset) -> BaselineResult:
    """An artifact as a reference scorer (a teacher, an unpruned parent), so a derived model's
    test ΔAUC against it gets a paired CI like the baselines'."""
    val_scores = predict(artifact.model, dataset.validation)
    test_scores = predict(artifact.model, dataset.test)
    manifest = artifact.manifest
    return BaselineResult(
        name=name,
        setting=f"{manifest.model} ({manifest.preset or 'custom'}) {manifest.artifact_id}",
        validation=evaluate(dataset.validation.label, val_scores),
        test=evaluate(dataset.test.label, test_scores),
        test_scores=test_scores,
    )


def train_one(
    dataset: Dataset,
    job: TrainJob,
    config: TrainConfig,
    references: list[BaselineResult],
    progress: bool = True,
) -> TrainedModel:
    """Build, fit, evaluate and save one model; returns where it went and how it scored.

    `dataset.train` is what the model fits (its labels may be soft targets); validation and
    test keep the true labels. Test ΔAUC against each reference scorer gets a paired CI.
    """
    seed_everything(config.seed)  # the initial weights, not only the shuffling, are seeded
    model = build_model(job.model, dataset.schema, job.config)
    if job.initial_state is not None:
        model.load_state_dict(job.initial_state)
    result = fit(model, dataset, config, progress, score_start=job.initial_state is not None)
    validation = result.best.validation
    test_scores = predict(model, dataset.test, config.eval_batch_size)
    test = evaluate(dataset.test.label, test_scores)
    vs_references = {
        r.name: paired_bootstrap_auc_delta(dataset.test.label, test_scores, r.test_scores)
        for r in references
    }
    lineage = (*job.parent.lineage, job.step) if job.parent else (job.step,)
    manifest = new_manifest(
        job.model,
        job.preset,
        job.config,
        dataset.schema,
        dataset={
            "name": dataset.name,
            "synthetic": dataset.synthetic,
            "rows": dataset.rows(),
            **dataset.info,
        },
        metrics={"validation": validation.to_dict(), "test": test.to_dict()},
        references={
            r.name: {
                "setting": r.setting,
                "test": r.test.to_dict(),
                "delta_test_auc": vs_references[r.name].to_dict(),
            }
            for r in references
        },
        training={
            "config": config.to_dict(),
            "best_epoch": result.best_epoch,
            "epochs_run": sum(1 for e in result.history if e.epoch > 0),  # epoch 0 = start
            "seconds": round(result.seconds, 2),
        },
        parent=job.parent.artifact_id if job.parent else None,
        lineage=lineage,
    )
    manifest = save_artifact(job.out, model, manifest)
    return TrainedModel(
        job.model,
        job.preset or "custom",
        job.out,
        manifest,
        result,
        validation,
        test,
        vs_references,
    )


def train_models(
    dataset: Dataset,
    runs: list[tuple[str, str]],
    out: Path,
    config: TrainConfig,
    with_baselines: bool = True,
    progress: bool = True,
) -> TrainReport:
    """Train each (model, preset) in `runs`.

    One run writes its artifact to `out`; several write to `out/<model>-<preset>`.
    """
    baselines = fit_baselines(dataset) if with_baselines else []
    jobs = [
        TrainJob(
            model=model_name,
            config=preset_config(model_name, preset),
            preset=preset,
            out=out if len(runs) == 1 else out / f"{model_name}-{preset}",
            step=LineageStep("train", {"dataset": dataset.name, "preset": preset}),
        )
        for model_name, preset in runs
    ]
    models = [train_one(dataset, job, config, baselines, progress) for job in jobs]
    return TrainReport(dataset.name, dataset.synthetic, models, baselines)
