"""The workload: candidate counts with the asked median and p99, within the catalogue, in
bodies the server parses, the same for the same seed."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from recaccel.bench.workload import RankWorkload, candidate_counts, lognormal_sigma
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError

USERS = np.arange(1, 944)
ITEMS = np.arange(1, 1683)  # MovieLens-100K's shape


@pytest.fixture(scope="module")
def big() -> RankWorkload:
    return RankWorkload.build(USERS, ITEMS, n_samples=20_000, seed=0)


def test_sizes_follow_the_lognormal_targets(big: RankWorkload) -> None:
    stats = big.stats()
    assert stats.n_samples == 20_000
    # A seeded draw of 20k: the median is within a few percent, the p99 within ~10%.
    assert stats.median == pytest.approx(100, rel=0.05)
    assert stats.p99 == pytest.approx(1000, rel=0.1)
    assert stats.max <= len(ITEMS)


def test_sigma_puts_the_p99_where_asked() -> None:
    rng = np.random.default_rng(1)
    counts = candidate_counts(rng, 50_000, median=20, p99=300)
    assert np.median(counts) == pytest.approx(20, rel=0.05)
    assert np.percentile(counts, 99) == pytest.approx(300, rel=0.1)
    assert lognormal_sigma(100, 100) == 0.0
    with pytest.raises(ConfigError, match="median <= p99"):
        lognormal_sigma(100, 10)


def test_the_cap_holds_and_is_counted() -> None:
    small = RankWorkload.build(USERS, np.arange(1, 61), n_samples=2_000, seed=3)
    assert small.sizes.max() == 60 and small.sizes.min() >= 1
    assert small.stats().capped > 0  # median 100 on 60 items: most draws hit the cap
    capped = RankWorkload.build(USERS, ITEMS, n_samples=2_000, seed=3, max_candidates=50)
    assert capped.sizes.max() == 50 and capped.cap == 50


def test_bodies_parse_to_what_was_drawn(big: RankWorkload) -> None:
    assert len(big) == len(big.bodies) == len(big.candidates) == len(big.user_ids)
    catalogue = set(ITEMS.tolist())
    for i in (0, 1, 17, 19_999):
        body = orjson.loads(big.bodies[i])
        assert set(body) == {"user_id", "candidates", "k"} and body["k"] == 10
        assert body["user_id"] == big.user_ids[i] and body["user_id"] in set(USERS.tolist())
        assert body["candidates"] == big.candidates[i].tolist()
        assert len(body["candidates"]) == big.sizes[i]
        assert len(set(body["candidates"])) == len(body["candidates"])  # no repeats
        assert set(body["candidates"]) <= catalogue


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = RankWorkload.build(USERS, ITEMS, n_samples=300, seed=7)
    b = RankWorkload.build(USERS, ITEMS, n_samples=300, seed=7)
    c = RankWorkload.build(USERS, ITEMS, n_samples=300, seed=8)
    assert a.bodies == b.bodies
    assert a.bodies != c.bodies


def test_from_dataset_uses_the_stores_users_and_items(tiny_dataset: Dataset) -> None:
    workload = RankWorkload.from_dataset(tiny_dataset, n_samples=50, seed=0, median=10, p99=40)
    assert tiny_dataset.encoding is not None
    assert set(workload.user_ids.tolist()) <= set(tiny_dataset.encoding.users.ids.tolist())
    assert workload.cap == len(tiny_dataset.encoding.items.ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"user_ids": np.array([], dtype=np.int64)}, "needs users and items"),
        ({"catalogue": np.array([1, 1, 2])}, "repeats"),
        ({"k": 0}, "k=0"),
        ({"max_candidates": 0}, "max_candidates"),
    ],
)
def test_bad_arguments_say_what_to_fix(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"user_ids": USERS, "catalogue": ITEMS, "n_samples": 10}
    arguments.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        RankWorkload.build(seed=0, **arguments)  # type: ignore[arg-type]
