"""`recaccel deploy ray` end to end: a local Ray cluster on loopback (`ray start --head`, 2
CPUs, HAProxy ingress), the tiny artifact deployed, spoken to through tritonclient and
/v1/rank, replicas added under load and removed after, and the cluster always torn down.

One module-scoped cluster for every test here, in file order; about 60 s of wall time on 2
cores, most of it Ray starting and a second replica loading.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset, example_batch
from recaccel.deploy.ray_cluster import HAPROXY_ENV, free_ports, local_ray_cluster
from recaccel.deploy.ray_serve import RayOptions, deploy_ray
from recaccel.serve.config import ServeConfig, load_serve_config
from recaccel.serve.features import FeatureStore

ray = pytest.importorskip("ray")  # skipped only where Ray itself is not installed
serve = pytest.importorskip("ray.serve")
tritonclient_http = pytest.importorskip("tritonclient.http")

# ray_settings.py maps autoscaler.interval_s onto it: deprecated, yet what Ray 2.60 reads.
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")

MODEL = "ranker"
# A replica HAProxy stops sending to is held open this long before it stops (Ray: 30 s).
CLUSTER_ENV = {**HAPROXY_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
# Generous, and nothing here is timed: a replica's start (a Ray actor, torch, a worker) took
# over 90 s in a fresh-clone `make check` that shared 2 cores with `make demo`.
WAIT_S = 240.0


def _config(port: int) -> ServeConfig:
    """One request per batch (100 rows), so a replica holds two and Ray scales out past 1.4
    (ray_settings.py); a queue of two per replica, so a burst is refused; quick decisions."""
    return load_serve_config(
        None,
        {
            "server": {"port": port},
            "batching": {"max_rows": 100},
            "workers": {"min": 1, "max": 2},
            # A short downscale delay let a dip in load stop the replica still starting.
            "autoscaler": {"upscale_delay_s": 0.5, "downscale_delay_s": 5, "interval_s": 0.5},
            "admission": {"max_queue_requests": 2},
        },
        environ={},
    )


@pytest.fixture(scope="module")
def url(deploy_artifact: Path, tiny_dataset: Dataset) -> Iterator[str]:
    with local_ray_cluster(num_cpus=2, env=CLUSTER_ENV) as cluster:
        try:
            yield deploy_ray(
                deploy_artifact,
                _config(free_ports(1)[0]),
                RayOptions(address=cluster.address, model_name=MODEL),
                features=FeatureStore.from_dataset(tiny_dataset),
            )
        finally:
            ray.shutdown()  # the cluster itself stops with the context, error or not


def _replicas() -> dict[str, int]:
    """Replica states of the deployment, e.g. {"RUNNING": 1, "STARTING": 1}."""
    status = serve.status().applications["recaccel"].deployments["Replica"]
    return {str(state): count for state, count in status.replica_states.items()}


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    t0 = time.monotonic()
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S:.0f} s: {_replicas()}"
        time.sleep(0.25)
    print(f"\n{what}: {time.monotonic() - t0:.1f} s {_replicas()}")


def _rank(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{url}/v1/rank", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_tritonclient_scores_through_ray_serve(url: str, deploy_artifact: Path) -> None:
    client = tritonclient_http.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    artifact = load_artifact(deploy_artifact)
    rows = example_batch(artifact.schema, 7, seed=5)
    tensors = {"dense": rows.dense, "categorical": rows.categorical, "multi_hot": rows.multi_hot}
    inputs = []
    for spec in client.get_model_metadata(MODEL)["inputs"]:
        tensor = tensors[spec["name"]].numpy()
        item = tritonclient_http.InferInput(spec["name"], list(tensor.shape), spec["datatype"])
        item.set_data_from_numpy(tensor, binary_data=True)
        inputs.append(item)
    outputs = [tritonclient_http.InferRequestedOutput("score", binary_data=True)]
    scores = client.infer(MODEL, inputs, outputs=outputs).as_numpy("score")
    with torch.no_grad():
        expected = torch.sigmoid(artifact.model(*rows.as_tuple())).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_rank_answers_the_top_k(url: str) -> None:
    status, _, body = _rank(url, {"user_id": 3, "candidates": [5, 9, 2, 11, 40], "k": 3})
    assert status == 200, body
    answer = json.loads(body)
    assert (answer["model"], answer["candidates"]) == (MODEL, 5)
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert {item["item_id"] for item in answer["items"]} <= {5, 9, 2, 11, 40}


def test_replicas_are_added_under_load_refuse_a_burst_and_are_removed_after(url: str) -> None:
    assert _replicas() == {"RUNNING": 1}
    statuses: Counter[int] = Counter()
    refusals: list[dict[str, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, headers, _ = _rank(url, {"user_id": 1})  # the whole catalogue
            statuses[status] += 1
            if status == 429:
                refusals.append(headers)

    def burst(size: int = 32) -> None:
        start = threading.Barrier(size)

        def one() -> None:
            start.wait()
            status, headers, _ = _rank(url, {"user_id": 2})
            statuses[status] += 1
            if status == 429:
                refusals.append(headers)

        threads = [threading.Thread(target=one) for _ in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # Four clients keep more than the target of 1.4 requests per replica even across each
    # client's own time between requests (two, once the server froze its heap and answered
    # faster, averaged under it), and leave the CPUs room to start the second replica.
    load = [threading.Thread(target=client) for _ in range(4)]
    for thread in load:
        thread.start()
    try:
        burst()
        _wait_for(lambda: _replicas().get("RUNNING", 0) == 2, "second replica under load")
    finally:
        stop.set()
        for thread in load:
            thread.join()
    # Overload is answered 429 with a Retry-After (Ray's queue limit or recaccel's admission),
    # never an error or a reset.
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0 and all("retry-after" in map(str.lower, h) for h in refusals)
    _wait_for(lambda: _replicas().get("RUNNING", 0) == 1, "replica removed when idle")
    _wait_for(lambda: _replicas() == {"RUNNING": 1}, "stopped replica gone")
    assert _rank(url, {"user_id": 1})[0] == 200
