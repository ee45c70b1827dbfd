"""Fixtures for the bench tests: the e2e harness (the real server on loopback) and an artifact
for it to serve."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # server_harness


@pytest.fixture(scope="session")
def bench_artifact(trained: Callable[[str, str, int], Path]) -> Path:
    """A DLRM (small preset) trained briefly on the tiny dataset, as tests/e2e serves."""
    return trained("dlrm", "small", 1)
