"""Distillation: the student fits blended targets, keeps true-label evaluation, and records
its teacher as parent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.registry import preset_config
from recaccel.optimize.distill import blended_targets, distill
from recaccel.train.metrics import evaluate
from recaccel.train.trainer import TrainConfig, predict

FAST = TrainConfig(max_epochs=3, batch_size=128, learning_rate=3e-3)


def test_blended_targets_weigh_labels_against_the_teacher() -> None:
    labels = np.array([0.0, 1.0, 1.0])
    teacher = np.array([0.2, 0.6, 1.0])
    np.testing.assert_allclose(blended_targets(labels, teacher, 0.5), [0.1, 0.8, 1.0])
    np.testing.assert_allclose(blended_targets(labels, teacher, 1.0), labels)
    np.testing.assert_allclose(blended_targets(labels, teacher, 0.0), teacher)
    with pytest.raises(ConfigError, match="alpha"):
        blended_targets(labels, teacher, 1.5)


def test_bce_on_blended_targets_is_the_two_term_distillation_loss() -> None:
    logits = torch.randn(50)
    labels = torch.randint(0, 2, (50,)).float()
    teacher = torch.rand(50)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    blended = torch.from_numpy(blended_targets(labels.numpy(), teacher.numpy(), 0.3))
    torch.testing.assert_close(
        bce(logits, blended), 0.3 * bce(logits, labels) + 0.7 * bce(logits, teacher)
    )


def test_student_artifact_names_its_teacher(
    tmp_path: Path, tiny_dataset: Dataset, train_tiny: Callable[[str, str, Path], Artifact]
) -> None:
    teacher = train_tiny("dlrm", "small", tmp_path / "teacher")
    student = distill(
        teacher,
        tiny_dataset,
        "wide_deep",
        preset_config("wide_deep", "small"),
        tmp_path / "student",
        FAST,
        student_preset="small",
        progress=False,
    )
    loaded = load_artifact(tmp_path / "student")
    manifest = loaded.manifest
    assert manifest.parent == teacher.manifest.artifact_id
    assert [s.op for s in manifest.lineage] == ["train", "distill"]
    assert manifest.lineage[-1].params["alpha"] == 0.5
    assert set(manifest.references) == {"teacher", "logistic_regression", "popularity"}
    delta = student.vs_baselines["teacher"]
    assert delta.low <= delta.delta <= delta.high
    # Reported metrics are against the true test labels, not the blended training targets.
    true_test = evaluate(tiny_dataset.test.label, predict(loaded.model, tiny_dataset.test))
    assert manifest.metrics["test"]["auc"] == pytest.approx(true_test.auc)


def test_teacher_from_another_schema_is_refused(
    tmp_path: Path, train_tiny: Callable[[str, str, Path], Artifact]
) -> None:
    from recaccel.data.synthetic import SyntheticConfig, make_criteo_synthetic

    teacher = train_tiny("dlrm", "small", tmp_path / "teacher")
    other = make_criteo_synthetic(SyntheticConfig(rows=100, max_rows_per_table=20))
    with pytest.raises(ConfigError, match="different feature schema"):
        distill(teacher, other, "dlrm", preset_config("dlrm", "small"), tmp_path / "s", FAST)
