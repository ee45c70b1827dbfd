"""The peer to beat: the /v1/rank server a competent engineer writes in an afternoon.

Starlette + orjson + ONNX Runtime (one intra-op thread), the user and item features as
in-memory numpy tables indexed by id, each request scored as one batch of its own candidates
(no cross-request batching, no admission control), top-k by `np.argsort`. Run it as
`uvicorn --workers 2` so both processes accept on one socket:

    PEER_ARTIFACT=artifacts/dlrm-heavy-optimized/02-prune-1 PEER_ONNX=path/model.onnx \
        .venv/bin/uvicorn --app-dir scripts/peers handwritten_server:app --workers 2 \
        --loop uvloop --http httptools --no-access-log --port 8000

It is recaccel's competitor in `scripts/compare_stacks.py`, not part of recaccel: it uses
recaccel only at start-up, to encode the same users and items the same way (so its scores
equal recaccel's), and never on the request path.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recaccel.data.movielens_encoding import CATEGORICAL, ITEM_CATEGORICAL, USER_CATEGORICAL
from recaccel.data.registry import DatasetOptions, load_dataset

ITEM_COLUMNS = [CATEGORICAL.index(name) for name in ITEM_CATEGORICAL]
USER_COLUMNS = [CATEGORICAL.index(name) for name in USER_CATEGORICAL]
USER_DENSE, ITEM_DENSE = [0, 3], [1, 2]  # age, tenure; release year, movie age


def _tables() -> tuple[np.ndarray, ...]:
    """Per-id tables at the dataset's last timestamp, built once with recaccel's encoding."""
    encoding = load_dataset("movielens-100k", DatasetOptions(progress=False)).encoding
    assert encoding is not None
    users, items = encoding.users, encoding.items
    now = np.array([float(encoding.last_timestamp)])
    all_users, all_items = np.arange(len(users.ids)), np.arange(len(items.ids))
    u_dense, u_cat, _ = encoding.encode_rows(users, all_users, np.zeros_like(all_users), now)
    i_dense, i_cat, i_genres = encoding.encode_rows(users, np.zeros(1, np.int64), all_items, now)
    user_dense = np.zeros((users.ids.max() + 1, 2), np.float32)
    user_cat = np.zeros((users.ids.max() + 1, len(USER_COLUMNS)), np.int64)
    user_dense[users.ids], user_cat[users.ids] = u_dense[:, USER_DENSE], u_cat[:, USER_COLUMNS]
    item_dense = np.zeros((items.ids.max() + 1, 2), np.float32)
    item_cat = np.zeros((items.ids.max() + 1, len(ITEM_COLUMNS)), np.int64)
    item_genres = np.zeros((items.ids.max() + 1, *i_genres.shape[1:]), np.int64)
    item_dense[items.ids], item_cat[items.ids] = i_dense[:, ITEM_DENSE], i_cat[:, ITEM_COLUMNS]
    item_genres[items.ids] = i_genres
    return user_dense, user_cat, item_dense, item_cat, item_genres


USER_DENSE_T, USER_CAT_T, ITEM_DENSE_T, ITEM_CAT_T, ITEM_GENRES_T = _tables()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["PEER_ONNX"], options, providers=["CPUExecutionProvider"])


async def rank(request: Request) -> Response:
    asked = orjson.loads(await request.body())
    user = int(asked["user_id"])
    items = np.asarray(asked["candidates"], dtype=np.int64)
    n = len(items)
    dense = np.empty((n, 4), np.float32)
    dense[:, USER_DENSE] = USER_DENSE_T[user]
    dense[:, ITEM_DENSE] = ITEM_DENSE_T[items]
    categorical = np.empty((n, len(CATEGORICAL)), np.int64)
    categorical[:, USER_COLUMNS] = USER_CAT_T[user]
    categorical[:, ITEM_COLUMNS] = ITEM_CAT_T[items]
    feeds = {"dense": dense, "categorical": categorical, "multi_hot": ITEM_GENRES_T[items]}
    logits = session.run(None, feeds)[0].reshape(-1)
    top = np.argsort(-logits)[: int(asked.get("k") or 10)]
    scores = 1.0 / (1.0 + np.exp(-logits[top].astype(np.float64)))
    ranked = zip(items[top].tolist(), scores.tolist(), strict=True)
    answer = {
        "user_id": user,
        "items": [{"item_id": item, "score": score} for item, score in ranked],
        "candidates": n,
        "server_ms": 0.0,
    }
    return Response(orjson.dumps(answer), media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/v1/rank", rank, methods=["POST"]), Route("/ready", ready)])
