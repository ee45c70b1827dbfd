"""/v1/rank: the request, its checks, the top k and the answer, without a framework per call.

    query = parse_rank_request(body)                 # RequestError (400) says what is wrong
    rows, items = await store.fetch(query.user_id, query.candidates, query.features)
    body = answer_body(name, version, query.user_id, items, scores, k, server_ms)

This is the server's hottest route. FastAPI's parameter solving and a pydantic model per
request cost more than the rest of the Python work on it (about 64 µs a call for an empty
FastAPI route against 12 µs for Starlette's and under 1 µs for a bare ASGI callable, on the
2-core AMD EPYC; docs/serving-plane.md), so the route is a bare ASGI endpoint (app.py) and the
body is checked here, by hand, after one `orjson.loads`. The pydantic models below are what
the OpenAPI document shows: tests hold the two to the same bodies, so what clients and fuzzers
read is what the server does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from recaccel.serve.errors import RequestError


def int64_of(value: Any) -> int | None:
    """`value` as a 64-bit integer, or None (bools too). A number with no fractional part is
    an integer, as JSON Schema counts one (`5.0` is valid where the document says integer)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**63 else None
    return None


def _integral(value: Any) -> Any:
    """`int64_of` for the documented model: the int, or `value` unchanged for the strict check
    after to refuse."""
    whole = int64_of(value)
    return value if whole is None else whole


# Ids and priorities are 64-bit: JSON integers past that range are refused (400). The document
# says at most 2**63 - 1024, the largest one a double holds exactly: JSON tools that compare in
# doubles (JavaScript's, fuzzers' generators) then agree with it; the server takes to 2**63 - 1.
DOUBLE_EXACT_MAX = 2**63 - 1024
Int64 = Annotated[int, Field(ge=-(2**63), le=DOUBLE_EXACT_MAX), BeforeValidator(_integral)]
Count = Annotated[int, Field(ge=1, le=DOUBLE_EXACT_MAX), BeforeValidator(_integral)]
FIELDS = ("user_id", "candidates", "k", "features", "model", "deadline_ms", "priority")


class RankRequest(BaseModel):
    """The body of POST /v1/rank (documentation; `parse_rank_request` checks it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Int64 = Field(description="the user to rank for")
    candidates: list[Int64] | None = Field(
        default=None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="distinct item ids to rank, at most the server's rank.max_candidates "
        "(413 past it); absent: the whole catalogue",
    )
    k: Count | None = Field(default=None, description="how many items to return")
    features: dict[str, Any] | None = Field(
        default=None,
        description="raw feature values in place of the stored ones, where the server's "
        "feature store takes them (a dataset's own store: its raw user fields and time, so an "
        "unknown user can still be ranked; tables and Redis take none)",
    )
    model: str | None = Field(default=None, description="model name; absent: the default")
    deadline_ms: float | None = Field(
        default=None, gt=0, description="answer within this, or get a 429 at once"
    )
    priority: Int64 = Field(default=0, description="higher may use the queue's reserve")


class RankedItem(BaseModel):
    item_id: int
    score: float


class RankResponse(BaseModel):
    model: str
    version: str
    user_id: int
    items: list[RankedItem]
    candidates: int
    server_ms: float


@dataclass(frozen=True)
class RankQuery:
    """A checked rank request."""

    user_id: int
    candidates: list[Any] | None = None  # checked further by the feature store
    k: int | None = None
    features: dict[str, Any] | None = None
    model: str | None = None
    deadline_ms: float | None = None
    priority: int = 0


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _bad(field: str, wanted: str, value: Any) -> RequestError:
    shown = orjson.dumps(value)[:60].decode(errors="replace")
    return RequestError(f"bad rank request: {field} must be {wanted}, got {_kind(value)} {shown}")


def parse_rank_request(body: bytes) -> RankQuery:
    """The checked request in `body`; RequestError (400) naming the field and what it wants."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"bad rank request: Invalid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise RequestError(
            f"bad rank request: the body must be a JSON object, got {_kind(raw)}",
            'e.g. {"user_id": 1, "candidates": [1, 50, 181], "k": 10}',
        )
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RequestError(
            f"bad rank request: unknown field(s) {', '.join(map(repr, unknown))}",
            f"fields: {', '.join(FIELDS)}",
        )
    if "user_id" not in raw:
        raise RequestError("bad rank request: user_id: Field required")
    user_id, candidates, k = raw["user_id"], raw.get("candidates"), raw.get("k")
    features, model, deadline_ms = raw.get("features"), raw.get("model"), raw.get("deadline_ms")
    priority = raw.get("priority", 0)
    user = int64_of(user_id)
    if user is None:
        raise _bad("user_id", "a 64-bit integer", user_id)
    if candidates is not None and not isinstance(candidates, list):
        raise _bad("candidates", "an array of item ids", candidates)
    if k is not None and not ((k := int64_of(k)) is not None and k >= 1):
        raise _bad("k", "an integer >= 1", raw["k"])
    if features is not None and not isinstance(features, dict):
        raise _bad("features", "an object of raw feature values", features)
    if model is not None and not isinstance(model, str):
        raise _bad("model", "a model name", model)
    if deadline_ms is not None and not (
        isinstance(deadline_ms, int | float) and not isinstance(deadline_ms, bool)
    ):
        raise _bad("deadline_ms", "a number of milliseconds > 0", deadline_ms)
    if deadline_ms is not None and not deadline_ms > 0:
        raise _bad("deadline_ms", "a number of milliseconds > 0", deadline_ms)
    rank = int64_of(priority)
    if rank is None:
        raise _bad("priority", "a 64-bit integer", priority)
    return RankQuery(user, candidates, k, features, model, deadline_ms, rank)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k highest scores, highest first; ties in index order (stable)."""
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]


def answer_body(
    model: str,
    version: str,
    user_id: int,
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    server_ms: float,
) -> bytes:
    """The RankResponse JSON: the top k of `items` by `scores`, best first."""
    top = top_k(scores, k)
    ranked = zip(items[top].tolist(), scores[top].tolist(), strict=True)
    return orjson.dumps(
        {
            "model": model,
            "version": version,
            "user_id": user_id,
            "items": [{"item_id": item, "score": score} for item, score in ranked],
            "candidates": len(items),
            "server_ms": round(server_ms, 3),
        }
    )
