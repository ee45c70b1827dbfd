"""/v1/rank's hand-written body check agrees with the pydantic model the OpenAPI document shows,
and every refusal names the field and what it wants; top-k and the answer, worked by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from recaccel.serve.errors import RequestError
from recaccel.serve.rank import RankQuery, RankRequest, answer_body, parse_rank_request, top_k

ACCEPTED: list[dict[str, Any]] = [
    {"user_id": 1},
    {"user_id": -5, "candidates": [1, 2, 3], "k": 2},
    {"user_id": 1, "candidates": None, "k": None, "features": None, "model": None},
    {"user_id": 1, "features": {"age": 31}, "model": "ranker", "deadline_ms": 20},
    {"user_id": 1, "deadline_ms": 0.5, "priority": -3},
    {"user_id": 1.0, "k": 3.0, "priority": -2.0},  # JSON Schema's integers include 1.0
    {"user_id": 2**63 - 1024, "priority": -(2**63)},
]
REFUSED: list[tuple[Any, str]] = [
    ([1, 2], "must be a JSON object"),
    ("text", "must be a JSON object"),
    ({}, "user_id: Field required"),
    ({"candidates": [1]}, "user_id: Field required"),
    ({"user_id": "1"}, "user_id must be a 64-bit integer"),
    ({"user_id": 1.5}, "user_id must be a 64-bit integer"),
    ({"user_id": True}, "user_id must be a 64-bit integer"),
    ({"user_id": 2**63}, "user_id must be a 64-bit integer"),
    ({"user_id": 1, "candidates": 5}, "candidates must be an array"),
    ({"user_id": 1, "candidates": {"a": 1}}, "candidates must be an array"),
    ({"user_id": 1, "k": 0}, "k must be an integer >= 1"),
    ({"user_id": 1, "k": 2.5}, "k must be an integer >= 1"),
    ({"user_id": 1, "k": "3"}, "k must be an integer >= 1"),
    ({"user_id": 1, "features": [1]}, "features must be an object"),
    ({"user_id": 1, "model": 3}, "model must be a model name"),
    ({"user_id": 1, "deadline_ms": 0}, "deadline_ms must be a number of milliseconds > 0"),
    ({"user_id": 1, "deadline_ms": -1}, "deadline_ms must be a number of milliseconds > 0"),
    ({"user_id": 1, "deadline_ms": "5"}, "deadline_ms must be a number of milliseconds > 0"),
    ({"user_id": 1, "deadline_ms": False}, "deadline_ms must be a number of milliseconds > 0"),
    ({"user_id": 1, "priority": 1.5}, "priority must be a 64-bit integer"),
    ({"user_id": 1, "priority": None}, "priority must be a 64-bit integer"),
    ({"user_id": 1, "candidate": [1]}, "unknown field(s) 'candidate'"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_a_body_the_documented_model_accepts_is_accepted(body: dict[str, Any]) -> None:
    RankRequest.model_validate_json(orjson.dumps(body))  # the OpenAPI model takes it
    query = parse_rank_request(orjson.dumps(body))
    assert query.user_id == body["user_id"]
    assert query.candidates == body.get("candidates")
    assert query.k == body.get("k") and query.model == body.get("model")
    assert query.priority == body.get("priority", 0)


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_a_body_the_documented_model_refuses_is_refused_with_the_field_named(
    body: Any, message: str
) -> None:
    with pytest.raises(ValidationError):
        RankRequest.model_validate_json(orjson.dumps(body))
    with pytest.raises(RequestError) as refused:
        parse_rank_request(orjson.dumps(body))
    assert refused.value.status == 400
    assert message in refused.value.message


def test_broken_json_is_refused_as_invalid_json() -> None:
    with pytest.raises(RequestError, match="Invalid JSON"):
        parse_rank_request(b"{not json")


def test_the_parsed_query_carries_every_field() -> None:
    body = {
        "user_id": 7,
        "candidates": [3, 1],
        "k": 1,
        "features": {"age": 30},
        "model": "m",
        "deadline_ms": 12.5,
        "priority": 2,
    }
    assert parse_rank_request(orjson.dumps(body)) == RankQuery(
        7, [3, 1], 1, {"age": 30}, "m", 12.5, 2
    )


@pytest.mark.parametrize(
    ("scores", "k", "expected"),
    [
        ([0.1, 0.9, 0.5], 2, [1, 2]),
        ([0.1, 0.9, 0.5], 3, [1, 2, 0]),
        ([0.1, 0.9, 0.5], 10, [1, 2, 0]),  # k past the candidates: all of them
        ([0.5, 0.5, 0.9, 0.5], 3, [2, 0, 1]),  # ties in index order
        ([0.3], 1, [0]),
    ],
)
def test_top_k_is_the_highest_scores_best_first(
    scores: list[float], k: int, expected: list[int]
) -> None:
    assert top_k(np.asarray(scores, dtype=np.float32), k).tolist() == expected


def test_the_answer_is_the_top_k_items_with_their_scores() -> None:
    items = np.array([10, 20, 30, 40])
    scores = np.array([0.25, 0.75, 0.5, 0.125], dtype=np.float32)
    answer = orjson.loads(answer_body("ranker", "2", 5, items, scores, 2, 1.23456))
    assert answer == {
        "model": "ranker",
        "version": "2",
        "user_id": 5,
        "items": [{"item_id": 20, "score": 0.75}, {"item_id": 30, "score": 0.5}],
        "candidates": 4,
        "server_ms": 1.235,
    }
