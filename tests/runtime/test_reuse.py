"""Executors with request-level reuse (runtime/reuse.py) score a batch of several rank requests
as the model does, on every backend that runs the split twin; rows carry their request grouping
through slicing and batching; the backends that do not run it refuse it by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.data.rows import Rows
from recaccel.models.split import joined_rows
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, check_config, load_executor

SPLIT_BACKENDS = ["torch-eager", "onnxruntime", "torch-aot"]
COUNTS = (20, 1, 29)  # three requests' candidate rows


def _three_requests(dataset: Dataset) -> Rows:
    """50 test rows as three rank requests: each run of rows holds its first row's user."""
    candidates = dataset.test.features(slice(0, sum(COUNTS))).as_tuple()
    owner = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
    starts = torch.cumsum(torch.tensor(COUNTS), 0) - torch.tensor(COUNTS)
    request = tuple(t[starts] for t in candidates)
    rows = joined_rows(dataset.schema, request, candidates, owner)
    return Rows(*(t.numpy() for t in rows), np.array(COUNTS))


# torch-aot on one family only: each compile of a form takes ~20 s of the suite.
CASES = [("dlrm", b) for b in SPLIT_BACKENDS if b != "torch-aot"] + [
    ("deepfm", b) for b in SPLIT_BACKENDS
]


@pytest.mark.parametrize(("family", "backend"), CASES)
def test_reuse_scores_several_requests_as_the_model_does(
    trained: dict[str, Artifact], tiny_dataset: Dataset, backend: str, family: str
) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    artifact = trained[family]
    rows = _three_requests(tiny_dataset)
    ungrouped = Rows(*rows.as_tuple())
    with load_executor(artifact.path, ExecutorConfig(backend)) as plain:
        expected = plain.run(ungrouped)
    with load_executor(artifact.path, ExecutorConfig(backend, reuse=True)) as split:
        assert split.name.endswith("/reuse")
        np.testing.assert_allclose(split.run(rows), expected, rtol=0, atol=1e-5)
        # Without a grouping each row is its own request: exact, no saving.
        np.testing.assert_allclose(split.run(ungrouped), expected, rtol=0, atol=1e-5)
        # A grouping that lies (one user for rows of three) is read as given: a check that the
        # executor really takes each request's row once rather than every row's own columns.
        lying = Rows(*rows.as_tuple(), np.array([len(rows)]))
        assert not np.allclose(split.run(lying)[COUNTS[0] :], expected[COUNTS[0] :], atol=1e-4)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (ExecutorConfig("openvino", reuse=True), "does not run on openvino at fp32"),
        (ExecutorConfig("torch-compile", reuse=True), "does not run on torch-compile"),
        (ExecutorConfig("onnxruntime", precision="int8-dynamic", reuse=True), "int8-dynamic"),
    ],
)
def test_a_backend_without_the_split_refuses_reuse(config: ExecutorConfig, says: str) -> None:
    with pytest.raises(ExecutorError, match=says) as caught:
        check_config(config, cuda_devices=0)
    assert "torch-eager, torch-aot, onnxruntime" in caught.value.hint


def test_a_slice_keeps_the_requests_it_cuts_through() -> None:
    rows = Rows(*(np.zeros((10, 1)) for _ in range(3)), np.array([4, 1, 5]))
    assert rows[2:7].requests.tolist() == [2, 1, 2]  # type: ignore[union-attr]
    assert rows[4:5].requests.tolist() == [1]  # type: ignore[union-attr]
    assert rows[0:4].requests.tolist() == [4]  # type: ignore[union-attr]
    assert Rows(*(np.zeros((3, 1)) for _ in range(3)))[1:2].requests is None


def test_a_batch_of_requests_keeps_each_ones_rows_together() -> None:
    grouped = Rows(*(np.zeros((5, 1)) for _ in range(3)), np.array([2, 3]))
    loose = Rows(*(np.zeros((2, 1)) for _ in range(3)))  # an OIP batch: each row its own
    batch = Rows.concat([grouped, loose, grouped.as_one_request()])
    assert batch.requests.tolist() == [2, 3, 1, 1, 5]  # type: ignore[union-attr]
    starts, owner = batch.request_starts()
    assert starts.tolist() == [0, 2, 5, 6, 7]
    assert owner.tolist() == [0, 0, 1, 1, 1, 2, 3, 4, 4, 4, 4, 4]
    assert Rows.concat([loose, loose]).requests is None


def test_reuse_on_onnxruntime_names_a_pytorch_only_op(
    trained: dict[str, Artifact], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from recaccel.models.quant.dense import quantize_dense
    from recaccel.runtime.export import UnsupportedOnBackendError

    artifact = trained["deepfm"]
    model, _ = quantize_dense(artifact.model, "int8-dynamic")
    quantized = dataclasses.replace(artifact, model=model, path=tmp_path)
    with pytest.raises(UnsupportedOnBackendError, match="the split twin") as caught:
        load_executor(quantized, ExecutorConfig("onnxruntime", reuse=True))
    assert "torch-eager" in caught.value.hint


def test_a_servers_latency_model_times_each_batch_as_one_rank_request(
    tiny_dataset: Dataset,
) -> None:
    """So an executor with reuse is timed as /v1/rank runs it, its request part once."""
    from recaccel.serve.worker_spec import startup_latency

    seen: list[Rows] = []

    class Recording:
        def run(self, batch: Rows) -> np.ndarray:
            seen.append(batch)
            return np.zeros(len(batch), np.float32)

    startup_latency(Recording(), tiny_dataset.schema, (1, 64))
    assert {len(b) for b in seen} == {1, 64}
    assert all(b.requests is not None and b.requests.tolist() == [len(b)] for b in seen)
