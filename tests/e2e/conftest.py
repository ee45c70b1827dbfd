"""Fixtures for the e2e tests: a served artifact and a factory of real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_harness import Server, start_server

from recaccel.data.dataset import Dataset
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig


@pytest.fixture(scope="session")
def served_artifact(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DLRM (small preset) trained briefly on the tiny dataset."""
    out = tmp_path_factory.mktemp("served") / "dlrm-small"
    config = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
    train_models(
        tiny_dataset, [("dlrm", "small")], out, config, with_baselines=False, progress=False
    )
    return out


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """start(artifacts, sections, ...) -> Server; every server started is stopped after."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        server = start_server(tmp_path, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)
