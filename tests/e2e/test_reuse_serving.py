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
