"""Client load for the lifecycle tests: threads sending one rank request after another, every
request's outcome kept (when it was sent, when answered, its status and body, or the error that
stood for an answer), and the count the docs' table reports: sent, answered, refused by
reason, lost.

A request is *lost* when it got no HTTP answer at all: a reset, a closed connection, a timeout.
A refusal (429, 503) is an answer that says why; an answer of any other status is neither and
is counted under its status.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from server_harness import Server

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset
from recaccel.serve.features import FeatureStore

CANDIDATES = list(range(1, 31))
RANK_BODY = {"user_id": 3, "candidates": CANDIDATES, "k": len(CANDIDATES)}
REFUSALS = (429, 503)


@dataclass(frozen=True)
class Outcome:
    sent_s: float  # time.monotonic() as the request was sent
    done_s: float  # as its answer (or its error) came
    status: int | None  # None: no HTTP answer (lost)
    body: dict[str, Any]
    error: str = ""

    @property
    def reason(self) -> str:
        """A refusal's rule ("draining", "server_overloaded", ...), from its body."""
        return str(self.body.get("reason", "")) if self.status in REFUSALS else ""


@dataclass(frozen=True)
class Tally:
    """What a test's clients saw, as the reliability table reports it."""

    sent: int
    answered: int  # 200
    refused: dict[str, int]  # "503 draining" -> count
    other: dict[int, int]  # any other status -> count
    lost: int

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Tally:
        outcomes = list(outcomes)
        refused = Counter(
            f"{o.status} {o.reason}".strip() for o in outcomes if o.status in REFUSALS
        )
        other = Counter(o.status for o in outcomes if o.status not in (None, 200, *REFUSALS))
        return cls(
            sent=len(outcomes),
            answered=sum(o.status == 200 for o in outcomes),
            refused=dict(refused),
            other={int(s): n for s, n in other.items() if s is not None},
            lost=sum(o.status is None for o in outcomes),
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "refused": self.refused,
            "other": self.other,
            "lost": self.lost,
        }


Report = Callable[[str, Tally], None]  # the report_requests fixture: report(event, tally)


def send(server: Server, body: dict[str, Any] | None = None, timeout: float = 60) -> Outcome:
    """One rank request, its outcome whatever happens."""
    sent = time.monotonic()
    try:
        status, raw = server.post("/v1/rank", body or RANK_BODY, timeout=timeout)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as error:
        return Outcome(sent, time.monotonic(), None, {}, repr(error))
    return Outcome(sent, time.monotonic(), status, json.loads(raw))


class Load:
    """`threads` clients sending rank requests one after another until stopped.

    `stop_on_503`: a client stops at its first 503, as a load balancer takes a draining
    replica out of rotation.
    """

    def __init__(
        self,
        server: Server,
        threads: int,
        body: dict[str, Any] | None = None,
        stop_on_503: bool = False,
    ) -> None:
        self.server, self.body = server, body or RANK_BODY
        self.stop_on_503 = stop_on_503
        self._outcomes: list[Outcome] = []
        self._waiting: dict[int, float] = {}  # client thread -> when its request was sent
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            with self._lock:
                self._waiting[me] = time.monotonic()
            outcome = send(self.server, self.body)
            with self._lock:
                del self._waiting[me]
                self._outcomes.append(outcome)
            if outcome.status == 503 and self.stop_on_503:
                return

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def waiting(self, for_s: float) -> int:
        """Requests sent at least `for_s` ago and not answered yet."""
        now = time.monotonic()
        with self._lock:
            return sum(now - sent >= for_s for sent in self._waiting.values())

    def count(self) -> int:
        with self._lock:
            return len(self._outcomes)

    def tally(self) -> Tally:
        return Tally.of(self.outcomes)


def reference_scores(
    artifact: Path, dataset: Dataset, body: dict[str, Any] = RANK_BODY
) -> dict[int, float]:
    """item id -> the score `artifact`'s model gives it for `body`, computed here with torch."""
    rows, _ = FeatureStore.from_dataset(dataset).rows(body["user_id"], body["candidates"])
    with torch.inference_mode():
        logits = load_artifact(artifact).model(*map(torch.from_numpy, rows.as_tuple()))
    scores = torch.sigmoid(logits).numpy()
    return dict(zip(body["candidates"], scores.tolist(), strict=True))


def scores_of(answer: dict[str, Any]) -> dict[int, float]:
    return {item["item_id"]: item["score"] for item in answer["items"]}


def matches(answer: dict[str, Any], reference: dict[int, float], atol: float = 1e-5) -> bool:
    """Whether every score in a rank answer is the reference model's own."""
    got = scores_of(answer)
    if got.keys() != reference.keys():
        return False
    keys = list(reference)
    expected = [reference[k] for k in keys]
    return bool(np.allclose([got[k] for k in keys], expected, atol=atol, rtol=0))
