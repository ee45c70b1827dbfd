"""The Redis source's local cache (serve/row_cache.py): rows by id, a TTL, a size bound."""

from __future__ import annotations

import numpy as np

from recaccel.data.rows import Rows
from recaccel.serve.row_cache import RowCache

WIDTH = Rows(
    np.zeros((0, 2), np.float32), np.zeros((0, 1), np.int64), np.zeros((0, 1, 3), np.int64)
)


def rows_of(ids: list[int]) -> Rows:
    """Row i tells its id in every column, to see which row came back."""
    n = len(ids)
    tag = np.asarray(ids, dtype=np.int64)
    return Rows(
        np.repeat(tag[:, None], 2, axis=1).astype(np.float32),
        tag[:, None].copy(),
        np.repeat(tag[:, None, None], 3, axis=2).reshape(n, 1, 3),
    )


def test_rows_put_come_back_by_id_until_their_ttl_ends() -> None:
    cache = RowCache(WIDTH, capacity=10, ttl_s=5.0)
    cache.put([7, 3, 9], rows_of([7, 3, 9]), now=100.0)
    slots = cache.find([9, 4, 7], now=104.0)
    assert slots[1] == -1 and (slots[[0, 2]] >= 0).all()
    got = cache.take(slots[[0, 2]])
    np.testing.assert_array_equal(got.categorical[:, 0], [9, 7])
    np.testing.assert_array_equal(got.multi_hot[:, 0, :], [[9, 9, 9], [7, 7, 7]])
    assert (cache.find([9, 7, 3], now=105.0) == -1).all()  # expired together


def test_a_full_cache_reuses_the_oldest_written_slot_and_a_rewrite_keeps_its_own() -> None:
    cache = RowCache(WIDTH, capacity=3, ttl_s=60.0)
    cache.put([1, 2, 3], rows_of([1, 2, 3]), now=0.0)
    cache.put([2], rows_of([2]), now=1.0)  # written again: the same slot, nothing evicted
    assert len(cache) == 3
    cache.put([4], rows_of([4]), now=2.0)  # full: 1, the oldest written, goes
    assert cache.find([1], now=3.0)[0] == -1
    slots = cache.find([2, 3, 4], now=3.0)
    np.testing.assert_array_equal(cache.take(slots).categorical[:, 0], [2, 3, 4])
    assert len(cache) == 3


def test_growing_past_its_first_arrays_keeps_every_row() -> None:
    ids = list(range(5_000))
    cache = RowCache(WIDTH, capacity=10_000, ttl_s=60.0)
    for start in range(0, len(ids), 700):
        part = ids[start : start + 700]
        cache.put(part, rows_of(part), now=0.0)
    slots = cache.find(ids, now=1.0)
    assert (slots >= 0).all()
    np.testing.assert_array_equal(cache.take(slots).categorical[:, 0], ids)
