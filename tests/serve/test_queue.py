"""A request cut into parts is answered once, when every part is, with its scores in row order;
a failed part fails the request once, and scores arriving after that are dropped."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recaccel.data.rows import Rows
from recaccel.serve.errors import RequestError
from recaccel.serve.plane.queue import Request, cut, deliver, fail


def _rows(n: int) -> Rows:
    return Rows(
        np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        np.arange(n * 3, dtype=np.int64).reshape(n, 3),
        np.zeros((n, 1, 2), dtype=np.int64),
    )


def _request(loop: asyncio.AbstractEventLoop, n: int) -> Request:
    return Request(_rows(n), arrival=0.0, deadline=1.0, future=loop.create_future())


@pytest.mark.parametrize(
    ("rows", "parts", "sizes"),
    [(10, 1, [10]), (10, 2, [5, 5]), (10, 3, [4, 4, 2]), (3, 4, [1, 1, 1])],
)
def test_parts_cover_the_rows_in_order(rows: int, parts: int, sizes: list[int]) -> None:
    loop = asyncio.new_event_loop()
    request = _request(loop, rows)
    cut_parts = cut(request, parts)
    assert [p.rows for p in cut_parts] == sizes
    assert [p.split for p in cut_parts] == [len(sizes) > 1] * len(sizes)
    assert request.parts_left == len(sizes)
    joined = np.concatenate([p.batch().dense for p in cut_parts])
    np.testing.assert_array_equal(joined, request.rows.dense)
    loop.close()


def test_a_split_request_is_answered_when_its_last_part_is() -> None:
    loop = asyncio.new_event_loop()
    request = _request(loop, 5)
    first, second = cut(request, 2)  # rows 0-2, 3-4
    deliver(second, np.array([0.4, 0.5], dtype=np.float32))
    assert not request.future.done()
    deliver(first, np.array([0.1, 0.2, 0.3], dtype=np.float32))
    expected = np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(request.future.result(), expected)
    loop.close()


def test_a_whole_request_gets_its_scores_as_they_come() -> None:
    loop = asyncio.new_event_loop()
    request = _request(loop, 2)
    [whole] = cut(request, 1)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    deliver(whole, scores)
    assert request.future.result() is scores
    loop.close()


def test_a_failed_part_fails_the_request_once_and_later_scores_are_dropped() -> None:
    loop = asyncio.new_event_loop()
    request = _request(loop, 4)
    _, second = cut(request, 2)
    assert fail(request, RequestError("worker died", status=503))
    assert not fail(request, RequestError("again"))  # answered already
    deliver(second, np.array([0.1, 0.2], dtype=np.float32))  # no error: dropped
    with pytest.raises(RequestError, match="worker died"):
        request.future.result()
    loop.close()
