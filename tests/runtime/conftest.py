"""Every zoo family trained briefly once per session, and its float ONNX export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.models.registry import MODELS
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig


@pytest.fixture(scope="session")
def trained(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    """model name -> its small preset after two epochs: trained weights, not the near-zero
    initial ones, so float and quantized scores actually spread and can disagree."""
    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
    runs = [(name, "small") for name in MODELS]
    train_models(tiny_dataset, runs, out, config, with_baselines=False, progress=False)
    return {name: load_artifact(out / f"{name}-small") for name in MODELS}


@pytest.fixture(scope="session")
def float_onnx(
    trained: dict[str, Artifact], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """model name -> its exported float ONNX file."""
    pytest.importorskip("onnxruntime")
    from recaccel.runtime.export import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(art, None, out / f"{name}.onnx") for name, art in trained.items()}


@pytest.fixture(scope="session")
def with_onnx(trained: dict[str, Artifact], float_onnx: dict[str, Path]) -> dict[str, Artifact]:
    """`trained`, with each float ONNX export (made by the same `export_onnx` for
    test_onnx_export.py) placed in the executors' ONNX cache, so no family is exported twice.
    The export through an executor is exercised by the cache test, on a copy without a cache."""
    from recaccel.runtime.onnx_exec import cache_path

    for name, artifact in trained.items():
        cached = cache_path(artifact, "fp32")
        if not cached.exists():
            cached.parent.mkdir(parents=True)
            shutil.copyfile(float_onnx[name], cached)
    return trained
