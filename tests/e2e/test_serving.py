"""The real server on loopback, spoken to as clients do: tritonclient, /v1/rank, curl-style bad
input, Prometheus. One server (one ONNX Runtime worker) serves the whole module."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from server_harness import Server, assert_drained, start_server

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset
from recaccel.serve.features import FeatureStore

tritonclient_http = pytest.importorskip("tritonclient.http")
MODEL = "ranker"


@pytest.fixture(scope="module")
def server(served_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sections = {
        "workers": {"min": 1, "max": 1},
        "slo": {"p99_ms": 2000, "max_queue_delay_ms": 20},
        "server": {"max_body_bytes": 200_000},
    }
    tmp = tmp_path_factory.mktemp("server")
    running = start_server(tmp, [f"{MODEL}={served_artifact}"], sections)
    yield running
    assert_drained(running)


def _reference(artifact: Path, batch: object) -> np.ndarray:
    model = load_artifact(artifact).model
    with torch.inference_mode():
        inputs = [torch.as_tensor(t) for t in batch.as_tuple()]  # type: ignore[attr-defined]
        return torch.sigmoid(model(*inputs)).numpy()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_speaks_to_it_with_its_defaults(
    server: Server, served_artifact: Path, tiny_dataset: Dataset, binary: bool
) -> None:
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert [i["name"] for i in metadata["inputs"]] == ["dense", "categorical", "multi_hot"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    batch = tiny_dataset.test.features(slice(0, 37))
    inputs = []
    for spec, tensor in zip(metadata["inputs"], batch.as_tuple(), strict=True):
        item = tritonclient_http.InferInput(spec["name"], list(tensor.shape), spec["datatype"])
        item.set_data_from_numpy(tensor.numpy(), binary_data=binary)
        inputs.append(item)
    outputs = [tritonclient_http.InferRequestedOutput("score", binary_data=binary)]
    result = client.infer(MODEL, inputs, outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    np.testing.assert_allclose(
        result.as_numpy("score"), _reference(served_artifact, batch), rtol=0, atol=1e-5
    )


def test_rank_returns_the_top_k_by_the_models_scores(
    server: Server, served_artifact: Path, tiny_dataset: Dataset
) -> None:
    store = FeatureStore.from_dataset(tiny_dataset)
    candidates = [int(i) for i in store.catalogue[:25]]
    status, body = server.post("/v1/rank", {"user_id": 3, "candidates": candidates, "k": 5})
    assert status == 200, body
    answer = json.loads(body)
    batch, items = store.rows(3, candidates)
    expected = _reference(served_artifact, batch)
    top = np.argsort(-expected, kind="stable")[:5]
    assert [i["item_id"] for i in answer["items"]] == [int(items[i]) for i in top]
    np.testing.assert_allclose(
        [i["score"] for i in answer["items"]], expected[top], rtol=0, atol=1e-5
    )
    assert answer["model"] == MODEL and answer["version"] == "1" and answer["candidates"] == 25
    assert answer["server_ms"] > 0
    whole = json.loads(server.post("/v1/rank", {"user_id": 3})[1])
    assert whole["candidates"] == len(store.catalogue) and len(whole["items"]) == 10


BAD_REQUESTS = [
    ("/v1/rank", b"{not json", 400, "Invalid JSON"),
    ("/v1/rank", {"candidates": [1]}, 400, "user_id"),
    ("/v1/rank", {"user_id": 987654}, 404, "unknown user 987654"),
    ("/v1/rank", {"user_id": 3, "candidates": [1, 99999]}, 404, "99999"),
    ("/v1/rank", {"user_id": 3, "candidates": [1, 1]}, 400, "repeat"),
    ("/v1/rank", {"user_id": 3, "candidates": []}, 400, "candidates"),
    ("/v1/rank", {"user_id": 3, "k": 0}, 400, "k"),
    ("/v1/rank", {"user_id": 3, "model": "nope"}, 404, "unknown model 'nope'"),
    ("/v2/models/nope/infer", {"inputs": []}, 404, "unknown model"),
    (f"/v2/models/{MODEL}/infer", b"[1, 2]", 400, "not an object"),
    (
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "dense", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
        400,
        "'categorical' is missing",
    ),
    (
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "dense", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]},
        400,
        "BYTES",
    ),
    ("/v1/rank", b"x" * 300_000, 413, "exceeds the limit"),
    ("/v2/repository/models/ranker/load", {}, 403, "management is off"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_that_says_what_is_wrong(
    server: Server, path: str, body: object, status: int, message: str
) -> None:
    got, answer = server.post(path, body)
    assert got == status, answer
    assert message in json.loads(answer)["error"]
    assert server.get("/v2/health/ready")[0] == 200  # nothing crashed


def test_concurrent_requests_are_merged_into_batches(server: Server) -> None:
    before_batches = server.metric("recaccel_batch_requests_count", model=MODEL)
    before_requests = server.metric("recaccel_batch_requests_sum", model=MODEL)
    start = threading.Barrier(16)

    def rank(user: int) -> int:
        start.wait()
        return server.post("/v1/rank", {"user_id": 1 + user % 30, "k": 3})[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(rank, range(16)))
    assert statuses == [200] * 16
    batches = server.metric("recaccel_batch_requests_count", model=MODEL) - before_batches
    requests = server.metric("recaccel_batch_requests_sum", model=MODEL) - before_requests
    assert requests == 16
    assert batches < requests  # at least one batch carried more than one request


def test_metrics_openapi_and_request_ids(server: Server) -> None:
    status, text = server.get("/metrics")
    assert status == 200
    names = [
        "recaccel_request_duration_seconds", "recaccel_queue_duration_seconds",
        "recaccel_batch_rows", "recaccel_executor_busy_seconds", "recaccel_workers",
        "recaccel_rejected", "recaccel_failed", "recaccel_autoscaler_decisions",
    ]  # fmt: skip
    for name in names:
        assert name in text.decode()
    spec = json.loads(server.get("/openapi.json")[1])
    assert "/v1/rank" in spec["paths"] and "/v2/models/{name}/infer" in spec["paths"]
    import urllib.request

    req = urllib.request.Request(server.url + "/v2/health/live", headers={"X-Request-ID": "abc"})
    with urllib.request.urlopen(req) as response:
        assert response.headers["X-Request-ID"] == "abc"


RANK_BODIES = [
    {"user_id": 3, "candidates": [1, 2, 3, 4, 5, 6], "k": 4},
    {"user_id": 3},
    *[body for path, body, _, _ in BAD_REQUESTS if path == "/v1/rank"],
]


@pytest.mark.parametrize("body", RANK_BODIES, ids=range(len(RANK_BODIES)))
def test_the_fast_lane_answers_as_the_asgi_route_does(server: Server, body: object) -> None:
    """`/v1/rank` takes the fast lane (plane/fast_http.py); with a query string the same
    request goes through uvicorn's ASGI path to the same endpoint: same status, same body
    (but `server_ms`), same request id echoed."""
    headers = {"X-Request-ID": "same-id"}
    fast = server.post("/v1/rank", body, headers)
    routed = server.post("/v1/rank?lane=asgi", body, headers)
    assert fast[0] == routed[0]
    fast_answer, routed_answer = json.loads(fast[1]), json.loads(routed[1])
    for answer in (fast_answer, routed_answer):
        answer.pop("server_ms", None)
    assert fast_answer == routed_answer


def test_made_up_model_names_do_not_become_metric_labels(server: Server) -> None:
    """Each unknown name a client sends is a 404, not a new time series (found by the fuzzer:
    every random name in an infer path had become a `model` label)."""
    for name in ("made-up-1", "made-up-2"):
        assert server.post(f"/v2/models/{name}/infer", {"inputs": []})[0] == 404
        assert server.post("/v1/rank", {"user_id": 3, "model": name})[0] == 404
    _, text = server.get("/metrics")
    assert b"made-up" not in text


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/rank?lane=asgi"])
def test_a_requests_own_deadline_is_kept_over_http(server: Server, path: str) -> None:
    """`deadline_ms` replaces the server's SLO for that request (2 s here): a request that
    cannot be answered within 0.01 ms is refused as late at once; with a minute, and a
    priority, it is answered."""
    status, body = server.post(path, {"user_id": 3, "deadline_ms": 0.01})
    answer = json.loads(body)
    assert status == 429 and answer["reason"] == "deadline", answer
    status, body = server.post(path, {"user_id": 3, "deadline_ms": 60_000, "priority": 5})
    assert status == 200, body
