"""Fixtures for the e2e tests: a served artifact and a factory of real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_harness import Server, start_server


@pytest.fixture(scope="session")
def served_artifact(trained: Callable[[str, str, int], Path]) -> Path:
    """A DLRM (small preset) trained briefly on the tiny dataset."""
    return trained("dlrm", "small", 2)


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
