"""Fixtures for the deploy tests: one small artifact trained briefly on the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaccel.data.dataset import Dataset
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig


@pytest.fixture(scope="session")
def deploy_artifact(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepFM (small preset) after two epochs: trained weights, so scores spread."""
    out = tmp_path_factory.mktemp("deploy") / "deepfm-small"
    config = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
    train_models(
        tiny_dataset, [("deepfm", "small")], out, config, with_baselines=False, progress=False
    )
    return out
