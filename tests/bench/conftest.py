"""Fixtures for the bench tests: the e2e harness (the real server on loopback) and an artifact
for it to serve."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # server_harness

from recaccel.data.dataset import Dataset
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig


@pytest.fixture(scope="session")
def bench_artifact(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DLRM (small preset) trained briefly on the tiny dataset, as tests/e2e serves."""
    out = tmp_path_factory.mktemp("bench-served") / "dlrm-small"
    config = TrainConfig(max_epochs=1, batch_size=128, learning_rate=3e-3)
    train_models(
        tiny_dataset, [("dlrm", "small")], out, config, with_baselines=False, progress=False
    )
    return out
