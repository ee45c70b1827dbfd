"""Fixtures for the deploy tests: one small artifact trained briefly on the tiny dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def deploy_artifact(trained: Callable[[str, str, int], Path]) -> Path:
    """A DeepFM (small preset) after two epochs: trained weights, so scores spread."""
    return trained("deepfm", "small", 2)
