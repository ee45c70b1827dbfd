"""POST /v1/rank's endpoint around its parts: a request admission refuses is refused before a
remote feature store is read, and after the rows for a store in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from recaccel.data.rows import Rows
from recaccel.serve.config import ServeConfig
from recaccel.serve.errors import OverloadedError
from recaccel.serve.rank_route import RankEndpoint


class Store:
    """A feature source that counts its reads."""

    schema = None
    max_candidates = 100

    def __init__(self, remote: bool) -> None:
        self.remote = remote
        self.reads = 0

    async def fetch(
        self, user_id: int, item_ids: Sequence[int] | None, raw: Mapping[str, object] | None
    ) -> tuple[Rows, np.ndarray]:
        self.reads += 1
        ids = np.asarray(item_ids, dtype=np.int64)
        n = len(ids)
        empty = Rows(np.zeros((n, 1), np.float32), np.zeros((n, 1), np.int64), np.zeros((n, 1, 1)))
        return empty, ids


class Overloaded:
    """A deployment whose admission refuses every request."""

    name, version = "m", "1"

    def __init__(self) -> None:
        self.admitted_rows: list[int] = []

    def admit(self, rows: int, deadline: float, priority: int = 0, now: Any = None) -> int:
        self.admitted_rows.append(rows)
        raise OverloadedError("queue full", 1.0, code="server_overloaded")

    async def score(self, rows: Rows, deadline: float, priority: int = 0) -> np.ndarray:
        self.admit(len(rows), deadline, priority)
        raise AssertionError("unreachable")


class Scoring(Overloaded):
    """A deployment that admits everything and keeps the rows it is asked to score."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[Rows] = []

    def admit(self, rows: int, deadline: float, priority: int = 0, now: Any = None) -> int:
        return 1

    async def score(self, rows: Rows, deadline: float, priority: int = 0) -> np.ndarray:
        self.scored.append(rows)
        return np.linspace(0.1, 0.9, len(rows), dtype=np.float32)


class Repository:
    def __init__(self, store: Store, deployment: Overloaded) -> None:
        self.features = store
        self._deployment = deployment

    def get(self, name: str | None, version: str | None) -> Overloaded:
        return self._deployment


@pytest.mark.parametrize("remote", [True, False])
def test_a_refused_request_reads_a_remote_store_never_and_a_local_one_once(remote: bool) -> None:
    store, deployment = Store(remote), Overloaded()
    client = TestClient(RankEndpoint(Repository(store, deployment), ServeConfig()))  # type: ignore[arg-type]
    answer = client.post("/v1/rank", json={"user_id": 1, "candidates": [4, 5, 6]})
    assert answer.status_code == 429 and answer.json()["reason"] == "server_overloaded"
    assert store.reads == (0 if remote else 1)
    assert deployment.admitted_rows == [3]  # judged on the request's own candidate count


def test_a_candidate_list_past_the_limit_is_left_to_the_store_to_refuse_as_too_large() -> None:
    """Not a 429 first: the store's 413 says what to fix (this fake store reads it anyway)."""
    store, deployment = Store(remote=True), Overloaded()
    client = TestClient(RankEndpoint(Repository(store, deployment), ServeConfig()))  # type: ignore[arg-type]
    client.post("/v1/rank", json={"user_id": 1, "candidates": list(range(101))})
    assert store.reads == 1  # no admission before the read


def test_a_rank_requests_rows_reach_the_deployment_as_one_request() -> None:
    """So an executor with reuse computes the user's part once for all its candidates."""
    store, deployment = Store(remote=False), Scoring()
    client = TestClient(RankEndpoint(Repository(store, deployment), ServeConfig()))  # type: ignore[arg-type]
    answer = client.post("/v1/rank", json={"user_id": 1, "candidates": [4, 5, 6, 7]})
    assert answer.status_code == 200, answer.text
    (rows,) = deployment.scored
    assert rows.requests is not None and rows.requests.tolist() == [4]
