"""A model of the user's own, imported, served by `recaccel serve` from the user's own users and
items tables: /v1/rank answers with the model's scores of the rows the tables make."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from load import Outcome, Tally
from redis_process import RedisProcess
from server_harness import wait_for
from torch import nn
from torch.export import Dim

from recaccel.artifact import load_artifact
from recaccel.cli import main
from recaccel.serve.table_source import TableSource
from recaccel.train.imports import import_artifact

SCHEMA_FILE = textwrap.dedent(
    """
    [[features]]
    name = "user_index"
    kind = "categorical"
    cardinality = 50
    side = "request"
    [[features]]
    name = "item_index"
    kind = "categorical"
    cardinality = 200
    [[features]]
    name = "price"
    kind = "dense"

    [model]
    [[model.inputs]]
    name = "ids"
    features = ["user_index", "item_index"]
    [[model.inputs]]
    name = "price"
    features = ["price"]
    """
)


class TwoTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(50, 8)
        self.items = nn.Embedding(200, 8)
        self.price = nn.Linear(1, 1)

    def forward(self, ids: torch.Tensor, price: torch.Tensor) -> torch.Tensor:
        affinity = (self.users(ids[:, 0]) * self.items(ids[:, 1])).sum(dim=1, keepdim=True)
        return affinity + self.price(price)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An imported torch.export model and its tables: users 1000..1049, items 5000..5199."""
    tmp = tmp_path_factory.mktemp("imported-serving")
    torch.manual_seed(0)
    model = TwoTower().eval()
    batch = Dim("batch", min=1)
    example = (torch.randint(0, 50, (4, 2)), torch.randn(4, 1))
    torch.export.save(
        torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch})),
        tmp / "model.pt2",
    )
    (tmp / "schema.toml").write_text(SCHEMA_FILE)
    import_artifact(str(tmp / "model.pt2"), tmp / "schema.toml", tmp / "artifact")
    rng = np.random.default_rng(0)
    pq.write_table(
        pa.table({"user_id": np.arange(1000, 1050), "user_index": np.arange(50)}),
        tmp / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": np.arange(5000, 5200),
                "item_index": np.arange(200),
                "price": rng.normal(size=200).astype(np.float32),
            }
        ),
        tmp / "items.parquet",
    )
    return {
        "artifact": tmp / "artifact",
        "users": tmp / "users.parquet",
        "items": tmp / "items.parquet",
    }


def test_rank_serves_an_imported_model_from_the_users_own_tables(
    imported: dict[str, Path], server_factory: Any
) -> None:
    sections = {
        "rank": {"users": str(imported["users"]), "items": str(imported["items"])},
        "workers": {"executors": [{"backend": "onnxruntime"}]},
        "plane": {"processes": 1},
    }
    server = server_factory([f"mine={imported['artifact']}"], sections)
    candidates = [5003, 5150, 5042, 5199]
    status, body = server.post("/v1/rank", {"user_id": 1007, "candidates": candidates, "k": 4})
    assert status == 200, body
    answer = json.loads(body)
    artifact = load_artifact(imported["artifact"])
    source = TableSource.from_files(artifact.schema, imported["users"], imported["items"])
    rows, _ = source.rows(1007, candidates)
    with torch.no_grad():
        logits = artifact.model(*(torch.from_numpy(a) for a in rows.as_tuple()))
    expected = dict(zip(candidates, torch.sigmoid(logits).tolist(), strict=True))
    got = {item["item_id"]: item["score"] for item in answer["items"]}
    assert got.keys() == expected.keys()
    for item, score in got.items():
        assert score == pytest.approx(expected[item], abs=1e-5)
    assert [i["item_id"] for i in answer["items"]] == sorted(expected, key=lambda i: -expected[i])
    # The tables' own refusals reach the client as theirs.
    status, body = server.post("/v1/rank", {"user_id": 7, "candidates": [5003]})
    assert status == 404 and b"unknown user 7" in body
    status, body = server.post("/v1/rank", {"user_id": 1007, "candidates": [5003, 42]})
    assert status == 404 and b"42" in body


