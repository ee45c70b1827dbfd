"""Accuracy of what is served: the test split's AUC from the scores a running server returns.

    accuracy = served_accuracy(server.url, "02-prune-1", dataset.test)
    accuracy.auc, accuracy.scores

Why the Open Inference Protocol and not /v1/rank: POST /v2/models/{name}/infer takes the
model's own input tensors, so the bench sends the test split's encoded rows as they are — the
very rows the artifact's recorded test AUC was computed on — and the served AUC can differ from
that record only by what the serving runtime computes differently (backend, precision, a
quantized form): the quantity this check exists for. /v1/rank would rebuild each row from the
feature store (user, item, the row's timestamp), a second encoding path with its own tests,
and would need one request per row with a candidate list of one: 10,000 requests instead of
10. Requests carry 1,000 rows in Triton's binary tensor format (no per-number JSON work), and
an OIP `timeout` of a minute so a server's deadline-based admission does not refuse a large
batch that a 50 ms SLO would; on a one-request-per-batch server each such request runs alone.

The bookkeeping (`ScoreSheet`) checks that every row was scored exactly once, by a finite
number, before any AUC is computed from it.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from recaccel.data.dataset import FeatureBatch, Split
from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME
from recaccel.errors import RecaccelError
from recaccel.train.metrics import evaluate

HEADER_LENGTH = "Inference-Header-Content-Length"
CHUNK_ROWS = 1000
TIMEOUT_US = 60_000_000  # the OIP timeout parameter is in microseconds (as Triton's)
HTTP_TIMEOUT_S = 120.0
# OIP datatypes the bench sends and reads, little-endian as the binary extension specifies.
DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
}


class ServedAccuracyError(RecaccelError):
    """A server's answers cannot give an AUC: an error status, a malformed body, rows missing."""


class ScoreSheet:
    """The scores of `rows` rows, filled in chunks; each row exactly once."""

    def __init__(self, rows: int) -> None:
        if rows < 1:
            raise ServedAccuracyError("no rows to score", "score a split with rows")
        self._scores = np.full(rows, np.nan, dtype=np.float64)
        self._filled = np.zeros(rows, dtype=bool)

    def record(self, start: int, scores: np.ndarray) -> None:
        """Scores for rows start, start + 1, ...; refused if any is out of range, already
        scored, or not a finite number."""
        scores = np.asarray(scores, dtype=np.float64)
        stop = start + len(scores)
        if scores.ndim != 1 or start < 0 or stop > len(self._scores):
            raise ServedAccuracyError(
                f"scores of shape {list(scores.shape)} at row {start} do not fit "
                f"{len(self._scores)} rows"
            )
        if self._filled[start:stop].any():
            first = start + int(np.argmax(self._filled[start:stop]))
            raise ServedAccuracyError(f"row {first} was scored twice")
        if not np.isfinite(scores).all():
            raise ServedAccuracyError(f"a score in rows {start}..{stop - 1} is not finite")
        self._scores[start:stop] = scores
        self._filled[start:stop] = True

    @property
    def missing(self) -> int:
        return int((~self._filled).sum())

    def scores(self) -> np.ndarray:
        """(rows,) float64 every row's score; refused while any row is missing."""
        if self.missing:
            raise ServedAccuracyError(f"{self.missing} of {len(self._scores)} rows not scored")
        return self._scores.copy()


def chunks(rows: int, size: int) -> list[slice]:
    if size < 1:
        raise ServedAccuracyError(f"chunk size {size} < 1")
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def infer_body(
    batch: FeatureBatch, inputs: list[dict[str, Any]], request_id: str
) -> tuple[bytes, int]:
    """An OIP request with every input as binary tensor data, in the order of the model's
    metadata (`inputs`: its [{"name", "datatype", "shape"}]), asking for binary scores.

    Returns the body and the length of its JSON header (the Inference-Header-Content-Length).
    """
    tensors = dict(zip(INPUT_NAMES, batch.as_tuple(), strict=True))
    header: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for spec in inputs:
        name, datatype = spec["name"], spec["datatype"]
        if name not in tensors or datatype not in DTYPES:
            raise ServedAccuracyError(
                f"the model wants input {name!r} as {datatype}; the bench sends "
                f"{', '.join(INPUT_NAMES)} as {', '.join(DTYPES)}"
            )
        array = np.ascontiguousarray(tensors[name].numpy(), dtype=DTYPES[datatype])
        header.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": array.nbytes},
            }
        )
        blobs.append(array.tobytes())
    head = orjson.dumps(
        {
            "id": request_id,
            "inputs": header,
            "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
            "parameters": {"timeout": TIMEOUT_US},
        }
    )
    return head + b"".join(blobs), len(head)


def parse_scores(body: bytes, header_length: str | None, rows: int) -> np.ndarray:
    """The `score` output of an OIP response, binary or JSON, as (rows,) float64."""
    try:
        split = len(body) if header_length is None else int(header_length)
        answer = orjson.loads(body[:split])
        offset = split
        for output in answer["outputs"]:
            dtype = DTYPES[output["datatype"]]
            size = output.get("parameters", {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(body[offset : offset + int(size)], dtype=dtype)
                offset += int(size)
            else:
                array = np.asarray(output["data"], dtype=dtype)
            if output["name"] == OUTPUT_NAME:
                scores: np.ndarray = array.astype(np.float64).ravel()
                break
        else:
            raise KeyError(OUTPUT_NAME)
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as error:
        raise ServedAccuracyError(f"a malformed inference answer: {error!r}") from None
    if len(scores) != rows:
        raise ServedAccuracyError(f"{len(scores)} scores for {rows} rows")
    return scores


@dataclass(frozen=True)
class ServedAccuracy:
    model: str
    rows: int
    auc: float
    requests: int
    seconds: float
    scores: np.ndarray  # (rows,) what the server returned, for paired comparisons


def _request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str | None]:
    connection.request(method, path, body, headers or {})
    response = connection.getresponse()
    return response.status, response.read(), response.getheader(HEADER_LENGTH)


def served_accuracy(
    url: str, model: str, split: Split, chunk_rows: int = CHUNK_ROWS
) -> ServedAccuracy:
    """Score every row of `split` through the server at `url` (module docstring)."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=HTTP_TIMEOUT_S
    )
    start = time.monotonic()
    try:
        status, body, _ = _request(connection, "GET", f"/v2/models/{model}")
        if status != 200:
            raise ServedAccuracyError(
                f"the server at {url} has no model {model!r} (HTTP {status}: {body[:200]!r})"
            )
        inputs = orjson.loads(body)["inputs"]
        sheet = ScoreSheet(len(split))
        parts = chunks(len(split), chunk_rows)
        for number, rows in enumerate(parts):
            payload, json_length = infer_body(split.features(rows), inputs, f"auc-{number}")
            headers = {HEADER_LENGTH: str(json_length), "Content-Type": "application/octet-stream"}
            status, answer, length = _request(
                connection, "POST", f"/v2/models/{model}/infer", payload, headers
            )
            if status != 200:
                raise ServedAccuracyError(
                    f"{model} at {url} answered rows {rows.start}..{rows.stop - 1} with HTTP "
                    f"{status}: {answer[:300]!r}"
                )
            sheet.record(rows.start, parse_scores(answer, length, rows.stop - rows.start))
    finally:
        connection.close()
    scores = sheet.scores()
    return ServedAccuracy(
        model=model,
        rows=len(split),
        auc=evaluate(split.label, scores).auc,
        requests=len(parts),
        seconds=time.monotonic() - start,
        scores=scores,
    )
