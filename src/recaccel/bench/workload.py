"""The benchmark's requests: /v1/rank bodies built once, before the clock starts.

LoadGen's query sample library (QSL) hands the system under test sample *indexes*; what an
index stands for is ours to define. Here it is a whole rank request, serialised ahead of time,
so the client does no JSON work while it is being timed and every run with the same seed sends
the same bytes.

Request sizes. A production ranker rarely scores a fixed number of candidates: retrieval
returns a few dozen for one user and a thousand for another. The candidate counts follow a
lognormal with a given median and p99 (MLPerf's DLRM benchmark does the same with its
user-query sizes; the default here is median 100, p99 about 1,000). For a lognormal
exp(μ + σZ), the median is exp(μ) and the p99 is exp(μ + 2.326σ), so

    μ = ln(median),   σ = ln(p99 / median) / 2.326

where 2.326 is the standard normal's 99th percentile. Counts are rounded, at least 1, and at
most the catalogue's size, since a request's candidates are distinct items (the server refuses
duplicates). The cap bends the upper tail on a small catalogue: `sizes` holds the counts
actually sent, so a report states those, not the targets.

    workload = RankWorkload.build(user_ids, store.catalogue, n_samples=20_000, seed=0)
    workload.bodies[i]   # bytes for POST /v1/rank
    workload.stats()     # median, p90, p99, max of what is sent
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.serve.features import DEFAULT_MAX_CANDIDATES
from recaccel.serve.server import dataset_feature_source

Z_99 = 2.3263478740408408  # the standard normal's 99th percentile
DEFAULT_K = 10


def lognormal_sigma(median: float, p99: float) -> float:
    """σ of the lognormal whose median and 99th percentile are the given ones."""
    if not 0 < median <= p99:
        raise ConfigError(
            f"candidate counts need 0 < median <= p99, got median={median}, p99={p99}",
            "e.g. median=100, p99=1000",
        )
    return math.log(p99 / median) / Z_99


def candidate_counts(rng: np.random.Generator, n: int, median: float, p99: float) -> np.ndarray:
    """(n,) int64 lognormal counts with the given median and p99, rounded, at least 1 (the
    caller caps them)."""
    raw = rng.lognormal(mean=math.log(median), sigma=lognormal_sigma(median, p99), size=n)
    return np.maximum(np.rint(raw), 1).astype(np.int64)


@dataclass(frozen=True)
class SizeStats:
    """What the candidate counts sent actually were (targets bent by the cap)."""

    n_samples: int
    target_median: float
    target_p99: float
    cap: int
    median: float
    p90: float
    p99: float
    max: int
    capped: int  # samples whose drawn count exceeded the cap


@dataclass(frozen=True, eq=False)
class RankWorkload:
    """Prebuilt /v1/rank requests; sample i is (user_ids[i], candidates[i]) as bodies[i].

    Attributes:
        bodies: the request bodies, JSON bytes ready to POST.
        user_ids: (N,) int64 the user of each sample.
        candidates: each sample's (C_i,) int64 distinct candidate item ids, in the order sent.
        sizes: (N,) int64 C_i, the candidate count of each sample.
        seed, median, p99, cap, k: how it was built.
    """

    bodies: tuple[bytes, ...]
    user_ids: np.ndarray
    candidates: tuple[np.ndarray, ...]
    sizes: np.ndarray
    seed: int
    median: float
    p99: float
    cap: int
    k: int
    drawn_over_cap: int

    def __len__(self) -> int:
        return len(self.bodies)

    @classmethod
    def build(
        cls,
        user_ids: np.ndarray,
        catalogue: np.ndarray,
        n_samples: int,
        seed: int,
        median: float = 100,
        p99: float = 1000,
        *,
        k: int = DEFAULT_K,
        max_candidates: int | None = None,
    ) -> RankWorkload:
        """Draw `n_samples` requests: a user uniformly (with replacement) and that many
        candidates sampled without replacement from `catalogue`.

        Args:
            user_ids: (U,) the users a request may be for (known to the server's store).
            catalogue: (I,) the item ids the server can rank (`FeatureSource.catalogue`).
            n_samples: how many distinct requests LoadGen may choose among.
            seed: the one seed; same arguments and seed, same bytes.
            median, p99: the candidate-count lognormal's targets.
            k: top-k asked of the server.
            max_candidates: a lower cap than the catalogue's size (the server's
                `rank.max_candidates`, past which it answers 413).
        """
        users = np.asarray(user_ids, dtype=np.int64).ravel()
        items = np.asarray(catalogue, dtype=np.int64).ravel()
        if n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} < 1", "build at least one request")
        if len(users) == 0 or len(items) == 0:
            raise ConfigError(
                f"a workload needs users and items, got {len(users)} users and {len(items)} items",
                "build it from a dataset with both (movielens-100k)",
            )
        if len(np.unique(items)) != len(items):
            raise ConfigError("the catalogue repeats item ids", "pass each item id once")
        if k < 1:
            raise ConfigError(f"k={k} < 1", "ask for at least one item")
        cap = len(items) if max_candidates is None else min(len(items), max_candidates)
        if cap < 1:
            raise ConfigError(f"max_candidates={max_candidates} < 1", "allow at least 1")

        rng = np.random.default_rng(seed)
        drawn = candidate_counts(rng, n_samples, median, p99)
        sizes = np.minimum(drawn, cap)
        chosen_users = users[rng.integers(0, len(users), n_samples)]
        candidates = tuple(items[rng.choice(len(items), int(c), replace=False)] for c in sizes)
        bodies = tuple(
            orjson.dumps({"user_id": int(u), "candidates": c.tolist(), "k": k})
            for u, c in zip(chosen_users, candidates, strict=True)
        )
        for array in (chosen_users, sizes, *candidates):
            array.setflags(write=False)
        return cls(
            bodies=bodies,
            user_ids=chosen_users,
            candidates=candidates,
            sizes=sizes,
            seed=seed,
            median=median,
            p99=p99,
            cap=cap,
            k=k,
            drawn_over_cap=int(np.count_nonzero(drawn > cap)),
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        n_samples: int,
        seed: int,
        median: float = 100,
        p99: float = 1000,
        *,
        k: int = DEFAULT_K,
        max_candidates: int | None = None,
    ) -> RankWorkload:
        """`build` over every user and item of `dataset` as the server's feature source sees
        them (`dataset_feature_source`: ConfigError for a dataset that cannot rank)."""
        source = dataset_feature_source(dataset, DEFAULT_MAX_CANDIDATES)
        return cls.build(
            source.user_ids,
            source.catalogue,
            n_samples,
            seed,
            median,
            p99,
            k=k,
            max_candidates=max_candidates,
        )

    @classmethod
    def from_bodies(cls, bodies: Sequence[bytes], source: str = "the bodies") -> RankWorkload:
        """Requests given as /v1/rank bodies (JSON objects with `user_id` and `candidates`,
        optionally `k`), sent as they are: a captured request log, or a workload for a server
        whose users and items no dataset here knows. ConfigError names the first bad one."""
        users, candidates, ks = [], [], []
        for number, body in enumerate(bodies, 1):
            try:
                request = orjson.loads(body)
                users.append(int(request["user_id"]))
                candidates.append(np.asarray(request["candidates"], dtype=np.int64).ravel())
                ks.append(int(request.get("k", DEFAULT_K)))
            except (AttributeError, KeyError, TypeError, ValueError) as error:  # JSON's too
                raise ConfigError(
                    f"request {number} of {source} is not a /v1/rank body ({error!r})",
                    'one JSON object a line: {"user_id": 1, "candidates": [1, 2], "k": 10}',
                ) from None
        if not users:
            raise ConfigError(f"{source} hold no requests", "give at least one")
        sizes = np.array([len(c) for c in candidates], dtype=np.int64)
        for array in (*candidates, sizes):
            array.setflags(write=False)
        return cls(
            bodies=tuple(bodies),
            user_ids=np.array(users, dtype=np.int64),
            candidates=tuple(candidates),
            sizes=sizes,
            seed=-1,  # not drawn
            median=float(np.median(sizes)),
            p99=float(np.percentile(sizes, 99)),
            cap=int(sizes.max()),
            k=max(ks),
            drawn_over_cap=0,
        )

    def stats(self) -> SizeStats:
        """The candidate counts sent: what a report states beside the targets."""
        sizes = self.sizes
        return SizeStats(
            n_samples=len(sizes),
            target_median=self.median,
            target_p99=self.p99,
            cap=self.cap,
            median=float(np.median(sizes)),
            p90=float(np.percentile(sizes, 90)),
            p99=float(np.percentile(sizes, 99)),
            max=int(sizes.max()),
            capped=self.drawn_over_cap,
        )
