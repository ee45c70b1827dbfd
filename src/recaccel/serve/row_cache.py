"""Model rows by entity id, each kept for a TTL, at most `capacity` of them: the Redis
source's local cache (serve/redis_source.py), on the slot ring of recaccel/slot_cache.py."""

from __future__ import annotations

import numpy as np

from recaccel.data.rows import Rows
from recaccel.slot_cache import SlotCache


class RowCache:
    """Rows of `width` (an empty `Rows` giving each kind's row shape and dtype) by id."""

    def __init__(self, width: Rows, capacity: int, ttl_s: float) -> None:
        self._slots = SlotCache(width.as_tuple(), capacity, ttl_s)

    def __len__(self) -> int:
        return len(self._slots)

    def find(self, ids: list[int], now: float | None = None) -> np.ndarray:
        """Each id's slot, or -1 where it is not held or its TTL has ended."""
        return self._slots.find(ids, now)

    def take(self, slots: np.ndarray) -> Rows:
        """The rows at `slots` (all held), copied."""
        return Rows(*self._slots.take(slots))

    def put(self, ids: list[int], rows: Rows, now: float | None = None) -> None:
        """Hold row i for ids[i] until `now` + the TTL, in place of the oldest rows when full."""
        self._slots.put(ids, rows.as_tuple(), now)
