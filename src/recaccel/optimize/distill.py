"""Knowledge distillation: train a small student on a heavy teacher's scores and the labels.

The student fits the blended target  t = α·y + (1 − α)·σ(teacher logit). Binary cross-entropy
is linear in its target, so BCE(s, t) = α·BCE(s, y) + (1 − α)·BCE(s, σ(teacher)) exactly: the
usual two-term distillation loss at temperature 1, with no change to the training loop. (A
temperature above 1 softens a softmax over many classes; with one sigmoid output it only
rescales the teacher's logit, so it is left out.)

Early stopping and every reported metric use the true labels of the validation and test
splits; only the training split's labels are replaced.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from recaccel.artifact import Artifact, LineageStep
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.registry import ModelConfig
from recaccel.train.baselines import BaselineResult
from recaccel.train.pipeline import (
    TrainedModel,
    TrainJob,
    fit_baselines,
    model_reference,
    train_one,
)
from recaccel.train.trainer import TrainConfig, predict

# Equal weight on labels and teacher: the common default in CTR distillation work, and the
# point where neither source dominates; tune it on validation AUC if the student lags.
DEFAULT_ALPHA = 0.5


def blended_targets(labels: np.ndarray, teacher_probs: np.ndarray, alpha: float) -> np.ndarray:
    """α·y + (1 − α)·p_teacher, as float32 training labels."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha {alpha} is not in [0, 1]", "use e.g. 0.5")
    return (alpha * labels + (1.0 - alpha) * teacher_probs).astype(np.float32)


def distill(
    teacher: Artifact,
    dataset: Dataset,
    student_model: str,
    student_config: ModelConfig,
    out: Path,
    config: TrainConfig,
    alpha: float = DEFAULT_ALPHA,
    student_preset: str | None = None,
    progress: bool = True,
    baselines: list[BaselineResult] | None = None,
) -> TrainedModel:
    """Train `student_model` on the teacher's blended targets and save it as a child artifact.

    The student's manifest names the teacher as its parent, extends its lineage with a
    "distill" step, and records its test ΔAUC against the teacher and the baselines
    (`baselines`, fitted here when not given: a recipe fits them once for all its steps).
    """
    if teacher.schema != dataset.schema:
        raise ConfigError(
            f"teacher {teacher.path} was trained on a different feature schema "
            f"({teacher.schema.name!r}) than dataset {dataset.name!r}",
            "distill on the dataset the teacher was trained on",
        )
    teacher_probs = predict(teacher.model, dataset.train)
    soft = dataclasses.replace(
        dataset.train, label=blended_targets(dataset.train.label, teacher_probs, alpha)
    )
    job = TrainJob(
        model=student_model,
        config=student_config,
        preset=student_preset,
        out=out,
        step=LineageStep(
            "distill",
            {"alpha": alpha, "student": student_model, "student_preset": student_preset},
        ),
        parent=teacher.manifest,
    )
    if baselines is None:
        baselines = fit_baselines(dataset)
    references = [model_reference("teacher", teacher, dataset), *baselines]
    return train_one(dataclasses.replace(dataset, train=soft), job, config, references, progress)
