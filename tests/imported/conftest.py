"""Fixtures: the user's model of user_models.py, written and exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from user_models import USER_MODULE, UserModel, make_user_model


@pytest.fixture(scope="session")
def user_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("byom")
    (root / "byom_user_model.py").write_text(USER_MODULE)
    return root


@pytest.fixture(scope="session")
def user_model(user_root: Path) -> UserModel:
    return make_user_model(user_root / "logit", probability=False)


@pytest.fixture(scope="session")
def probability_model(user_root: Path) -> UserModel:
    return make_user_model(user_root / "probability", probability=True)
