"""The cross-request cache of request parts (docs/reuse.md): a split twin's (K,) request part,
kept by the request-side columns it was computed from, so a user seen again within the TTL
skips the request half of the model.

    cache = PartCache(schema, PartCacheSettings(ttl_s=60, max_entries=100_000), width=K)
    part, counts = cache.parts(request_rows, compute)   # compute(rows) runs only on misses

A part is a pure function of the model's weights and those columns, so a hit is exact as long
as the weights are the ones it was computed with: a cache belongs to one executor, which holds
one artifact version; a hot swap loads new executors with empty caches, and the old ones go
with their executor. What a TTL bounds is the age of the *features*: a user whose request-side
features changed in the store sends new columns, a new key, and misses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from recaccel.data.schema import FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.slot_cache import SlotCache

RequestRows = tuple[np.ndarray, np.ndarray, np.ndarray]  # dense, categorical, multi-hot


@dataclass(frozen=True)
class PartCacheSettings:
    ttl_s: float  # a part is reused for this long after it was computed
    max_entries: int  # parts held at most, per executor (oldest written go first)

    def __post_init__(self) -> None:
        if not self.ttl_s > 0 or self.max_entries < 1:
            raise ConfigError(
                f"the request-part cache needs ttl_s > 0 and max_entries >= 1, got "
                f"{self.ttl_s} and {self.max_entries}",
                "e.g. ttl_s = 60, max_entries = 100000",
            )


@dataclass(frozen=True)
class CacheCounts:
    """What a cache did, over one batch or summed over many."""

    hits: int = 0  # requests whose part came from the cache
    misses: int = 0  # requests whose part was computed (expired ones included)
    expired: int = 0  # of the misses, those held past their TTL
    evicted: int = 0  # live parts dropped because the cache was full
    hit_age_s: float = 0.0  # summed age of the parts hit: / hits is the mean staleness

    def __add__(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


NO_COUNTS = CacheCounts()


class PartCache:
    """Request parts of width `width` by the bytes of their rows' request-side columns.

    Safe to share between threads (in-process lanes share an ONNX Runtime executor): lookups
    and writes hold a lock; computing the missing parts does not, so two threads missing the
    same user at once both compute it, and the second write wins with the same values.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        settings: PartCacheSettings,
        width: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._columns = tuple(list(c) for c in schema.columns_on_side(Side.REQUEST))
        like = (np.empty((0, width), np.float32),)
        self._slots = SlotCache(like, settings.max_entries, settings.ttl_s)
        self._clock = clock
        self._width = width
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def keys(self, rows: RequestRows) -> list[bytes]:
        """One key per row: its request-side columns' bytes (values, not just ids: a user whose
        features changed is a new key)."""
        sides = [np.ascontiguousarray(a[:, c]) for a, c in zip(rows, self._columns, strict=True)]
        return [b"".join(side[i].tobytes() for side in sides) for i in range(len(rows[0]))]

    def parts(
        self, rows: RequestRows, compute: Callable[[RequestRows], np.ndarray]
    ) -> tuple[np.ndarray, CacheCounts]:
        """The (R, width) request parts of R request rows, from the cache where held, else
        `compute`d (once per distinct key among the misses) and kept; and what it did."""
        keys = self.keys(rows)
        now = self._clock()
        parts = np.empty((len(keys), self._width), np.float32)
        age_s = 0.0
        with self._lock:  # each counter read around the one call that moves it
            expired = self._slots.expired
            slots = self._slots.find(keys, now)
            expired = self._slots.expired - expired
            hit = slots >= 0
            if hit.any():
                (parts[hit],) = self._slots.take(slots[hit])
                age_s = float(self._slots.age_s(slots[hit], now).sum())
        missing = np.flatnonzero(~hit)
        evicted = 0
        if len(missing):
            first: dict[bytes, int] = {}  # each distinct missing key's first row
            for i in missing:
                first.setdefault(keys[i], int(i))
            distinct = np.fromiter(first.values(), np.int64, len(first))
            request: RequestRows = (
                rows[0].take(distinct, axis=0),
                rows[1].take(distinct, axis=0),
                rows[2].take(distinct, axis=0),
            )
            computed = compute(request)
            where = {key: j for j, key in enumerate(first)}
            parts[missing] = computed[[where[keys[i]] for i in missing]]
            with self._lock:
                evicted = self._slots.evicted
                self._slots.put(list(first), (computed,), now)
                evicted = self._slots.evicted - evicted
        counts = CacheCounts(int(hit.sum()), len(missing), expired, evicted, age_s)
        return parts, counts