def test_rank_serves_features_from_redis_and_answers_503_while_redis_is_down(
    imported: dict[str, Path],
    server_factory: Any,
    redis_server: RedisProcess,
    capsys: Any,
    report_requests: Any,
) -> None:
    """`features push` writes the user's tables to a real Redis; `serve --redis` ranks from it
    as from the tables; Redis killed mid-load gives 503s with reason feature_store and no
    other 5xx, no request left unanswered; Redis back, ranking is back."""
    assert main(
        ["features", "push", str(imported["artifact"]), "--users", str(imported["users"]),
         "--items", str(imported["items"]), "--redis", redis_server.url]
    ) == 0  # fmt: skip
    assert "wrote 50 user and 200 item hashes" in capsys.readouterr().out
    sections = {
        "rank": {"redis": redis_server.url, "redis_cache_ttl_s": 0, "redis_budget_ms": 2000},
        "workers": {"executors": [{"backend": "onnxruntime"}]},
        "plane": {"processes": 1},
    }
    server = server_factory([f"mine={imported['artifact']}"], sections)
    tables = start_tables_twin(imported, server_factory)
    query = {"user_id": 1007, "candidates": [5003, 5150, 5042, 5199], "k": 4}
    status, body = server.post("/v1/rank", query)
    assert status == 200, body
    assert json.loads(body)["items"] == json.loads(tables.post("/v1/rank", query)[1])["items"]
    status, body = server.post("/v1/rank", {"user_id": 7, "candidates": [5003]})
    assert status == 404 and b"unknown user 7" in body

    outcomes: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            candidates = rng.choice(np.arange(5000, 5200), 20, replace=False).tolist()
            try:
                outcomes.append(
                    server.post("/v1/rank", {"user_id": 1007, "candidates": candidates})
                )
            except OSError as error:  # no answer at all (a timeout, a reset): counted, as 0
                outcomes.append((0, repr(error).encode()))

    clients = [threading.Thread(target=load, args=(seed,)) for seed in range(3)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: len(outcomes) > 20, 60, "ranks before Redis is killed")
        redis_server.stop()
        down = len(outcomes)
        wait_for(lambda: len(outcomes) > down + 20, 60, "ranks while Redis is down")
        while_down = outcomes[down + 5 :]  # past the requests in flight at the kill
        restarted = len(outcomes)
        redis_server.start()  # empty until pushed again: its ids unknown (404) till then
        main(["features", "push", str(imported["artifact"]), "--users", str(imported["users"]),
              "--items", str(imported["items"]), "--redis", redis_server.url])  # fmt: skip
        back = len(outcomes) + len(clients)  # past those in flight while it was refilled
        wait_for(lambda: len(outcomes) > back + 20, 60, "ranks after Redis is back")
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    report_requests(
        "feature store (Redis) killed under load, then back",
        Tally.of(Outcome(0, 0, s or None, json.loads(b) if s else {}) for s, b in outcomes),
    )
    statuses = [status for status, _ in outcomes[:restarted] + outcomes[back:]]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    refilling = {status for status, _ in outcomes[restarted:back]}
    assert refilling <= {200, 404, 503}, sorted(refilling)
    assert {status for status, _ in while_down} == {503}
    refusal = json.loads(while_down[-1][1])
    assert refusal["reason"] == "feature_store" and redis_server.url in refusal["error"]
    assert outcomes[-1][0] == 200, outcomes[-1]


def start_tables_twin(imported: dict[str, Path], server_factory: Any) -> Any:
    """The same model served from the same tables held in memory: the answer to match."""
    sections = {
        "rank": {"users": str(imported["users"]), "items": str(imported["items"])},
        "workers": {"executors": [{"backend": "onnxruntime"}]},
        "plane": {"processes": 1},
    }
    return server_factory([f"mine={imported['artifact']}"], sections)
