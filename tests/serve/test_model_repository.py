"""The model repository refuses, at start, what would serve wrong scores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.data.movielens import build_movielens_dataset
from recaccel.data.movielens_source import MovieLensTables
from recaccel.errors import ConfigError
from recaccel.serve.config import ServeConfig
from recaccel.serve.features import FeatureStore
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.repository import ModelRepository


def test_a_feature_store_from_another_dataset_is_refused(
    train_tiny: Callable[[str, str, Path], Artifact],
    tiny_tables: MovieLensTables,
    tmp_path: Path,
) -> None:
    artifact = train_tiny("dlrm", "small", tmp_path / "dlrm")
    kept = tiny_tables.items["item_id"] <= 50  # fewer items: another item vocabulary
    fewer = MovieLensTables(
        ratings=tiny_tables.ratings[tiny_tables.ratings["item_id"] <= 50],
        users=tiny_tables.users,
        items=tiny_tables.items[kept],
        source="fixture",
    )
    other = FeatureStore.from_dataset(build_movielens_dataset(fewer))
    with pytest.raises(ConfigError, match="feature schema differs"):
        ModelRepository(ServeConfig(), ServerMetrics(), {"m": artifact.path}, features=other)


def test_nothing_to_serve_is_refused() -> None:
    with pytest.raises(ConfigError, match="no models to serve"):
        ModelRepository(ServeConfig(), ServerMetrics(), {})


def test_an_artifact_saved_before_feature_sides_serves_with_todays_store(
    train_tiny: Callable[[str, str, Path], Artifact],
    tiny_dataset: Dataset,
    tmp_path: Path,
) -> None:
    """Sides say where serving computes a feature, not what the model was trained on: a
    manifest without them, beside one with them, is the same contract."""
    marked = train_tiny("dlrm", "small", tmp_path / "marked")
    unmarked = tmp_path / "unmarked"
    shutil.copytree(marked.path, unmarked)
    manifest = json.loads((unmarked / "manifest.json").read_text())
    for feature in manifest["schema"]["features"]:
        del feature["side"]
    (unmarked / "manifest.json").write_text(json.dumps(manifest))
    store = FeatureStore.from_dataset(tiny_dataset)
    assert any(f.side == "request" for f in store.schema.features)  # type: ignore[union-attr]
    ModelRepository(
        ServeConfig(), ServerMetrics(), {"old": unmarked, "new": marked.path}, features=store
    )
