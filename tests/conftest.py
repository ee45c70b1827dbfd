"""Shared fixtures: a tiny MovieLens-shaped dataset built in memory (no network, no cache)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from redis_process import RedisProcess, free_port

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.data.movielens import build_movielens_dataset
from recaccel.data.movielens_source import MovieLensTables
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Collect only test modules here. pyproject's --doctest-modules is for src's docstrings;
    under tests/ it would import the conftest files (all named `conftest`, so they clash) and
    helper scripts such as e2e/tiny_server.py as modules of their own."""
    if collection_path.suffix == ".py" and not collection_path.name.startswith("test_"):
        return True
    return None


def make_tables(
    n_users: int = 40, n_items: int = 60, per_user: int = 30, seed: int = 0
) -> MovieLensTables:
    """Random ratings with a learnable signal: users like items whose taste matches theirs."""
    rng = np.random.default_rng(seed)
    user_taste = rng.normal(size=n_users + 1)
    item_taste = rng.normal(size=n_items + 1)
    item_quality = rng.normal(size=n_items + 1)  # what popularity can learn
    rows = []
    for user in range(1, n_users + 1):
        start = 880_000_000 + int(rng.integers(0, 10_000_000))
        for k, item in enumerate(rng.choice(np.arange(1, n_items + 1), per_user, replace=False)):
            affinity = (
                user_taste[user] * item_taste[item] + item_quality[item] + rng.normal(scale=0.5)
            )
            rating = int(np.clip(np.round(3 + affinity), 1, 5))
            rows.append((user, int(item), rating, start + 3600 * k + int(rng.integers(0, 600))))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        "int64"
    )
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype=np.int64),
            "age": rng.integers(12, 70, n_users).astype(np.int64),
            "gender": rng.choice(["M", "F"], n_users),
            "occupation": rng.choice(["engineer", "student", "artist", "other"], n_users),
            "zip_code": rng.choice(["55414", "94043", "T8H1N", "10003"], n_users),
        }
    )
    years = pd.array(rng.integers(1930, 1998, n_items), dtype="Int64")
    years[0] = pd.NA  # MovieLens has an item with no release date
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1, dtype=np.int64),
            "title": [f"Movie {i}" for i in range(1, n_items + 1)],
            "release_year": years,
            "genres": [
                list(rng.choice(GENRES, int(rng.integers(1, 4)), replace=False))
                for _ in range(n_items)
            ],
        }
    )
    return MovieLensTables(ratings=ratings, users=users, items=items, source="fixture")


@pytest.fixture(scope="session")
def tiny_tables() -> MovieLensTables:
    return make_tables()


@pytest.fixture(scope="session")
def tiny_dataset(tiny_tables: MovieLensTables) -> Dataset:
    return build_movielens_dataset(tiny_tables)


@pytest.fixture(scope="session")
def trained(
    tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str, int], Path]:
    """trained(model, preset, epochs) -> the directory of that zoo model trained briefly on the
    tiny dataset; each once per session, shared by every test that asks for it."""
    made: dict[tuple[str, str, int], Path] = {}

    def train(model: str, preset: str, epochs: int) -> Path:
        key = (model, preset, epochs)
        if key not in made:
            out = tmp_path_factory.mktemp(f"{model}-{preset}-{epochs}") / f"{model}-{preset}"
            config = TrainConfig(max_epochs=epochs, batch_size=128, learning_rate=3e-3)
            train_models(
                tiny_dataset, [(model, preset)], out, config, with_baselines=False, progress=False
            )
            made[key] = out
        return made[key]

    return train


@pytest.fixture
def train_tiny(tiny_dataset: Dataset) -> Callable[[str, str, Path], Artifact]:
    """Train a zoo model briefly on the tiny dataset, save it to `out`, and load it back."""

    def train(model: str, preset: str, out: Path) -> Artifact:
        config = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
        train_models(
            tiny_dataset, [(model, preset)], out, config, with_baselines=False, progress=False
        )
        return load_artifact(out)

    return train


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A real, empty Redis server of this test's own (tests/redis_process.py)."""
    server = RedisProcess(free_port()).start()
    yield server
    server.stop()
