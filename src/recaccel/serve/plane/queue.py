"""Queued requests and their futures: what the batcher takes from and answers to.

A request's rows wait in the queue as one `Part`, or, when the request is too large to meet
its SLO on one executor (batcher_policy.split_count), as several parts that run on several
executors at once. Each part carries a slice of its request; the request's future resolves
once every part has its scores, and fails as soon as one part fails (the others' scores are
then dropped). Every queued part is answered exactly once: with its scores, or with the error
that failed its batch.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np

from recaccel.data.rows import Rows
from recaccel.serve.errors import RequestError


@dataclass
class Request:
    """One caller's rows and the future that answers it with their scores."""

    rows: Rows
    arrival: float  # time.monotonic()
    deadline: float
    future: asyncio.Future[np.ndarray]
    priority: int = 0
    scores: np.ndarray | None = None  # filled part by part when split
    parts_left: int = 1


@dataclass
class Part:
    """Rows [start, stop) of a request, queued and batched as one unit."""

    request: Request
    start: int
    stop: int
    attempts: int = 0  # retries after the worker running it died

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def arrival(self) -> float:
        return self.request.arrival

    @property
    def deadline(self) -> float:
        return self.request.deadline

    @property
    def split(self) -> bool:
        """One of several parts of its request: it runs in a batch of its own."""
        return self.rows < len(self.request.rows)

    def batch(self) -> Rows:
        return self.request.rows if not self.split else self.request.rows[self.start : self.stop]


def cut(request: Request, parts: int) -> list[Part]:
    """`request` as `parts` parts of nearly equal size, in row order."""
    total = len(request.rows)
    size = math.ceil(total / parts)
    bounds = list(range(0, total, size))
    request.parts_left = len(bounds)
    if len(bounds) > 1:
        request.scores = np.empty(total, dtype=np.float32)
    return [Part(request, start, min(start + size, total)) for start in bounds]


def deliver(part: Part, scores: np.ndarray) -> None:
    """A part's scores: the whole answer, or its slice of it (the last slice answers)."""
    request = part.request
    if request.future.done():  # a sibling part failed it
        return
    if request.scores is None:
        request.future.set_result(scores)
        return
    request.scores[part.start : part.stop] = scores
    request.parts_left -= 1
    if request.parts_left == 0:
        request.future.set_result(request.scores)


def fail(request: Request, error: RequestError) -> bool:
    """Fail the request with `error`; False if it was already answered."""
    if request.future.done():
        return False
    request.future.set_exception(error)
    return True
