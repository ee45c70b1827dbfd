"""A real server with request-level reuse (`reuse = true`): concurrent rank requests of different
users, merged into batches, are each answered with the model's own scores for that user, in
process and through worker processes; an OIP batch (no users) is scored exactly too."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from server_harness import Server, assert_drained

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset
from recaccel.serve.features import FeatureStore

MODEL = "ranker"
CONCURRENT = 12


def _scores(artifact: Path, rows: object) -> np.ndarray:
    model = load_artifact(artifact).model
    with torch.inference_mode():
        inputs = [torch.as_tensor(t) for t in rows.as_tuple()]  # type: ignore[attr-defined]
        return torch.sigmoid(model(*inputs)).numpy()


@pytest.mark.parametrize("execution", ["in-process", "workers"])
def test_each_user_in_a_merged_batch_gets_the_models_scores(
    server_factory: object,
    served_artifact: Path,
    tiny_dataset: Dataset,
    execution: str,
) -> None:
    sections = {
        "plane": {"processes": 1, "execution": execution},
        "workers": {"min": 1, "max": 1, "executors": [{"backend": "onnxruntime", "reuse": True}]},
        "slo": {"p99_ms": 2000, "max_queue_delay_ms": 20},
    }
    server: Server = server_factory([f"{MODEL}={served_artifact}"], sections)  # type: ignore[operator]
    store = FeatureStore.from_dataset(tiny_dataset)
    catalogue = [int(i) for i in store.catalogue]
    start = threading.Barrier(CONCURRENT)

    def rank(user: int) -> tuple[int, dict[str, object]]:
        candidates = catalogue[user % 7 : user % 7 + 15 + user]  # lists of different lengths
        start.wait()
        status, body = server.post(
            "/v1/rank", {"user_id": user, "candidates": candidates, "k": len(candidates)}
        )
        return status, json.loads(body)

    before = server.metric("recaccel_batch_requests_count", model=MODEL)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(rank, range(1, CONCURRENT + 1)))
    batches = server.metric("recaccel_batch_requests_count", model=MODEL) - before
    assert batches < CONCURRENT  # some batch carried several users' requests
    for user, (status, answer) in enumerate(answers, start=1):
        assert status == 200, answer
        items = [i["item_id"] for i in answer["items"]]  # type: ignore[index]
        rows, ids = store.rows(user, items)
        expected = _scores(served_artifact, rows)
        got = [i["score"] for i in answer["items"]]  # type: ignore[index]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"user {user}")
        assert list(ids) == items
    # The OIP route has no users: its rows are each their own request, scored exactly.
    batch = tiny_dataset.test.features(slice(0, 9))
    inputs = [
        {"name": name, "shape": list(t.shape), "datatype": dtype, "data": t.flatten().tolist()}
        for name, t, dtype in zip(
            ("dense", "categorical", "multi_hot"),
            batch.as_tuple(),
            ("FP32", "INT64", "INT64"),
            strict=True,
        )
    ]
    status, body = server.post(f"/v2/models/{MODEL}/infer", {"inputs": inputs})
    assert status == 200, body
    scores = json.loads(body)["outputs"][0]["data"]
    np.testing.assert_allclose(scores, _scores(served_artifact, batch), rtol=0, atol=1e-5)
    assert_drained(server)


def _cache_lookups(server: Server) -> tuple[float, float]:
    hits, misses = (
        server.metric("recaccel_part_cache_lookups_total", model=MODEL, result=result)
        for result in ("hit", "miss")
    )
    return hits, misses


@pytest.mark.parametrize("execution", ["in-process", "workers"])
def test_the_part_cache_serves_a_returning_user_and_starts_empty_after_a_hot_swap(
    server_factory: object,
    served_artifact: Path,
    trained: object,
    tiny_dataset: Dataset,
    execution: str,
) -> None:
    """The second request of a user is a hit scored as the model scores it; after a swap to
    a model of the same family and shapes (other weights) the same user is scored by the new
    model, a miss: no request part of version 1 outlives it."""
    from server_harness import TOKEN

    retrained: Path = trained("dlrm", "small", 3)  # type: ignore[operator]
    sections = {
        "plane": {"processes": 1, "execution": execution},
        "workers": {"min": 1, "max": 1, "executors": [{"backend": "onnxruntime", "reuse": True}]},
        "part_cache": {"ttl_s": 600},
        "server": {"management": True},
    }
    server: Server = server_factory(  # type: ignore[operator]
        [f"{MODEL}={served_artifact}"], sections, env={"RECACCEL_TOKEN": TOKEN}
    )
    store = FeatureStore.from_dataset(tiny_dataset)
    candidates = [int(i) for i in store.catalogue[:25]]
    rows, _ = store.rows(3, candidates)
    before, after = (_scores(a, rows) for a in (served_artifact, retrained))
    assert np.abs(before - after).max() > 1e-3  # the two versions are told apart

    def rank() -> np.ndarray:
        status, body = server.post(
            "/v1/rank", {"user_id": 3, "candidates": candidates, "k": len(candidates)}
        )
        assert status == 200, body
        scores = {i["item_id"]: i["score"] for i in json.loads(body)["items"]}
        return np.array([scores[c] for c in candidates])

    start = _cache_lookups(server)  # the startup batches' all-zero user
    np.testing.assert_allclose(rank(), before, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rank(), before, rtol=0, atol=1e-5)
    hits, misses = np.subtract(_cache_lookups(server), start)
    assert (hits, misses) == (1, 1)
    assert server.metric("recaccel_part_cache_hit_age_seconds_total", model=MODEL) > 0
    status, body = server.post(
        f"/v2/repository/models/{MODEL}/load",
        {"parameters": {"artifact": str(retrained)}},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200, body
    swapped = _cache_lookups(server)
    np.testing.assert_allclose(rank(), after, rtol=0, atol=1e-5)
    hits, misses = np.subtract(_cache_lookups(server), swapped)
    assert misses == 1 and hits == 0
    assert_drained(server)
