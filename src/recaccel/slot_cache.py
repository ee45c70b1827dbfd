"""Arrays by key, each kept for a TTL, at most `capacity` of them: the ring both of recaccel's
serving caches are built on (feature rows from Redis, serve/row_cache.py; request parts,
runtime/part_cache.py).

A ring of slots in a few arrays and a dict from key to slot: a batch's hits cost one dict
lookup per key and one gather per array; the oldest written slot is the next reused. Written by
hand because a general cache (cachetools' TTLCache, one object per key) cost a Python get per
candidate and three `np.stack`s per request: about 0.5 ms for 100 candidates on the 2-core AMD
EPYC, ten times the table source's whole lookup.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

import numpy as np

_FIRST_SLOTS = 1_024  # the arrays grow by doubling up to the capacity


class SlotCache:
    """Rows of a few arrays by key; `like` gives each array's row shape and dtype (any row
    count). Counts what it did: `expired` (found past its TTL) and `evicted` (a live entry
    overwritten because the ring was full)."""

    def __init__(self, like: Sequence[np.ndarray], capacity: int, ttl_s: float) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError(f"capacity must be >= 1 and ttl_s > 0, got {capacity}, {ttl_s}")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.expired = 0
        self.evicted = 0
        self._slot_of: dict[Hashable, int] = {}
        self._key_at: list[Hashable] = []
        self._expires = np.empty(0)
        self._arrays = tuple(np.empty((0, *a.shape[1:]), a.dtype) for a in like)
        self._next = 0  # the slot written next, once every slot is taken

    def __len__(self) -> int:
        return len(self._slot_of)

    def find(self, keys: Sequence[Hashable], now: float | None = None) -> np.ndarray:
        """Each key's slot, or -1 where it is not held or its TTL has ended."""
        now = time.monotonic() if now is None else now
        slot_of = self._slot_of
        slots = np.fromiter((slot_of.get(k, -1) for k in keys), np.int64, len(keys))
        held = slots >= 0
        if held.any():
            expired = held & (self._expires.take(np.where(held, slots, 0)) <= now)
            if expired.any():
                self.expired += int(expired.sum())
                slots[expired] = -1
        return slots

    def take(self, slots: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows at `slots` (all held), copied."""
        return tuple(a.take(slots, axis=0) for a in self._arrays)

    def age_s(self, slots: np.ndarray, now: float | None = None) -> np.ndarray:
        """How long ago the rows at `slots` (all held) were written."""
        now = time.monotonic() if now is None else now
        return now - (self._expires.take(slots) - self.ttl_s)

    def put(
        self, keys: Sequence[Hashable], arrays: Sequence[np.ndarray], now: float | None = None
    ) -> None:
        """Hold row i of each array for keys[i] until `now` + the TTL, in place of the oldest
        rows when full."""
        now = time.monotonic() if now is None else now
        slots = np.fromiter((self._slot_for(k, now) for k in keys), np.int64, len(keys))
        for mine, theirs in zip(self._arrays, arrays, strict=True):
            mine[slots] = theirs
        self._expires[slots] = now + self.ttl_s

    def _slot_for(self, key: Hashable, now: float) -> int:
        slot = self._slot_of.get(key)
        if slot is not None:
            return slot
        if len(self._key_at) < self.capacity:  # a free slot, growing the arrays if need be
            slot = len(self._key_at)
            if slot == len(self._expires):
                self._grow(min(self.capacity, max(_FIRST_SLOTS, 2 * slot)))
            self._key_at.append(key)
        else:  # full: the oldest written slot
            slot, self._next = self._next, (self._next + 1) % self.capacity
            old = self._key_at[slot]
            del self._slot_of[old]
            if self._expires[slot] > now:
                self.evicted += 1
            self._key_at[slot] = key
        self._slot_of[key] = slot
        return slot

    def _grow(self, slots: int) -> None:
        def grown(array: np.ndarray) -> np.ndarray:
            bigger = np.zeros((slots, *array.shape[1:]), array.dtype)
            bigger[: len(array)] = array
            return bigger

        self._arrays = tuple(grown(a) for a in self._arrays)
        self._expires = grown(self._expires)
